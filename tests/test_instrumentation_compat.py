"""The call-form tests again under openai 1.x (with wrapt 1.x) and openai 2.x (with wrapt 2.x).

The dev environment has openai 3.x; each older combination gets its own venv, built once and cached in the temp
directory (keyed by Python, requirements and checkout), the way test_fake_openai_compat.py does it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "llmtap-instrumentation-compat"
COMMON = [
    "opentelemetry-sdk>=1.30",
    "opentelemetry-instrumentation>=0.51b0",
    "opentelemetry-exporter-otlp-proto-http>=1.30",
    "click>=8.1",
    "pytest>=8",
    "pytest-timeout",
]


def _venv_for(requirements: list[str]) -> Path:
    key = hashlib.sha256(f"{sys.version}|{requirements}|{COMMON}|{ROOT}".encode()).hexdigest()[:12]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, *requirements, *COMMON], check=True)
            subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
            (venv / "ready").touch()
    return venv / "bin" / "python"


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
    python = _venv_for(requirements)
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
