"""The call-form tests again under openai 1.x (with wrapt 1.x) and openai 2.x (with wrapt 2.x).

The dev environment has openai 3.x; each older combination gets its own venv, built once and cached in the temp
directory by venv_support.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from venv_support import ROOT, cached_venv

COMMON = [
    "opentelemetry-sdk>=1.30",
    "opentelemetry-instrumentation>=0.51b0",
    "opentelemetry-exporter-otlp-proto-http>=1.30",
    "click>=8.1",
    "pytest>=8",
    "pytest-timeout",
]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("requirements", "openai_major", "wrapt_major"),
    [(["openai>=1.40,<2", "wrapt>=1.14,<2"], "1", "1"), (["openai>=2,<3", "wrapt>=2"], "2", "2")],
    ids=["openai1-wrapt1", "openai2-wrapt2"],
)
def test_call_forms_under_older_openai_and_wrapt(
    requirements: list[str], openai_major: str, wrapt_major: str
):
    python = cached_venv([*requirements, *COMMON])
    versions = subprocess.run(
        [str(python), "-c", "import openai, wrapt; print(openai.__version__, wrapt.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [v.split(".")[0] for v in versions] == [openai_major, wrapt_major]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "OTEL_"))
    }
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--noconftest",
            "tests/test_instrumentation_calls.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"openai {versions}:\n{result.stdout[-8000:]}\n{result.stderr[-3000:]}"
