"""The benchmark harness itself: run_all's report, and how peers.py reports a peer that breaks or will not install.

Each benchmark's own --quick run is already a CI smoke test: tests/test_readme.py runs every `python bench/...`
command the README shows, in --quick mode. So this file does not run them again; it runs run_all over the cheapest
benchmark (peers --quick: the bare client and llmtap in this interpreter, a few calls) to check the report it
writes, and checks the failure paths directly.
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


def test_run_all_writes_the_report_with_the_machine_and_each_benchmarks_figures(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "peers", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    assert "| CPU |" in report and "| Python |" in report and "| load average (1/5/15 min) |" in report
    assert "`python bench/run_all.py --quick --only peers`" in report
    assert "Not run this time:" in report and "`bench/instrumentation_overhead.py`" in report
    assert "| `bench/peers.py` | ok |" in report
    section = report.split("## `bench/peers.py`", 1)[1]
    assert "**Failed" not in section
    llmtap_row = next(line for line in section.splitlines() if line.startswith("| llmtap |"))
    assert FIGURE.search(llmtap_row.split("|")[3]), llmtap_row  # an added-µs median, whatever its value


def test_run_all_records_a_failing_benchmark_with_its_error(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('| partial | figures |')\nsys.exit(3)\n")
    output, error, _ = run_all.run(script, quick=True)
    assert error == "exited with status 3 (its stderr is above)"
    report = run_all.report([(script, output, error, 0.5)], quick=True)
    assert "| `bench/broken.py` | exited with status 3" in report
    assert "**Failed: exited with status 3" in report and "| partial | figures |" in report


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
