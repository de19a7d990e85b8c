"""`llmtap logs`, `stats`, `export` and `db`: options in, query layer, rich tables or JSON out.

Every command takes ``--clickhouse``/``--dsn`` (default ``$LLMTAP_DSN``, else the embedded store, reached
through ``llmtap serve`` while it runs) and the same call filters, turned into one
:class:`~llmtap.clickhouse.filters.CallFilter`; a filter that cannot mean anything is a usage error naming the
option, before any query runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from llmtap.clickhouse import queries, render
from llmtap.clickhouse.connection import StoreError, default_dsn, parse_dsn
from llmtap.clickhouse.export import FORMATS, chunks, export_calls, export_parquet
from llmtap.clickhouse.filters import LIST_FIELDS, STATUSES, CallFilter, FilterError
from llmtap.clickhouse.follow import follow_calls
from llmtap.clickhouse.migrations import MigrationError, status
from llmtap.clickhouse.prices import (
    PriceFileError,
    list_prices,
    load_prices,
    read_prices,
)
from llmtap.clickhouse.private_files import keep_new_files_private
from llmtap.clickhouse.retention import current_retention, set_retention
from llmtap.clickhouse.schema import bring_up_to_date
from llmtap.clickhouse.store import open_store, running_serve
from llmtap.clickhouse.timeparse import TIME_HELP, parse_duration, parse_time
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

F = TypeVar("F", bound=Callable[..., Any])
STATS_DEFAULT_SINCE = "24h"


def _console(err: bool = False) -> Console:
    # Piped output is not squeezed into 80 columns: tables stay one line per row for grep and less. COLUMNS, when
    # set, is the width either way (rich reads it).
    stream = sys.stderr if err else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=err, highlight=False, width=200 if piped else None)


# ---------------------------------------------------------------- shared options


def store_option(command: F) -> F:
    return click.option(
        "--clickhouse",
        "--dsn",
        "dsn",
        metavar="DSN",
        default=None,
        help="Store to query: http(s)://user:pass@host:8123/db or chdb:///path "
        "(default: $LLMTAP_DSN, else the embedded store).",
    )(command)


_FILTER_OPTIONS = [
    click.option("--since", metavar="TIME", help=f"Calls started at or after TIME: {TIME_HELP}."),
    click.option("--until", metavar="TIME", help="Calls started before TIME (same forms as --since)."),
    click.option(
        "--project", "-p", multiple=True, help="Project (service.namespace); repeat for any of several."
    ),
    click.option("--service", "-s", multiple=True, help="Service name; repeatable."),
    click.option(
        "--model", "-m", multiple=True, help="Model (the response model, else the requested one); repeatable."
    ),
    click.option("--provider", multiple=True, help="Provider, e.g. openai; repeatable."),
    click.option("--operation", multiple=True, help="Operation, e.g. chat, embeddings; repeatable."),
    click.option("--status", type=click.Choice(STATUSES), help="Only successful or only failed calls."),
    click.option("--error-type", multiple=True, help="error.type, e.g. RateLimitError; repeatable."),
    click.option("--user", multiple=True, help="user.id; repeatable."),
    click.option("--session", multiple=True, help="session.id; repeatable."),
    click.option("--trace", "trace_id", metavar="TRACE_ID", help="Calls of one trace (32 hex digits)."),
    click.option("--tag", multiple=True, help="Calls carrying this tag; repeat to require several."),
    click.option(
        "--attr", multiple=True, metavar="KEY[=VALUE]", help="Custom attribute equals VALUE (or just exists)."
    ),
    click.option(
        "--meta",
        multiple=True,
        metavar="KEY[=VALUE]",
        help="OpenAI metadata= entry equals VALUE (or exists).",
    ),
    click.option(
        "--search", metavar="TEXT", help="Case-insensitive text in the prompt, response or instructions."
    ),
    click.option(
        "--slower-than", metavar="DURATION", help="Only calls that took at least DURATION (500ms, 2s)."
    ),
]


def filter_options(command: F) -> F:
    for option in reversed(_FILTER_OPTIONS):
        command = option(command)
    return command


def build_filter(options: dict[str, Any], *, default_since: str | None = None) -> CallFilter:
    """The CallFilter for the parsed filter options; every bad value is a click.BadParameter naming its option."""
    now = datetime.now(timezone.utc)
    since_text = options.get("since") or (None if options.get("until") else default_since)
    try:
        fields: dict[str, Any] = {
            "since": _time(since_text, "--since", now),
            "until": _time(options.get("until"), "--until", now),
            "status": options.get("status"),
            "trace_id": _trace_id(options.get("trace_id")),
            "text": options.get("search"),
            "attributes": _pairs(options.get("attr", ()), "--attr"),
            "metadata": _pairs(options.get("meta", ()), "--meta"),
            "min_duration_ms": _duration_ms(options.get("slower_than")),
        }
        for name in LIST_FIELDS:
            fields[name] = tuple(options.get("tag" if name == "tags" else name, ()))
        return CallFilter(**fields)
    except FilterError as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None


def _time(text: str | None, option: str, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


def _duration_ms(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds() * 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--slower-than'") from None


def _trace_id(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) != 32 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise click.BadParameter(f"{text!r} is not a trace id (32 hex digits)", param_hint="'--trace'")
    return text.lower()


def _pairs(items: tuple[str, ...], option: str) -> dict[str, str | None]:
    pairs: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r} has no key: use KEY=VALUE or KEY", param_hint=f"'{option}'")
        pairs[key] = value if sep else None
    return pairs


def _period(flt: CallFilter) -> str:
    if flt.since and flt.until:
        return f"{render.when(flt.since)} to {render.when(flt.until)}"
    if flt.since:
        return f"since {render.when(flt.since)}"
    return f"until {render.when(flt.until)}" if flt.until else "all time"


def store_errors(command: F) -> F:
    """Turn store and query failures into one-line errors (exit 1) instead of tracebacks."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            return command(*args, **kwargs)
        except (StoreError, MigrationError, PriceFileError, ClickHouseError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _open(dsn: str | None, **options: Any) -> Any:
    """open_store, closed when the command ends (chDB allows one store per process: leave none open). Files
    created from then on (chDB's, an export's) hold prompts: they are the user's only."""
    keep_new_files_private()
    client = open_store(dsn, **options)
    click.get_current_context().call_on_close(client.close)
    return client


def _print_json(value: Any) -> None:
    click.echo(json.dumps(queries.to_jsonable(value), ensure_ascii=False))


# ---------------------------------------------------------------- logs


@click.group(invoke_without_command=True)
@store_option
@filter_options
@click.option(
    "--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Calls shown."
)
@click.option("--follow", "-f", is_flag=True, help="Keep running and print new calls as they arrive.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.pass_context
@store_errors
def logs(
    ctx: click.Context, dsn: str | None, limit: int, follow: bool, as_json: bool, **options: Any
) -> None:
    """Show recent LLM calls, filter them, follow new ones.

    Newest first, with time, model, latency, tokens, cost, status and id; the service and the start of the
    prompt too when the terminal is wide enough. `llmtap logs show ID` prints one call in full.
    """
    if ctx.invoked_subcommand:
        return
    flt = build_filter(options)
    if follow and flt.until:
        raise click.BadParameter("cannot be combined with --follow", param_hint="'--until'")
    client = _open(dsn)
    calls = queries.search_calls(client, flt, limit=limit)
    out = _console()
    if as_json:
        for call in reversed(calls) if follow else calls:
            _print_json(call)
    elif not follow:
        out.print(render.calls_table(calls) if calls else "no calls match")
    else:
        for call in reversed(calls):
            out.print(render.call_line(call, out.width))
    if not follow:
        return
    try:
        for fresh in follow_calls(client, flt, already_seen=calls):
            for call in fresh:
                _print_json(call) if as_json else out.print(render.call_line(call, out.width))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@logs.command("show")
@click.argument("call_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True, help="The call as one JSON object.")
@click.pass_context
@store_errors
def logs_show(ctx: click.Context, call_id: str, dsn: str | None, as_json: bool) -> None:
    """One call in full: prompt, response, attributes.

    ID is its span id, or a trace id for all the calls of the trace. The first 6 or more hex digits of either
    do when no other id starts with them.
    """
    # The group's options apply here too (`llmtap logs --dsn X show ID`); the subcommand's own win.
    group = ctx.parent.params if ctx.parent else {}
    dsn, as_json = dsn or group.get("dsn"), as_json or group.get("as_json", False)
    try:
        calls = queries.get_calls(_open(dsn), call_id)
    except queries.AmbiguousIdError as exc:
        raise click.BadParameter(render.ambiguous_id(exc), param_hint="'ID'") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'ID'") from None
    if not calls:
        raise click.ClickException(f"no call with id {call_id} (it may have expired under the retention)")
    out = _console()
    for index, call in enumerate(calls):
        if as_json:
            _print_json(call)
            continue
        if index:
            out.rule()
        out.print(render.call_detail(call))


# ---------------------------------------------------------------- stats


@click.command()
@store_option
@filter_options
@click.option("--by", type=click.Choice(list(queries.GROUPINGS)), default="model", show_default=True)
@click.option(
    "--latency", "latency_only", is_flag=True, help="Only the latency table by model (min/avg/p90/max)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Groups shown.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
@store_errors
def stats(dsn: str | None, by: str, latency_only: bool, limit: int, as_json: bool, **options: Any) -> None:
    """Aggregate calls, errors, latency, tokens and cost (default: the last 24 hours, by model)."""
    flt = build_filter(options, default_since=STATS_DEFAULT_SINCE)
    client = _open(dsn)
    if latency_only:
        rows = queries.latency_by_model(client, flt)
        if as_json:
            _print_json(
                [{"model": model, "calls": calls, "latency": latency} for model, calls, latency in rows]
            )
        else:
            _console().print(render.latency_table(rows, _period(flt)))
        return
    rows = queries.call_stats(client, flt, by=by, limit=limit)
    total = queries.total_stats(client, flt)
    if as_json:
        _print_json({"by": by, "since": flt.since, "until": flt.until, "groups": rows, "total": total})
    elif not total.calls:
        _console().print(f"no calls {_period(flt)}")
    else:
        _console().print(render.stats_tables(rows, total, by, _period(flt)))


# ---------------------------------------------------------------- export


@click.command()
@store_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="jsonl", show_default=True)
@click.option(
    "--output", "-o", default="-", metavar="FILE", help="Where to write (default: standard output)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr (default: when it is a terminal)."
)
@store_errors
def export(dsn: str | None, fmt: str, output: str, progress: bool | None, **options: Any) -> None:
    """Export calls to JSONL, CSV or Parquet, streaming (memory stays flat however many calls)."""
    flt = build_filter(options)
    if fmt == "parquet" and output == "-":
        raise click.BadParameter("Parquet needs a file: pass --output FILE.parquet", param_hint="'--output'")
    path = None if output == "-" else Path(output)
    if path and (path.is_dir() or not path.parent.exists()):
        raise click.BadParameter(
            f"{output} is a directory or its folder does not exist", param_hint="'--output'"
        )
    client = _open(dsn)
    err = _console(err=True)
    show = err.is_terminal if progress is None else progress
    pieces = chunks(client, flt)
    total = sum(count for _, count in pieces)
    with ExportProgress(err, show, total) as update:
        if fmt == "parquet":
            assert path is not None
            result = export_parquet(client, flt, path, progress=update, pieces=pieces)
        elif path is None:
            result = export_calls(client, flt, fmt, sys.stdout.buffer, progress=update, pieces=pieces)
        else:
            with open(path, "wb") as out:
                result = export_calls(client, flt, fmt, out, progress=update, pieces=pieces)
    where = "standard output" if path is None else str(path)
    err.print(f"exported {total:,} calls ({result.bytes / 1e6:.1f} MB) to {where}", style="dim")


class ExportProgress:
    """A rich progress bar on stderr, fed by export's (bytes, calls) callback."""

    def __init__(self, console: Console, enabled: bool, total: int) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("exporting"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} calls"),
            TimeElapsedColumn(), console=console, disable=not enabled or not total, transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task("export", total=total)

    def __enter__(self) -> Callable[[int, int], None]:
        self.progress.start()
        return self.update

    def update(self, written: int, calls: int) -> None:
        self.progress.update(self.task, completed=calls)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


# ---------------------------------------------------------------- db


@click.group()
def db() -> None:
    """Migrations, status, retention and prices of the ClickHouse store."""


@db.command("migrate")
@store_option
@store_errors
def db_migrate(dsn: str | None) -> None:
    """Create the tables/views that are missing and reload the bundled model prices."""
    client = _open(dsn, create_database=True, writable=True)
    report, prices = bring_up_to_date(client)
    click.echo(report.summary())
    for changed in report.changed_since_applied:
        click.echo(f"warning: {changed.path.name} changed after it was applied; it is not re-run", err=True)
    click.echo(f"loaded {prices} model prices")


@db.command("status")
@store_option
@click.option("--json", "as_json", is_flag=True)
@store_errors
def db_status(dsn: str | None, as_json: bool) -> None:
    """Which migrations are applied, how many calls and how much disk, how long data is kept."""
    client = _open(dsn)
    migrations = status(client)
    sizes = dict(
        (name, (rows, size))
        for name, rows, size in client.query(
            "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() "
            "AND active AND table IN ('otel_traces', 'llm_calls', 'llm_calls_1m') GROUP BY table"
        ).result_rows
    )
    retention = current_retention(client) if all(done for _, done in migrations) else None
    if as_json:
        _print_json({
            "migrations": [{"version": m.version, "name": m.name, "applied": done} for m, done in migrations],
            "tables": {name: {"rows": rows, "bytes_on_disk": size} for name, (rows, size) in sizes.items()},
            "retention": retention,
        })  # fmt: skip
        return
    out = _console()
    target = parse_dsn(dsn or default_dsn())
    via = " (through llmtap serve)" if target.is_chdb and running_serve(target.display) else ""
    out.print(f"store {target.display}{via}")
    for migration, done in migrations:
        out.print(f"{'applied' if done else 'PENDING'}  {migration.version:04d}_{migration.name}")
    if not all(done for _, done in migrations):
        out.print("run `llmtap db migrate` to apply the pending migrations", style="yellow")
    for name in ("otel_traces", "llm_calls", "llm_calls_1m"):
        rows, size = sizes.get(name, (0, 0))
        out.print(f"{name}: {rows:,} rows, {size / 1e6:.1f} MB on disk")
    if retention:
        out.print(render.retention_table(retention))


@db.command("retention")
@store_option
@click.option(
    "--content",
    "content",
    metavar="DAYS",
    help="Keep prompts/responses, raw spans and logs this long, e.g. 30d (default 30d).",
)
@click.option(
    "--calls",
    "calls",
    metavar="DAYS",
    help="Keep calls, rollups and metrics this long, e.g. 400d (default 400d).",
)
@store_errors
def db_retention(dsn: str | None, content: str | None, calls: str | None) -> None:
    """Show or change how long calls and their content are kept (ALTER … MODIFY TTL).

    Content expires first, so dashboards keep their history after the prompts are gone. The raw spans
    (otel_traces and its trace-id lookup) and the logs carry the prompts too, so they follow the content
    retention; the metrics follow the calls.
    """
    content_days, calls_days = _days(content, "--content"), _days(calls, "--calls")
    client = _open(dsn, writable=content_days is not None or calls_days is not None)
    if content_days is None and calls_days is None:
        _console().print(render.retention_table(current_retention(client)))
        return
    try:
        retention = set_retention(client, calls_days=calls_days, content_days=content_days)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--content'/'--calls'") from None
    _console().print(render.retention_table(retention))


def _days(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        span = parse_duration(text if not text.strip().isdigit() else text.strip() + "d")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
    days = span.total_seconds() / 86_400
    if days < 1 or days != int(days):
        raise click.BadParameter(
            f"{text!r} must be a whole number of days, at least 1 (e.g. 30d, 2w)", param_hint=f"'{option}'"
        )
    return int(days)


@db.command("prices")
@store_option
@click.option(
    "--load", "load_file", type=click.Path(dir_okay=False, path_type=Path), help="Load your own prices CSV."
)
@click.option("--model", "-m", help="Only this model.")
@store_errors
def db_prices(dsn: str | None, load_file: Path | None, model: str | None) -> None:
    """List model prices, or load yours (same columns as the bundled data/model_prices.csv).

    Your rows replace any you loaded before and win over llmtap's for the same model and date; cost is computed
    at query time, so past calls are re-costed at once.
    """
    if load_file is not None:
        try:
            prices = read_prices(load_file)
        except PriceFileError as exc:
            raise click.BadParameter(str(exc), param_hint="'--load'") from None
        loaded = load_prices(_open(dsn, writable=True), prices, source="user")
        click.echo(f"loaded {loaded} prices from {load_file}")
        return
    _console().print(render.prices_table(list_prices(_open(dsn), model)))
