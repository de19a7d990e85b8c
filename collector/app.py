"""`llmtap serve` assembled: store, migrations, spool, writer, HTTP and gRPC receivers, discovery, shutdown."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtap.clickhouse.connection import (
    StoreError,
    connect,
    host_port,
    parse_dsn,
    refuse_held_store,
    user_data_dir,
)
from llmtap.clickhouse.schema import bring_up_to_date
from llmtap.collector import discovery, native
from llmtap.collector.encode import EncoderPool
from llmtap.collector.grpc_server import start_grpc_server
from llmtap.collector.http_limits import HTTPLimits
from llmtap.collector.http_server import HTTPServer
from llmtap.collector.pipeline import Limits, Pipeline
from llmtap.collector.query_api import PROFILE, QueryAPI
from llmtap.collector.receiver import Receiver
from llmtap.collector.rows import TABLE_COLUMNS
from llmtap.collector.spool import Spool, SpoolError
from llmtap.collector.stats import Stats

log = logging.getLogger("llmtap.serve")
_HEALTH_BYTES = 64 << 10  # more than any serve's /health answer: a longer one is not a serve's
_STORE_SHOWN = 200  # characters of another serve's store in an error line


class ConfigError(ValueError):
    """A serve option that cannot work (e.g. a public address without --allow-remote)."""


@dataclass
class ServeConfig:
    """Everything `llmtap serve` can be told (flags and LLMTAP_* environment variables)."""

    dsn: str
    host: str = "127.0.0.1"
    port: int = 4318
    grpc_port: int = 4317  # 0 = any free port, -1 = no gRPC receiver
    allow_remote: bool = False
    token: str | None = None
    spool_dir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = 20 << 20
    inflight_body_bytes: int = 64 << 20  # request bodies held at once by the HTTP receiver
    # Read timeouts, minimum body rate and connection cap of the HTTP port.
    http: HTTPLimits = field(default_factory=HTTPLimits)
    query_api: bool = True
    # Encoder processes; 0 = one encoder thread in serve's process (best on two cores, measured: bench/ingest.py);
    # -1 = the writer converts each batch itself (no batch converted ahead: least memory).
    workers: int = field(default_factory=lambda: min(4, max(0, (os.cpu_count() or 1) - 2)))

    def check(self) -> None:
        """Refuse non-loopback binding unless it was asked for explicitly."""
        if not self.allow_remote and not _is_loopback_host(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host}: only loopback addresses are allowed by default. Pass "
                "--allow-remote (LLMTAP_ALLOW_REMOTE=1) to accept OTLP from other machines, ideally with --token."
            )

    def resolved_spool_dir(self) -> Path:
        if self.spool_dir is not None:
            return Path(self.spool_dir)
        parsed = parse_dsn(self.dsn)
        if parsed.is_chdb:
            store = Path(parsed.path)
            return store.with_name(store.name + ".spool")
        digest = hashlib.sha256(parsed.display.encode()).hexdigest()[:12]
        return user_data_dir() / "llmtap" / f"spool-{digest}"


class Collector:
    """A running serve. ``start()`` binds everything; ``stop()`` flushes and releases it."""

    def __init__(self, config: ServeConfig) -> None:
        config.check()
        self.config = config
        self.stats = Stats()
        self.http_port = 0
        self.grpc_port: int | None = None
        self.replayed = 0
        self._http: HTTPServer | None = None
        self._grpc: Any = None
        self._query_api: QueryAPI | None = None
        self._pipeline: Pipeline | None = None
        self.migration_summary = ""
        self._migrated = False
        # The writer and the query API may both reach a store that was down at start: one migrates.
        self._migrating = threading.Lock()

    def start(self) -> None:
        config = self.config
        # A store another serve holds, before its ports: the advice for a taken port would only lead there.
        refuse_held_store(config.dsn)
        self._check_ports_free()
        # The store before the spool: a store another process holds is reported as such, not as a busy spool.
        client = self._open_store()
        try:
            spool = Spool(config.resolved_spool_dir())
        except SpoolError:
            if client is not None:
                client.close()
            raise
        # Without a store to ask the column types of (a server that is down), batches convert in the writer.
        encoders = None
        if config.workers >= 0 and client is not None:
            types = _column_types(client)
            unsupported = _unwritable(types)
            if unsupported:  # a schema changed by hand: every batch takes the slower, careful path instead
                log.warning("columns the Native writer cannot write: %s", ", ".join(unsupported))
            else:
                encoders = EncoderPool(config.workers, types)
        self._pipeline = Pipeline(self._connect, spool, self.stats, config.limits, encoders)
        self.replayed = self._pipeline.start()
        if config.query_api:
            # The query API holds the first client: that keeps the chDB engine (and its lock) open.
            self._query_api = QueryAPI(self._query_session, parse_dsn(config.dsn).database, hold=client)
        elif client is not None:
            client.close()
        try:
            self._listen(Receiver(self._pipeline, self.stats, config.token))
        except ConfigError:
            self.stop()
            raise
        discovery.write_discovery(
            config.dsn,
            discovery.ServeInfo(os.getpid(), self.http_url, config.token, parse_dsn(config.dsn).display),
        )

    def _check_ports_free(self) -> None:
        """Refuse a taken port before opening the store: the receivers bind last, after migrations and replay."""
        for listener, port in self._ports():
            if port > 0:
                try:
                    _probe_port(self.config.host, port)
                except OSError as exc:
                    raise _cannot_listen(listener, self.config.host, port, exc) from exc

    def _ports(self) -> list[tuple[_Listener, int]]:
        grpc = [(_GRPC, self.config.grpc_port)] if self.config.grpc_port >= 0 else []
        return [(_HTTP, self.config.port), *grpc]

    def _open_store(self) -> Any:
        """A client on the store with the schema applied, or None for a server that is down: that must not stop
        serve, requests are spooled and written once it is back."""
        try:
            client = connect(self.config.dsn, create_database=True)
        except StoreError as exc:
            if parse_dsn(self.config.dsn).is_chdb:
                raise
            self.migration_summary = f"store unreachable, will retry ({exc})"
            self.stats.write_failed(str(exc), store_down=True)
            return None
        report, _ = bring_up_to_date(client)
        self.migration_summary = report.summary()
        self._migrated = True
        return client

    def _listen(self, receiver: Receiver) -> None:
        config = self.config
        try:
            self._http = http = HTTPServer(
                config.host, config.port, config.http, receiver=receiver, query_api=self._query_api,
                health=self.health, metrics_text=self.metrics_text, max_body_bytes=config.max_body_bytes,
                inflight_body_bytes=config.inflight_body_bytes,
            )  # fmt: skip
        except OSError as exc:
            raise _cannot_listen(_HTTP, config.host, config.port, exc) from exc
        self.http_port = http.port
        if config.grpc_port >= 0:
            # gRPC raises RuntimeError("Failed to bind…") without an errno: _check_ports_free said why, if it can.
            try:
                self._grpc, self.grpc_port = start_grpc_server(
                    receiver, config.host, config.grpc_port, config.max_body_bytes
                )
            except (OSError, RuntimeError) as exc:
                raise _cannot_listen(_GRPC, config.host, config.grpc_port, exc) from exc
        http.start()

    def _connect(self) -> Any:
        """A client on the store with the schema applied (the writer reconnects through this too)."""
        client = connect(self.config.dsn, create_database=True)
        with self._migrating:
            if self._migrated:
                return client
            try:
                bring_up_to_date(client)
            except Exception:
                client.close()
                raise
            self._migrated = True
        return client

    def _query_session(self) -> Any:
        """A client for the query API, with its read-only profile (the writer migrates the store)."""
        return connect(self.config.dsn, settings=dict(PROFILE))

    @property
    def http_url(self) -> str:
        return _http_url(self.config.host, self.http_port)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop receiving, write everything accepted (up to ``timeout``), release the store. True if drained."""
        with contextlib.suppress(Exception):
            discovery.remove_discovery(self.config.dsn)
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(3)
        if self._http is not None:
            self._http.stop()
        drained = self._pipeline.close(timeout) if self._pipeline is not None else True
        if self._query_api is not None:
            with contextlib.suppress(Exception):
                self._query_api.close()
        return drained

    def health(self, identify: bool = False) -> dict[str, Any]:
        """What serve is doing; with ``identify`` which serve it is too (pid, store, the store's last error in
        full), so that another serve that finds this port taken can say which serve holds it. Not by default: the
        store, and errors about it, may name a server's host and user, or a path in a home directory."""
        snapshot = self.stats.snapshot()
        pipeline = self._pipeline
        snapshot["status"] = "ok"
        if identify:
            snapshot["pid"] = os.getpid()
            snapshot["store"] = parse_dsn(self.config.dsn).display
        elif snapshot.get("last_error"):
            snapshot["last_error"] = "the store failed; serve's console, or /health on its machine, says why"
        writable = pipeline.spool.writable() if pipeline else True
        if not writable:
            snapshot["status"] = "spool not writable (disk full)"
        snapshot["spool"] = {
            "writable": writable,
            "pending_bytes": pipeline.spool.pending_bytes if pipeline else 0,
            "queued_requests": pipeline.queued_requests() if pipeline else 0,
            "limit_bytes": self.config.limits.spool_bytes,
        }
        return snapshot

    def metrics_text(self) -> str:
        pipeline = self._pipeline
        extra = {
            "llmtap_serve_spool_pending_bytes": pipeline.spool.pending_bytes if pipeline else 0,
            "llmtap_serve_queued_requests": pipeline.queued_requests() if pipeline else 0,
        }
        return self.stats.prometheus(extra)


@dataclass(frozen=True)
class _Listener:
    """One of serve's ports, named as the user knows it."""

    protocol: str
    option: str
    choices: str  # what else the option accepts


_HTTP = _Listener("OTLP/HTTP", "--port", "0 picks a free one")
_GRPC = _Listener("OTLP/gRPC", "--grpc-port", "0 picks a free one, -1 turns gRPC off")


def _probe_port(host: str, port: int) -> None:
    """Bind the port and let it go, as the receivers bind it: gRPC itself would only log why it cannot."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _cannot_listen(listener: _Listener, host: str, port: int, exc: Exception) -> ConfigError:
    """One line: the address, who holds the port when another serve answers on it, and the option to change."""
    code = getattr(exc, "errno", None)
    reason = f"port {port} is {_port_holder(host, port)}" if code == errno.EADDRINUSE else None
    reason = reason or getattr(exc, "strerror", None) or str(exc)
    if code in (errno.EADDRINUSE, errno.EACCES):
        reason += f"; pass {listener.option} to choose another ({listener.choices})"
    return ConfigError(f"cannot listen for {listener.protocol} on {host_port(host, port)}: {reason}")


def _port_holder(host: str, port: int) -> str:
    """Another serve answers /health with its pid and store; of any other program nothing can be told. Any
    program may answer there, so its answer gets into the one-line error only as a pid and as printable text."""
    try:
        with discovery.LOCAL.open(_http_url(host, port) + "/health", timeout=1) as response:
            health = json.loads(response.read(_HEALTH_BYTES))  # a longer answer is cut, so it is not JSON
        pid, store = _reported_pid(health["pid"]), _printable(health["store"], _STORE_SHOWN)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return "already in use"
    return f"in use by another llmtap serve (pid {pid}, store {store})"


def _reported_pid(value: Any) -> int:
    """A pid another program reported: a JSON integer a pid can be (not true, 1e300 or text), else ValueError."""
    if type(value) is not int or not 0 < value < 1 << 31:
        raise ValueError(f"not a pid: {value!r}")
    return value


def _printable(value: Any, limit: int) -> str:
    """Text another program reported, fit for a one-line message: without control and format characters
    (newlines, terminal escapes, bidi overrides) or line separators, cut to ``limit`` characters. TypeError or
    ValueError when it is not text or nothing printable is left."""
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    text = "".join(char for char in value if char.isprintable())
    if not text:
        raise ValueError("nothing printable")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _http_url(host: str, port: int) -> str:
    """The URL clients use for a listening address (a wildcard address is reached on loopback)."""
    return "http://" + host_port("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port)


def _unwritable(types: dict[str, dict[str, str]]) -> list[str]:
    """The columns serve writes whose type (as the store has it) the Native writer cannot write."""
    found = []
    for table, names in TABLE_COLUMNS.items():
        for name in names:
            type_ = types.get(table, {}).get(name, "missing")
            if not native.supports(type_):
                found.append(f"{table}.{name} {type_}")
    return found


def _column_types(client: Any) -> dict[str, dict[str, str]]:
    """Every column's ClickHouse type for the tables serve writes (the encoder workers serialize to them)."""
    result = client.query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() AND has({t:Array(String)}, table)",
        parameters={"t": list(TABLE_COLUMNS)},
    )
    types: dict[str, dict[str, str]] = {}
    for table, name, type_ in result.result_rows:
        types.setdefault(table, {})[name] = type_
    return types


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
            )
        except (OSError, ValueError):
            return False
