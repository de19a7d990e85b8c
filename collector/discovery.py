"""How other local processes find a running `llmtap serve` that holds a chDB store, and query through it.

chDB lets one process open a data directory. While serve holds it, serve writes ``<store>.serve.json`` (mode
0600, next to the chDB directory) naming its query endpoint; :func:`find_serve` reads it back, checks the process
is alive, and :func:`query_serve` runs read-only SQL through serve's ``POST /api/query``
(see :mod:`llmtap.collector.query_api`). Light on purpose: standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtap.clickhouse.connection import parse_dsn
from llmtap.clickhouse.private_files import replace_private_file

# Requests to a serve on this machine; a proxy from the environment (HTTP_PROXY) must not receive them, or the token.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ServeInfo:
    """A running serve's address, as written in its discovery file."""

    pid: int
    url: str  # http://127.0.0.1:4318
    token: str | None
    dsn: str

    @property
    def query_url(self) -> str:
        return self.url.rstrip("/") + "/api/query"


class ServeQueryError(RuntimeError):
    """The query API answered with an error (the message is ClickHouse's or the API's)."""


def discovery_path(dsn: str) -> Path | None:
    """Where serve announces itself for a chDB DSN (None for server DSNs: those need no discovery)."""
    parsed = parse_dsn(dsn)
    if not parsed.is_chdb:
        return None
    store = Path(parsed.path).resolve()
    return store.with_name(store.name + ".serve.json")


def write_discovery(dsn: str, info: ServeInfo) -> Path | None:
    """Announce a running serve (called by serve itself)."""
    path = discovery_path(dsn)
    if path is None:
        return None
    data = {"pid": info.pid, "url": info.url, "token": info.token, "dsn": info.dsn}
    replace_private_file(path, json.dumps(data).encode())
    return path


def remove_discovery(dsn: str) -> None:
    path = discovery_path(dsn)
    if path is not None:
        path.unlink(missing_ok=True)


def find_serve(dsn: str) -> ServeInfo | None:
    """The serve holding this chDB store, if one is running (stale files of dead processes are ignored)."""
    path = discovery_path(dsn)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        info = ServeInfo(int(data["pid"]), str(data["url"]), data.get("token"), str(data["dsn"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(info.pid) else None


def query_serve(
    info: ServeInfo,
    query: str,
    parameters: dict[str, Any] | None = None,
    fmt: str = "JSONEachRow",
    settings: dict[str, Any] | None = None,
    timeout: float = 130.0,
) -> bytes:
    """Run a read-only query through serve; returns ClickHouse's output in ``fmt``."""
    body = json.dumps(
        {"query": query, "parameters": parameters or {}, "format": fmt, "settings": settings or {}}
    )
    request = urllib.request.Request(info.query_url, data=body.encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if info.token:
        request.add_header("Authorization", f"Bearer {info.token}")
    try:
        with LOCAL.open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise ServeQueryError(f"llmtap serve query API: {detail}") from None
    except urllib.error.URLError as exc:
        raise ServeQueryError(f"llmtap serve at {info.url} is not answering: {exc.reason}") from None


def query_rows(info: ServeInfo, query: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Convenience: the result as a list of dicts (JSONEachRow)."""
    output = query_serve(info, query, parameters, "JSONEachRow")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
