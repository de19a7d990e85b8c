"""The files serve and the CLI create hold prompts: only their owner may read them, and a symbolic link planted
where serve writes never gets its target written.

Tests run as root, which ignores permission bits: modes are checked with stat, not by reading as another user.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from collector_support import post, running_collector, settle, wait_written
from llmtap.collector.spool import Spool, SpoolError
from test_collector_durability import Serve
from test_collector_receivers import good_span, span_request

# An unclosed spool keeps its LOCK open: the tests after it could not take the spool.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"),
]

VICTIM = b"another user's file\n"


@pytest.fixture(autouse=True)
def common_umask() -> Iterator[None]:
    """The umask most users have (022): what serve creates is readable by others unless llmtap prevents it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def shared_entries(root: Path) -> list[str]:
    """Files and directories under ``root`` that group or others can access (links have no mode of their own)."""
    shared = []
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                shared.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(root)}")
    return shared


def plant_link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def victim(directory: Path, name: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(VICTIM)
    return path


def test_serve_keeps_the_store_spool_and_discovery_file_private(tmp_path):
    """The store, spool and discovery file are created under missing parents (like the default
    <user data dir>/llmtap/chdb): every directory is 0700 and every file 0600 once serve wrote spans."""
    data = tmp_path / "data" / "llmtap"
    serve = Serve(data)
    try:
        serve.send(["secret prompt"], trace_byte=7)
        assert serve.count(7) == (1, 1)
        assert (data / "chdb.serve.json").exists()
        running = shared_entries(tmp_path)
    finally:
        serve.terminate()
    assert running == []
    assert shared_entries(tmp_path) == []


def test_db_migrate_creates_a_private_store(tmp_path):
    store = tmp_path / "data" / "chdb"
    subprocess.run(
        [sys.executable, "-m", "llmtap", "db", "migrate", "--dsn", f"chdb://{store}"],
        check=True,
        capture_output=True,
    )
    assert any(store.iterdir())
    assert shared_entries(tmp_path) == []


def test_a_store_made_readable_by_others_is_tightened_and_said_once(tmp_path):
    store = tmp_path / "chdb"
    store.mkdir(mode=0o755)
    store.chmod(0o755)
    serve = Serve(tmp_path)
    _, stderr = serve.terminate()
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stderr.count("readable by other users") == 1, stderr


def test_serve_never_writes_through_a_link_planted_where_it_creates_files(tmp_path):
    """Links named like the checkpoint's temporary file, the discovery file's temporary files and the quarantine
    files (a damaged record is replayed, so serve quarantines it) all point at files outside: none changes."""
    outside = tmp_path / "outside"
    spool_dir = tmp_path / "chdb.spool"
    with closing(Spool(spool_dir)) as previous:
        previous.append("traces", b"\x0a\xff not an export request")  # seq 1: quarantined on replay
    links = {
        spool_dir / "checkpoint.slots.tmp": victim(outside, "checkpoint"),
        spool_dir / "quarantine" / f"{1:020d}-traces.pb": victim(outside, "quarantined-payload"),
        spool_dir / "quarantine" / f"{1:020d}-traces.error.txt": victim(outside, "quarantined-error"),
        tmp_path / "chdb.serve.tmp": victim(outside, "discovery-tmp"),
        tmp_path / "chdb.serve.json.tmp": victim(outside, "discovery-json-tmp"),
    }
    for link, target in links.items():
        plant_link(link, target)
    with running_collector(tmp_path) as collector:
        assert post(collector.http_url + "/v1/traces", span_request(good_span("kept")))[0] == 200
        wait_written(collector, "traces", 1)
        settle(collector)
        discovery_mode = (tmp_path / "chdb.serve.json").lstat().st_mode
    changed = [target.name for target in links.values() if target.read_bytes() != VICTIM]
    assert changed == []
    assert discovery_mode == stat.S_IFREG | 0o600
    quarantined = sorted((spool_dir / "quarantine").iterdir())
    assert [p.name for p in quarantined] == [f"{1:020d}-traces.error.txt", f"{1:020d}-traces.pb"]
    assert all(p.lstat().st_mode == stat.S_IFREG | 0o600 for p in quarantined)
    assert shared_entries(spool_dir) == []


def test_a_link_planted_as_the_next_spool_segment_is_replaced_not_appended_to(tmp_path):
    with closing(Spool(tmp_path / "spool")) as spool:
        spool.recover()
        target = victim(tmp_path / "outside", "segment")
        segment = plant_link(tmp_path / "spool" / f"segment-{1:020d}.wal", target)
        record = spool.append("traces", b"a prompt")
        assert target.read_bytes() == VICTIM
        assert segment.lstat().st_mode == stat.S_IFREG | 0o600
        assert spool.read(record) == b"a prompt"


def test_a_link_planted_as_a_spool_segment_is_refused_at_start(tmp_path):
    target = victim(tmp_path / "outside", "segment")
    plant_link(tmp_path / "spool" / f"segment-{1:020d}.wal", target)
    with closing(Spool(tmp_path / "spool")) as spool, pytest.raises(SpoolError, match="symbolic link"):
        spool.recover()
    assert target.read_bytes() == VICTIM


def test_a_link_planted_as_the_spool_lock_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    target = tmp_path / "outside" / "created-by-serve"
    plant_link(tmp_path / "spool" / "LOCK", target)
    with pytest.raises(SpoolError, match="symbolic link"):
        Spool(tmp_path / "spool")
    assert not target.exists()


def test_a_link_planted_as_the_quarantine_directory_gets_nothing_written_through_it(tmp_path):
    """quarantine/ is llmtap's own name inside the spool: a link there was planted, and the payloads (prompts)
    quarantined into it would land wherever it points."""
    outside = tmp_path / "outside"
    outside.mkdir()
    spool_dir = tmp_path / "chdb.spool"
    with closing(Spool(spool_dir)) as previous:
        previous.append("traces", b"\x0a\xff not an export request")  # seq 1: quarantined on replay
    plant_link(spool_dir / "quarantine", outside)
    with running_collector(tmp_path) as collector:
        settle(collector)
    assert list(outside.iterdir()) == []


def test_a_store_owned_by_another_user_is_read_and_left_as_it_is(tmp_path):
    """A group-shared store someone else owns: chmod fails for its readers (and is not theirs to decide), so
    `llmtap logs` leaves its mode alone rather than fail."""
    store = tmp_path / "chdb"
    dsn = f"chdb://{store}"
    subprocess.run(
        [sys.executable, "-m", "llmtap", "db", "migrate", "--dsn", dsn], check=True, capture_output=True
    )
    store.chmod(0o750)
    os.chown(store, 65534, 65534)
    result = subprocess.run(
        [sys.executable, "-m", "llmtap", "logs", "--dsn", dsn], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "readable by other users" not in result.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o750
