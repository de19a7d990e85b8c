"""`llmtap serve` assembled: store, migrations, spool, writer, HTTP and gRPC receivers, discovery, shutdown."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtap.clickhouse.connection import StoreError, connect, parse_dsn, user_data_dir
from llmtap.clickhouse.schema import bring_up_to_date
from llmtap.collector import discovery, native
from llmtap.collector.encode import EncoderPool
from llmtap.collector.grpc_server import start_grpc_server
from llmtap.collector.http_server import OTLPHTTPServer
from llmtap.collector.pipeline import Limits, Pipeline
from llmtap.collector.query_api import QueryAPI
from llmtap.collector.receiver import Receiver
from llmtap.collector.rows import TABLE_COLUMNS
from llmtap.collector.spool import Spool
from llmtap.collector.stats import Stats

log = logging.getLogger("llmtap.serve")


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
        self._http: OTLPHTTPServer | None = None
        self._grpc: Any = None
        self._query_api: QueryAPI | None = None
        self._pipeline: Pipeline | None = None
        self._http_thread: threading.Thread | None = None
        self.migration_summary = ""
        self._migrated = False
        # The writer and the query API may both reach a store that was down at start: one migrates.
        self._migrating = threading.Lock()

    def start(self) -> None:
        config = self.config
        spool = Spool(config.resolved_spool_dir())
        client = None
        try:
            client = connect(config.dsn, create_database=True)
            report, _ = bring_up_to_date(client)
            self.migration_summary = report.summary()
            self._migrated = True
        except StoreError as exc:
            if parse_dsn(config.dsn).is_chdb:
                spool.close()
                raise
            # A server that is down must not stop serve: requests are spooled and written once it is back.
            self.migration_summary = f"store unreachable, will retry ({exc})"
            self.stats.write_failed(str(exc), store_down=True)
        except Exception:
            spool.close()
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
            # The query API keeps the first client: holding it also keeps the chDB engine (and its lock) open.
            self._query_api = QueryAPI(self._connect, client)
        elif client is not None:
            client.close()
        receiver = Receiver(self._pipeline, self.stats, config.token)
        try:
            self._http = OTLPHTTPServer(
                (config.host, config.port), receiver, self._query_api, self.health, self.metrics_text,
                config.max_body_bytes, config.inflight_body_bytes,
            )  # fmt: skip
            self.http_port = self._http.server_address[1]
            if config.grpc_port >= 0:
                self._grpc, self.grpc_port = start_grpc_server(
                    receiver, config.host, config.grpc_port, config.max_body_bytes
                )
        except (OSError, RuntimeError) as exc:
            self.stop()
            raise ConfigError(f"cannot listen on {config.host}: {exc}") from exc
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="llmtap-http", daemon=True)
        self._http_thread.start()
        discovery.write_discovery(
            config.dsn,
            discovery.ServeInfo(os.getpid(), self.http_url, config.token, parse_dsn(config.dsn).display),
        )

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

    @property
    def http_url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://[{host}]:{self.http_port}" if ":" in host else f"http://{host}:{self.http_port}"

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop receiving, write everything accepted (up to ``timeout``), release the store. True if drained."""
        with contextlib.suppress(Exception):
            discovery.remove_discovery(self.config.dsn)
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(3)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        drained = self._pipeline.close(timeout) if self._pipeline is not None else True
        if self._query_api is not None:
            with contextlib.suppress(Exception):
                self._query_api.close()
        return drained

    def health(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        pipeline = self._pipeline
        snapshot["status"] = "ok"
        snapshot["spool"] = {
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
