"""`llmtap demo`: the whole pipeline on one machine, with no API key, no Docker and no network.

It starts ``llmtap serve`` on a fresh embedded store, the local OpenAI-compatible server, and the sample
application (``llmtap.examples.sample_app``) as two services under ``opentelemetry-instrument`` — separate
processes, exactly as a user runs their own app — then shows what was captured. It exits 0 only if every call
the app made was stored, so it doubles as an end-to-end check of the product.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

# The two services of the demo, sharing one project (service.namespace).
SERVICES = ("checkout-api", "support-bot")
PROJECT = "demo-shop"
STORE_WAIT_SECONDS = 30.0
# The empty passwords of .env.example that `docker compose up` refuses to start without.
COMPOSE_PASSWORDS = (
    "CLICKHOUSE_ADMIN_PASSWORD",
    "CLICKHOUSE_WRITER_PASSWORD",
    "CLICKHOUSE_READER_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)
COMPOSE_STEPS = (
    "cp .env.example .env",
    # -i.bak: GNU and BSD (macOS) sed alike.
    f'for v in {" ".join(COMPOSE_PASSWORDS)}; do sed -i.bak "s/^$v=\\$/$v=$(openssl rand -hex 16)/" .env; done',
    "rm .env.bak",
    "docker compose up -d",
)


@dataclass
class AppRun:
    """One sample-app process and what it reports."""

    service: str
    calls: int
    process: subprocess.Popen[str]
    report_path: Path

    def report(self) -> dict[str, int]:
        return json.loads(self.report_path.read_text())


@click.command()
@click.option(
    "--calls",
    default=60,
    show_default=True,
    type=click.IntRange(2, 100_000),
    help="Calls the sample app makes in all (split between two services).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the store and logs go [default: a fresh temporary directory].",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave serve and the fake OpenAI server running afterwards, until Ctrl-C.",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the sample app's mix of calls.")
def demo(calls: int, data_dir: Path | None, keep_running: bool, seed: int) -> None:
    """Run the whole pipeline locally with a sample app, no API key needed."""
    from rich.console import Console

    from llmtap.fake_openai import FakeOpenAIServer

    console = Console(highlight=False)
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="llmtap-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    dsn = f"chdb://{(data_dir / 'chdb').resolve()}"
    console.print(f"[bold]llmtap demo[/] — store {dsn}")
    with (
        _stopped_like_ctrl_c(signal.SIGTERM, signal.SIGHUP),
        _serve(dsn, data_dir, console) as serve_url,
        FakeOpenAIServer(latency_ms=15, ttfc_ms=20, chunk_delay_ms=3) as fake,
    ):
        console.print(f"  collector  {serve_url} (OTLP/HTTP)\n  fake LLM   {fake.base_url}")
        runs = _run_apps(calls, seed, serve_url, fake.base_url, data_dir, console)
        made = {run.service: run.report()["calls"] for run in runs}
        stored = _wait_until_stored(dsn, made, console)
        _show(dsn, console)
        _hints(dsn, console, keep_running)
        if keep_running:
            _wait_for_interrupt(console)
    missing = {service: made[service] - stored.get(service, 0) for service in made}
    if any(missing.values()):
        console.print(f"[red]not every call was stored:[/] made {made}, stored {stored}")
        raise SystemExit(1)
    console.print(f"[green]all {sum(made.values())} calls made were stored.[/]")


@contextlib.contextmanager
def _stopped_like_ctrl_c(*signals: signal.Signals) -> Iterator[None]:
    """Let ``timeout``, systemd, a container runtime or a closed terminal stop the demo as Ctrl-C does.

    By default these signals end Python without unwinding, and serve (in its own session, so a terminal's Ctrl-C
    reaches only the demo) would keep running and hold the store and its ports.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _serve(dsn: str, data_dir: Path, console: Any) -> Iterator[str]:
    """Run ``llmtap serve`` as its own process on free ports; yield its OTLP/HTTP URL."""
    from llmtap.collector.discovery import find_serve

    log_path = data_dir / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmtap", "serve", "--port", "0", "--grpc-port", "0", "--dsn", dsn,
             "--no-status", "--flush-interval", "0.2"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while (info := find_serve(dsn)) is None or info.pid != process.pid:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise click.ClickException(f"llmtap serve did not start; its log:\n{_tail(log_path)}")
                time.sleep(0.1)
            yield info.url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _run_apps(
    calls: int, seed: int, serve_url: str, openai_url: str, data_dir: Path, console: Any
) -> list[AppRun]:
    """Start the sample app once per service under ``opentelemetry-instrument``, with a progress display."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    launcher = _opentelemetry_instrument()
    shares = [calls // len(SERVICES) + (1 if i < calls % len(SERVICES) else 0) for i in range(len(SERVICES))]
    runs = []
    for index, (service, share) in enumerate(zip(SERVICES, shares, strict=True)):
        report = data_dir / f"{service}.report.json"
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": service,
            "OTEL_RESOURCE_ATTRIBUTES": f"service.namespace={PROJECT},deployment.environment.name=demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": serve_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OPENAI_BASE_URL": openai_url,
            "OPENAI_API_KEY": "sk-llmtap-demo",
            "SAMPLE_APP_CALLS": str(share),
            "SAMPLE_APP_SEED": str(seed + index),
            "SAMPLE_APP_REPORT": str(report),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            [launcher, sys.executable, "-m", "llmtap.examples.sample_app"],
            env=env, stdout=subprocess.PIPE, stderr=(data_dir / f"{service}.log").open("w"), text=True,
        )  # fmt: skip
        runs.append(AppRun(service, share, process, report))
    try:
        with Progress(
            TextColumn("  {task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        ) as progress:  # fmt: skip
            tasks = {run.service: progress.add_task(run.service, total=run.calls) for run in runs}
            for run in runs:
                _follow_progress(run, progress, tasks[run.service])
    except BaseException:  # Ctrl-C or a stop signal: the apps stop with the demo
        for run in runs:
            run.process.terminate()
        raise
    for run in runs:
        if run.process.wait() != 0 or not run.report_path.exists():
            log = data_dir / f"{run.service}.log"
            raise click.ClickException(f"the sample app ({run.service}) failed; its log:\n{_tail(log)}")
    return runs


def _follow_progress(run: AppRun, progress: Any, task: Any) -> None:
    """Advance the bar on each ``call i/N`` line the app prints (the apps run concurrently meanwhile)."""
    stdout: IO[str] = run.process.stdout  # type: ignore[assignment]
    for line in stdout:
        if line.startswith("call "):
            progress.update(task, completed=int(line.split()[1].split("/")[0]))


def _opentelemetry_instrument() -> str:
    """The ``opentelemetry-instrument`` launcher of this Python environment."""
    beside = Path(sys.executable).with_name("opentelemetry-instrument")
    found = str(beside) if beside.exists() else shutil.which("opentelemetry-instrument")
    if not found:
        raise click.ClickException("opentelemetry-instrument is not installed: pip install llmtap")
    return found


def _wait_until_stored(dsn: str, made: dict[str, int], console: Any) -> dict[str, int]:
    """Poll the store (through serve's query API) until every call made is a row of ``llm_calls``."""
    from llmtap.clickhouse.store import open_store

    client = open_store(dsn)
    stored: dict[str, int] = {}
    deadline = time.monotonic() + STORE_WAIT_SECONDS
    with console.status("waiting for the spans to be stored…"):
        while True:
            rows = client.query(
                "SELECT ServiceName, count() FROM llm_calls WHERE Project = {project:String} GROUP BY ServiceName",
                parameters={"project": PROJECT},
            ).result_rows
            stored = {service: int(count) for service, count in rows}
            if all(stored.get(s, 0) >= n for s, n in made.items()) or time.monotonic() > deadline:
                return stored
            time.sleep(0.2)


def _show(dsn: str, console: Any) -> None:
    """What was captured: stats by model and by service, the latency table, and the latest calls."""
    from llmtap.clickhouse import queries, render
    from llmtap.clickhouse.filters import CallFilter
    from llmtap.clickhouse.store import open_store

    client = open_store(dsn)
    flt = CallFilter(project=(PROJECT,))
    total = queries.total_stats(client, flt)
    for by in ("model", "service"):
        console.print()
        console.print(render.stats_tables(queries.call_stats(client, flt, by=by), total, by, "in this demo"))
    console.print()
    console.print(render.calls_table(queries.search_calls(client, flt, limit=10)))


def _hints(dsn: str, console: Any, keep_running: bool) -> None:
    store = f"--dsn {dsn}"
    console.print("\n[bold]Look further[/]")
    for command, what in (
        (f"llmtap logs {store}", "the latest calls (add --follow, --json, --user, --tag, --search …)"),
        (f"llmtap logs {store} show <id>", "one call in full: prompt, response, attributes"),
        (f"llmtap stats {store} --by user", "aggregates by model, service, user or day"),
        (f"llmtap export {store} --format parquet -o calls.parquet", "every call, streamed to a file"),
    ):
        console.print(f"  {command}", soft_wrap=True)
        console.print(f"      [dim]{what}[/]")
    for step in COMPOSE_STEPS:
        console.print(f"  {step}", soft_wrap=True, markup=False)
    console.print("      [dim]ClickHouse + Collector + Grafana, in a clone of the repository[/]")
    if not keep_running:
        console.print("  [dim](`llmtap demo --keep-running` keeps serve and the fake LLM up meanwhile)[/]")


def _wait_for_interrupt(console: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):  # entered first: a stop right after the line is caught too
        console.print("\nserve and the fake LLM keep running; press Ctrl-C to stop.")
        while True:
            time.sleep(3600)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
