"""Files that hold prompts: readable by their owner only, and never written through a planted symbolic link.

The chDB store, serve's spool, its quarantine and its discovery file are all created through here. Directories
are 0700 and files 0600. A file is always created new (``O_CREAT|O_EXCL|O_NOFOLLOW``), after removing whatever
had its name (removing a link removes the link, not its target), so a local user who plants a link where serve
writes never gets the link's target written. Processes that open a chDB store call :func:`keep_new_files_private`
at their entry point: chDB creates its own files, on every insert and merge, under the process umask.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("llmtap.files")

_SHARED_BITS = 0o077  # group and other
# Windows has no O_NOFOLLOW (nor the links this guards against); it needs O_BINARY for bytes to stay bytes.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def keep_new_files_private() -> None:
    """Files this process creates from now on are the owner's only (umask 077). For CLI entry points that open
    a store, never for library code: the umask is process-wide."""
    os.umask(_SHARED_BITS)


def make_private_directory(path: Path, *, internal: bool = False) -> None:
    """Create ``path`` and its missing parents as 0700 (an existing directory is left as it is). An ``internal``
    directory, one llmtap names inside a user-chosen one (quarantine/), must not be a symbolic link: one there was
    planted, and what llmtap writes into it would land wherever it points. User-chosen paths may be links."""
    if not path.is_dir():
        make_private_directory(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    if internal and stat.S_ISLNK(path.lstat().st_mode):
        raise OSError(
            errno.ELOOP, "a symbolic link where llmtap keeps its own directory; remove it", str(path)
        )


def tighten_directory(path: Path) -> None:
    """Make an existing directory that group or others can enter 0700 (what is inside is then out of their reach
    too) and say so: it was created before llmtap kept its files private. Only the caller's own directory, and
    not on Windows: a store someone else owns (group-shared) is theirs to share and chmod would fail there;
    Windows reports group and other bits on every directory."""
    if os.name == "nt":
        return
    status = path.stat()
    if status.st_uid == os.geteuid() and status.st_mode & _SHARED_BITS:
        path.chmod(0o700)
        log.warning("%s was readable by other users; made it private to its owner (mode 0700)", path)


def create_private_file(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new, empty 0600 file at ``path`` as a file descriptor opened with ``flags``. Whatever had that name is
    removed first; should anything be put there meanwhile, this fails (FileExistsError) rather than open it."""
    path.unlink(missing_ok=True)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o600)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new 0600 file at ``path``, in place of whatever had that name. It is fsynced: a file
    renamed over another (a checkpoint) or one whose data is then deleted elsewhere (a quarantined request)
    must not come back empty after a power loss."""
    with os.fdopen(create_private_file(path), "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a 0600 temporary file renamed over it: a rename replaces a
    link at ``path`` itself, not its target), and durably: the directory is fsynced after the rename."""
    temporary = path.with_name(path.name + ".tmp")
    write_private_file(temporary, data)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make the names in ``path`` durable: a file created or renamed there survives a power loss only once its
    directory is fsynced too (its data alone is not enough). Not on Windows, which cannot open a directory and
    journals names itself; a file system that cannot fsync a directory (EINVAL) is left as it is."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def open_no_follow(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that refuses a symbolic link at ``path`` and creates files as 0600."""
    try:
        return os.open(path, flags | _NOFOLLOW | _BINARY, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(
            exc.errno, "a symbolic link where llmtap keeps its own files; remove it", path
        ) from None
