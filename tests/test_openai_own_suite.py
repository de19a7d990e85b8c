"""openai-python's own tests pass with llmtap on wherever they pass without it (tests/openai_suite.py).

CI runs the subset in openai_suite.CI_PATHS: about 7,100 tests, 1–1.5 minutes a run on 2 cores once the venv is
cached. ``python tests/openai_suite.py --all`` runs the whole suite.
"""

from __future__ import annotations

import openai_suite
import pytest


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_openai_suite_passes_the_same_with_llmtap() -> None:
    report = openai_suite.run()
    print(report.summary())
    # The instrumented run really was instrumented, and the comparison saw the suite, not an empty run.
    assert report.patched > 0 and sum(report.spans.values()) > 100, report.summary()
    assert sum(outcome == "passed" for outcome in report.plain.values()) > 5000, report.summary()
    assert report.plain.keys() == report.instrumented.keys(), report.summary()
    assert not report.differing, "pass plain, fail with llmtap:\n" + "\n".join(report.differing)
