"""`llmtap serve`: the embedded collector on this machine (OTLP in on :4318/:4317, ClickHouse rows out)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click
from llmtap.clickhouse.connection import StoreError, default_dsn, parse_dsn
from llmtap.clickhouse.private_files import keep_new_files_private
from llmtap.collector.app import Collector, ConfigError, ServeConfig
from llmtap.collector.pipeline import Limits
from llmtap.collector.spool import SpoolError

_MB = 1 << 20


@click.command("serve")
@click.option(
    "--host",
    envvar="LLMTAP_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Non-loopback addresses need --allow-remote.",
)
@click.option(
    "--port",
    envvar="LLMTAP_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=4318,
    show_default=True,
    help="OTLP/HTTP port (also /health, /metrics and /api/query); 0 picks a free one.",
)
@click.option(
    "--grpc-port",
    envvar="LLMTAP_GRPC_PORT",
    show_envvar=True,
    type=click.IntRange(-1, 65535),
    default=4317,
    show_default=True,
    help="OTLP/gRPC port; 0 picks a free one, -1 disables gRPC.",
)
@click.option(
    "--dsn",
    envvar="LLMTAP_DSN",
    show_envvar=True,
    default=None,
    help="Store: chdb:///path (embedded, default under the user data dir) or http(s)://user:pass@host:port/db.",
)
@click.option(
    "--allow-remote",
    envvar="LLMTAP_ALLOW_REMOTE",
    show_envvar=True,
    is_flag=True,
    help="Allow listening on a non-loopback address (use with --token).",
)
@click.option(
    "--token",
    envvar="LLMTAP_TOKEN",
    show_envvar=True,
    default=None,
    help="Require `Authorization: Bearer <token>` (HTTP) / `authorization` metadata (gRPC).",
)
@click.option(
    "--spool-dir",
    envvar="LLMTAP_SPOOL_DIR",
    show_envvar=True,
    type=click.Path(path_type=Path),
    default=None,
    help="Write-ahead spool directory [default: next to the chDB store, or under the user data dir].",
)
@click.option(
    "--max-body-mb",
    envvar="LLMTAP_MAX_BODY_MB",
    show_envvar=True,
    type=click.IntRange(1, 1024),
    default=20,
    show_default=True,
    help="Largest request body accepted (compressed and decompressed); larger gets 413.",
)
@click.option(
    "--memory-buffer-mb",
    envvar="LLMTAP_MEMORY_BUFFER_MB",
    show_envvar=True,
    type=click.IntRange(1, 65536),
    default=64,
    show_default=True,
    help="Queued request bytes kept in memory; beyond it they are read back from the spool.",
)
@click.option(
    "--spool-max-mb",
    envvar="LLMTAP_SPOOL_MAX_MB",
    show_envvar=True,
    type=click.IntRange(1, 1 << 20),
    default=1024,
    show_default=True,
    help="Unwritten data the spool may hold; beyond it requests get 429/503 to retry.",
)
@click.option(
    "--batch-rows",
    envvar="LLMTAP_BATCH_ROWS",
    show_envvar=True,
    type=click.IntRange(1, 1_000_000),
    default=Limits.batch_rows,
    show_default=True,
    help="Rows per ClickHouse insert at most.",
)
@click.option(
    "--flush-interval",
    envvar="LLMTAP_FLUSH_INTERVAL",
    show_envvar=True,
    type=click.FloatRange(0.01, 60),
    default=1.0,
    show_default=True,
    help="Seconds a row may wait for its batch to fill.",
)
@click.option(
    "--workers",
    envvar="LLMTAP_WORKERS",
    show_envvar=True,
    type=click.IntRange(-1, 64),
    default=None,
    help="Processes converting spans to rows while the previous batch is inserted [default: CPU count - 2, at "
    "most 4]; 0 = one thread in serve's process; -1 = no overlap (least memory).",
)
@click.option(
    "--query-api/--no-query-api",
    envvar="LLMTAP_QUERY_API",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Serve read-only SQL on POST /api/query (loopback clients only unless --token).",
)
@click.option(
    "--status/--no-status",
    "show_status",
    default=True,
    show_default=True,
    help="Show the live status line on the console.",
)
@click.option(
    "--log-level",
    envvar="LLMTAP_LOG_LEVEL",
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str, port: int, grpc_port: int, dsn: str | None, allow_remote: bool, token: str | None,
    spool_dir: Path | None, max_body_mb: int, memory_buffer_mb: int, spool_max_mb: int, batch_rows: int,
    flush_interval: float, workers: int | None, query_api: bool, show_status: bool, log_level: str,
) -> None:  # fmt: skip
    """Run the embedded collector: OTLP in (HTTP :4318, gRPC :4317), exporter-identical rows in ClickHouse.

    Every request answered 2xx/OK is on disk first (write-ahead spool), so it survives ClickHouse errors,
    restarts and kill -9. SIGINT/SIGTERM write what is queued and exit.
    """
    _configure_logging(log_level)
    config = ServeConfig(
        dsn=dsn or default_dsn(),
        host=host,
        port=port,
        grpc_port=grpc_port,
        allow_remote=allow_remote,
        token=token,
        spool_dir=spool_dir,
        limits=Limits(
            memory_bytes=memory_buffer_mb * _MB,
            spool_bytes=spool_max_mb * _MB,
            batch_rows=batch_rows,
            flush_seconds=flush_interval,
        ),
        max_body_bytes=max_body_mb * _MB,
        query_api=query_api,
    )
    if workers is not None:
        config.workers = workers
    keep_new_files_private()  # the spool, the discovery file and every file chDB creates hold prompts
    try:
        collector = Collector(config)
        collector.start()
    except (ConfigError, StoreError, SpoolError) as exc:
        raise click.ClickException(str(exc)) from None

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    grpc = f", OTLP/gRPC on {config.host}:{collector.grpc_port}" if collector.grpc_port else ""
    click.echo(
        f"llmtap serve: OTLP/HTTP on {collector.http_url}{grpc}; store {parse_dsn(config.dsn).display}; "
        f"{collector.migration_summary}; replayed {collector.replayed} spooled request(s)",
        err=True,
    )
    _show_status(collector, stop, show_status)
    click.echo("llmtap serve: stopping, writing queued data…", err=True)
    drained = collector.stop()
    click.echo(
        "llmtap serve: stopped"
        + ("" if drained else " (unwritten data stays in the spool for the next start)"),
        err=True,
    )


def _configure_logging(level: str) -> None:
    """Log to the console at ``level``, without urllib3's retry warnings below debug: a store that cannot be
    reached is reported by serve itself, in one line, naming the host and port. (The level goes on the logger
    that warns: clickhouse-connect sets the level of ``urllib3`` itself when it is imported.)"""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "debug":
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _show_status(collector: Collector, stop: threading.Event, enabled: bool) -> None:
    """Block until asked to stop, drawing the compact status line when the console is a terminal."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        while not stop.wait(0.5):
            pass
        return
    with Live(
        status_line(collector.health(identify=True)), console=console, refresh_per_second=2, transient=False
    ) as live:
        while not stop.wait(0.5):
            live.update(status_line(collector.health(identify=True)))


def status_line(health: dict[str, Any]) -> str:
    """One line: per signal received/written/queued/rejected, write latency, store state."""
    signals = health["signals"]
    parts = []
    for name, label in (("traces", "spans"), ("metrics", "points"), ("logs", "logs")):
        counts = signals[name]
        queued = counts["received"] - counts["written"] - counts["dropped"]
        text = f"{label} {_n(counts['received'])} in {_n(counts['written'])} written {_n(queued)} queued"
        if counts["rejected"]:
            text += f" {_n(counts['rejected'])} rejected"
        if counts["dropped"]:
            text += f" {_n(counts['dropped'])} dropped"
        parts.append(text)
    latency = health["write_latency_ms"]
    store = "store ok" if health["store_up"] else f"store DOWN ({health['last_error'][:60]})"
    refused = f" │ {health['requests_refused']} refused" if health["requests_refused"] else ""
    return (
        " │ ".join(parts)
        + f" │ write p50 {latency['p50']:.0f}ms p99 {latency['p99']:.0f}ms │ {store}{refused}"
    )


def _n(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return str(value)
