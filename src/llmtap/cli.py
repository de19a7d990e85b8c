"""The `llmtap` command line.

Subcommands live next to the code they drive (``llmtap.collector.cli``, ``llmtap.clickhouse.cli``, …) and are
imported only when invoked, so ``llmtap --help`` works on the light base install and stays fast.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

import click

from llmtap import __version__

# name -> "module:attribute" of a click command; the order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("llmtap.collector.cli:serve", "Run the embedded collector: OTLP in, ClickHouse rows out."),
    "demo": ("llmtap.demo:demo", "Run the whole pipeline locally with a sample app, no API key needed."),
    "logs": ("llmtap.clickhouse.cli:logs", "Show recent LLM calls, filter them, follow new ones."),
    "stats": ("llmtap.clickhouse.cli:stats", "Aggregate calls, errors, latency, tokens and cost."),
    "export": ("llmtap.clickhouse.cli:export", "Export calls to JSONL, CSV or Parquet."),
    "db": ("llmtap.clickhouse.cli:db", "Migrations, status and retention of the ClickHouse store."),
    "grafana": ("llmtap.grafana.cli:grafana", "Build the Grafana dashboards from code."),
    "fake-openai": ("llmtap.fake_openai.cli:fake_openai", "Run the local OpenAI-compatible test server."),
    "version": ("llmtap.cli:version", "Print the llmtap version."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        target, short_help = SUBCOMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            return _missing_extra(cmd_name, short_help, exc)
        command.short_help = command.short_help or short_help
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name in SUBCOMMANDS or name.startswith("-") or ctx.resilient_parsing:
            return super().resolve_command(ctx, args)
        # Click (8.4 and later) suggests from the commands a group holds, and a lazy group holds none.
        close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
        ctx.fail(f"No such command {name!r}." + (f" Did you mean {close[0]!r}?" if close else ""))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help text so `llmtap --help` imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in SUBCOMMANDS.items()])


def _missing_extra(name: str, short_help: str, exc: ImportError) -> click.Command:
    """A stand-in command that explains which extra to install instead of failing with a traceback."""
    advice = _unavailable_because(exc)

    @click.command(
        name,
        short_help=short_help,
        help=f"{short_help}\n\nUnavailable: {advice}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def unavailable() -> None:
        click.echo(f"llmtap {name}: {advice}", err=True)
        raise SystemExit(2)

    return unavailable


def _unavailable_because(exc: ImportError) -> str:
    """Why a subcommand cannot load: a missing extra, or a partial llmtap (one of our own modules is missing)."""
    if (exc.name or "").partition(".")[0] != "llmtap":
        return f"needs a dependency that is not installed ({exc}); install it with: pip install 'llmtap[all]'"
    here = Path(__file__).parent
    return (
        f"{exc}: the llmtap imported from {here} is not a whole install; a folder named llmtap in the working "
        "directory may hide the installed package: run from another directory"
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmtap")
def main() -> None:
    """llmtap records every LLM call your application makes and lets you query and chart them."""


@click.command()
def version() -> None:
    """Print the llmtap version."""
    click.echo(__version__)
