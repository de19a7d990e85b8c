"""The benchmarks run and print figures (never judged on their timings: that is what they are for).

``bench/run_all.py --quick`` runs every benchmark in its smoke mode. The peers benchmark's quick mode compares
only the bare client and llmtap in this interpreter (building the peers' venvs takes minutes of pip); its
failure paths (a peer that breaks, a peer that will not install) are checked here directly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _venvs  # noqa: E402
import peers  # noqa: E402
import run_all  # noqa: E402

FIGURE = re.compile(r"\d+(\.\d+)?")

pytestmark = pytest.mark.slow


def test_run_all_quick_runs_every_benchmark_and_writes_the_report(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    assert "| CPU |" in report and "| Python |" in report
    names = [path.name for path in run_all.benchmarks()]
    assert {"peers.py", "instrumentation_overhead.py"} <= set(names)
    for name in names:
        section = report.split(f"## `bench/{name}`", 1)[1].split("\n## `bench/", 1)[0]
        assert "**Failed" not in section, section
        assert FIGURE.search(section), f"{name} printed no figures:\n{section}"
    peers_section = report.split("## `bench/peers.py`", 1)[1]
    llmtap_row = next(line for line in peers_section.splitlines() if line.startswith("| llmtap |"))
    assert FIGURE.search(llmtap_row.split("|")[3]), llmtap_row  # an added-µs median, whatever its value


def test_a_peer_that_breaks_is_reported_with_its_error_and_the_others_still_run() -> None:
    here = sys.executable
    variants = [
        peers.Variant("bare", "bare", "bare client", here, "x"),
        peers.Variant("llmtap", "llmtap", "llmtap", here, "x"),
        # OpenLIT is not installed in the test environment: its worker fails on import.
        peers.Variant("openlit", "openlit", "OpenLIT", here, "x"),
    ]
    peers.measure(variants, sessions=1, rounds=1, scale=0.03)
    broken = variants[2]
    assert broken.error and "openlit" in broken.error and "ModuleNotFoundError" in broken.error
    assert all(variants[0].pooled(w.name) for w in peers.WORKLOADS)
    text = peers.report(variants, [], quick=True)
    assert "### Failed" in text and "ModuleNotFoundError" in text
    assert "| llmtap | x |" in text


def test_a_peer_that_will_not_install_is_reported_with_pips_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_venvs, "VENVS", tmp_path)
    missing = tmp_path / "no-such-project"  # a local path: pip fails at once, without asking any index
    venv = _venvs.ensure_venv("broken", [(str(missing),)], log=lambda message: None)
    assert venv.python is None
    assert "no-such-project" in venv.error
    text = peers.report([], [venv], quick=False)
    assert "| broken | — | install failed:" in text
