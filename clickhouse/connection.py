"""Open a ClickHouse client from a DSN: embedded chDB (`chdb:///path`) or a server (`http(s)://…`).

Everything that touches ClickHouse (serve, the CLI, the tests) goes through :func:`connect`, so one DSN string
decides the store and the rest of the code never cares which kind it is. Both kinds are clickhouse-connect
clients with the same query/insert API.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from llmtap.clickhouse.private_files import make_private_directory, tighten_directory

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

#: The database every llmtap table lives in, like the exporter's default `database: otel`.
DEFAULT_DATABASE = "otel"
DSN_ENV = "LLMTAP_DSN"
_SCHEMES = ("chdb", "http", "https")
_DEFAULT_PORTS = {"http": 8123, "https": 8443}
#: clickhouse-connect logs this bare warning right before raising the error that says what failed.
_DRIVER_WARNING = "Unexpected Http Driver Exception"
_DRIVER_LOGGERS = ("clickhouse_connect.driver._backend.http_sync", "clickhouse_connect.driver.httpclient")

# Windows has no flock: who holds a chDB store cannot be told beforehand, chDB's own error says it then.
try:
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]


class StoreError(RuntimeError):
    """The store named by a DSN cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ParsedDSN:
    """What a DSN names, without secrets in its string form."""

    scheme: str
    path: str  # chDB data directory ('' for a server)
    database: str
    display: str  # the DSN with any password masked, for messages and logs

    @property
    def is_chdb(self) -> bool:
        return self.scheme == "chdb"


def user_data_dir() -> Path:
    """The per-user data directory (XDG on Linux, Application Support on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def default_dsn() -> str:
    """`$LLMTAP_DSN`, else the embedded store `chdb://<user data dir>/llmtap/chdb`."""
    env = os.environ.get(DSN_ENV, "").strip()
    if env:
        return env
    return "chdb://" + (user_data_dir() / "llmtap" / "chdb").as_posix()


def parse_dsn(dsn: str) -> ParsedDSN:
    """Validate a DSN and say what it names; raises StoreError with the accepted forms when it is wrong."""
    parsed = urlparse(dsn.strip())
    scheme = parsed.scheme.lower()
    usage = (
        f"invalid DSN {_mask(dsn)!r}: expected chdb:///absolute/path (embedded) or "
        "http(s)://user:password@host:port/database (ClickHouse server)"
    )
    if scheme not in _SCHEMES:
        raise StoreError(usage)
    query = parse_qs(parsed.query)
    if scheme == "chdb":
        if parsed.netloc or not parsed.path or parsed.path == "/":
            raise StoreError(
                usage + " — a chDB DSN needs an absolute directory path, e.g. chdb:///var/lib/llmtap"
            )
        database = query.get("database", [DEFAULT_DATABASE])[0]
        return ParsedDSN("chdb", unquote(parsed.path), database, dsn.strip())
    if not parsed.hostname:
        raise StoreError(usage + " — the server DSN has no host")
    try:
        parsed.port  # noqa: B018 - validates the port number
    except ValueError as exc:
        raise StoreError(f"{usage} — {exc}") from None
    database = unquote(parsed.path.strip("/")) or query.get("database", [DEFAULT_DATABASE])[0]
    return ParsedDSN(scheme, "", database, _mask(dsn))


def connect(dsn: str, *, create_database: bool = False, **settings: Any) -> Client:
    """A clickhouse-connect client on the DSN's store whose current database is the DSN's (default `otel`).

    With ``create_database`` the database is created when missing (the migration runner does this); otherwise
    a missing database is left to fail on first query with ClickHouse's own message. Extra keyword arguments
    are passed to ``clickhouse_connect.get_client`` (e.g. ``settings=``, ``connect_timeout=``).
    """
    target = parse_dsn(dsn)
    client = _open(dsn, target, settings)
    try:
        exists = client.query(
            "SELECT count() FROM system.databases WHERE name = {db:String}",
            parameters={"db": target.database},
        ).result_rows[0][0]
        if not exists and create_database:
            client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(target.database)}")
            exists = 1
        if exists:
            client.database = target.database
    except Exception as exc:
        client.close()
        raise StoreError(f"cannot use the database {target.database!r} on {target.display}: {exc}") from exc
    return client


def _open(dsn: str, target: ParsedDSN, settings: dict[str, Any]) -> Client:
    try:
        import clickhouse_connect
    except ImportError as exc:  # the `server` extra is missing
        raise StoreError(f"{exc}; install the store dependencies with: pip install 'llmtap[server]'") from exc
    try:
        if target.is_chdb:
            _refuse_held_store(dsn, target.path)
            make_private_directory(Path(target.path))
            tighten_directory(Path(target.path))
            return clickhouse_connect.get_client(dsn=f"chdb://{target.path}", **settings)
        # Connect without a database: the DSN's may not exist yet (connect() switches to it afterwards).
        parsed = urlparse(dsn.strip())
        server_dsn = parsed._replace(path="/default").geturl()
        settings.setdefault("connect_timeout", 5)
        return clickhouse_connect.get_client(dsn=server_dsn, **settings)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot open the chDB store at {target.path}: {exc}") from exc
    except Exception as exc:
        if target.is_chdb and "already initialized with path" in str(exc):
            raise StoreError(
                f"cannot open the chDB store at {target.path}: this process already has another chDB store open "
                f"and chDB allows one per process ({exc})"
            ) from exc
        if target.is_chdb:
            raise StoreError(
                f"cannot open the chDB store at {target.path}: {exc}. Only one process can hold a chDB "
                "directory: if `llmtap serve` is running on it, query through serve (llmtap uses its local "
                "query API automatically) or stop it first."
            ) from exc
        unreachable = _socket_error(exc)
        if unreachable is not None:
            raise StoreError(
                f"cannot reach ClickHouse at {_server_address(dsn)}: {_unreachable_reason(unreachable)}"
            ) from exc
        raise StoreError(
            f"ClickHouse at {target.display} is not reachable or refused the login: {exc}"
        ) from exc


def refuse_held_store(dsn: str) -> None:
    """Raise StoreError naming who holds this chDB store when another process does (nothing for a server DSN).
    serve asks before it checks its ports: a second serve on one store, on the same ports, is told about the
    store, since other ports would only lead it there."""
    target = parse_dsn(dsn)
    if target.is_chdb:
        _refuse_held_store(dsn, target.path)


def _refuse_held_store(dsn: str, path: str) -> None:
    """Say who holds a chDB store before chDB tries to open it: chDB prints its lock failure to stderr itself
    and raises an error that does not say it. An open chDB keeps an flock on ``<store>/status``, its pid inside."""
    status = Path(path) / "status"
    pid = _status_pid(status)
    if pid == os.getpid() or not _is_locked(status):  # this process's own chDB is shared, not in the way
        return
    raise StoreError(_store_in_use(dsn, path, pid))


def _status_pid(status: Path) -> int | None:
    try:
        found = re.search(r"^PID: (\d+)", status.read_text(errors="replace"), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _is_locked(status: Path) -> bool:
    if fcntl is None:
        return False
    try:
        with open(status, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the file closes
    except BlockingIOError:
        return True
    except OSError:  # no status file: no chDB has opened the store yet
        return False
    return False


def _store_in_use(dsn: str, path: str, pid: int | None) -> str:
    """Who holds the store, in one line: the serve it announced (discovery file), else the pid chDB wrote."""
    from llmtap.clickhouse.store import running_serve

    serve = running_serve(dsn)
    if serve is not None:
        return (
            f"the store at {path} is in use by the llmtap serve at pid {serve.pid} on port "
            f"{urlparse(serve.url).port}: one store can have only one serve; send to that one ({serve.url}), "
            "stop it, or pass --dsn for another store"
        )
    holder = f"another process (pid {pid})" if pid else "another process"
    return (
        f"the store at {path} is in use by {holder}: chDB lets one process open a store at a time; "
        "stop that process, or pass --dsn for another store"
    )


class _DropDriverWarning(logging.Filter):
    """Passes every record of clickhouse-connect's loggers but the bare warning before a failed request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DRIVER_WARNING


# Keep clickhouse-connect's bare warning off the console: the error it raises next becomes one line.
for _name in _DRIVER_LOGGERS:
    logging.getLogger(_name).addFilter(_DropDriverWarning())


def _socket_error(exc: BaseException) -> OSError | None:
    """The socket error under clickhouse-connect's and urllib3's wrappers (refused, unresolvable, timed out)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _unreachable_reason(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"the name does not resolve ({error.strerror})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    return error.strerror or str(error)


def _server_address(dsn: str) -> str:
    """host:port of a server DSN, with the scheme's default port when it names none."""
    parsed = urlparse(dsn.strip())
    return host_port(parsed.hostname or "", parsed.port or _DEFAULT_PORTS[parsed.scheme.lower()])


def host_port(host: str, port: int) -> str:
    """``host:port`` as addresses and URLs write it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier the way ClickHouse expects (for database names from DSNs)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _mask(dsn: str) -> str:
    parsed = urlparse(dsn.strip())
    if parsed.password:
        netloc = parsed.netloc.replace(":" + parsed.password + "@", ":***@", 1)
        return parsed._replace(netloc=netloc).geturl()
    return dsn.strip()
