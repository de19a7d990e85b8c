"""`llmtap --help` and every subcommand's `--help` work; nothing prints a traceback."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest
from click.testing import CliRunner

from llmtap.cli import SUBCOMMANDS, main


def test_top_level_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


def test_version_matches_the_distribution() -> None:
    result = CliRunner().invoke(main, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == version("llmtap")


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert "No such command" in result.output


# llmtap suggests for its own (lazy) group; click's plain groups suggest from click 8.4 on.
NESTED_SUGGESTS = tuple(map(int, version("click").split(".")[:2])) >= (8, 4)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        (["srve"], "serve"),
        (["demoo"], "demo"),
        pytest.param(
            ["db", "stauts"], "status", marks=pytest.mark.skipif(not NESTED_SUGGESTS, reason="click<8.4")
        ),
        pytest.param(
            ["logs", "shwo"], "show", marks=pytest.mark.skipif(not NESTED_SUGGESTS, reason="click<8.4")
        ),
    ],
)
def test_a_mistyped_subcommand_gets_did_you_mean(typed: list[str], meant: str) -> None:
    result = CliRunner().invoke(main, typed)
    assert result.exit_code == 2
    assert f"Did you mean '{meant}'?" in result.output


def test_console_script_runs_without_importing_heavy_extras() -> None:
    """`llmtap --help` must not import chdb, grpc or openai (base install, fast start)."""
    code = (
        "import sys; from llmtap.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('chdb', 'grpc', 'openai', 'clickhouse_connect', 'grafana_foundation_sdk') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "HEAVY []" in out
