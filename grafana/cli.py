"""`llmtap grafana`: generate the dashboards and alert rules, check them, list them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from llmtap.grafana import alerts, build, validate


@click.group("grafana")
def grafana() -> None:
    """Dashboards and alert rules as code, provisioned into Grafana by docker-compose.yml."""


@grafana.command("build")
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 when a committed file differs from the code."
)
@click.option(
    "--validate/--no-validate",
    "validate_queries",
    default=True,
    show_default=True,
    help="Run every query on ClickHouse first; a broken query fails the build.",
)
@click.option(
    "--dsn",
    default=None,
    metavar="DSN",
    help="ClickHouse to validate against (default: a scratch chDB with the migrations applied).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=build.PACKAGE_DIR,
    show_default="the grafana/ folder",
    help="Folder holding dashboards/ and provisioning/.",
)
def build_command(check: bool, validate_queries: bool, dsn: str | None, output: Path) -> None:
    """Generate grafana/dashboards/*.json and the alert provisioning file from the Python definitions."""
    if validate_queries:
        problems = _validate(dsn)
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        if problems:
            raise SystemExit(
                f"{len(problems)} broken quer{'y' if len(problems) == 1 else 'ies'}; nothing written"
            )
        click.echo("all dashboard, variable and alert queries run on ClickHouse", err=True)
    if check:
        stale = build.stale(output)
        for path in stale:
            click.echo(f"out of date: {path}", err=True)
        if stale:
            raise SystemExit("generated Grafana files differ from the code: run `llmtap grafana build`")
        click.echo("generated Grafana files are up to date")
        return
    touched = build.write(output)
    click.echo("\n".join(f"wrote {path}" for path in touched) or "nothing changed")


def _validate(dsn: str | None) -> list[validate.Problem]:
    try:
        from llmtap.clickhouse.connection import connect
        from llmtap.clickhouse.migrations import migrate
    except ImportError as exc:  # pragma: no cover - the server extra is part of dev installs
        raise click.ClickException(
            f"{exc}: validating queries needs `pip install 'llmtap[server]'` (or --no-validate)"
        ) from exc
    documents = [build.dashboard_json(make()) for make in build.DASHBOARDS]
    with tempfile.TemporaryDirectory(prefix="llmtap-grafana-") as scratch:
        client = connect(dsn or f"chdb://{scratch}/chdb", create_database=dsn is None)
        try:
            if dsn is None:
                migrate(client)
            return validate.check(client, documents, alerts.provisioning())
        finally:
            client.close()


@grafana.command("list")
def list_command() -> None:
    """The dashboards (uid, title, panels) and the alert rules."""
    for make in build.DASHBOARDS:
        document = build.dashboard_json(make())
        panels = [p for p in document["panels"] if p["type"] != "row"]
        click.echo(f"{document['uid']:<18} {document['title']:<22} {len(panels)} panels")
    for rule in alerts.RULES:
        click.echo(f"{rule.uid:<28} alert: {rule.title}")
