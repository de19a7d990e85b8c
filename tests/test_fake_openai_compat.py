"""The fake server works with every openai major: the SDK test modules run again under openai 1.x and 2.x.

The dev environment carries openai 3.x (httpx2); openai 1.x and 2.x talk through httpx. Each older major gets its
own venv, built once and cached in the temp directory (keyed by Python, version spec and checkout), so later runs
only pay for the tests themselves.
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
TEST_MODULES = [
    "tests/test_fake_openai_sdk.py",
    "tests/test_fake_openai_knobs.py",
    "tests/test_fake_openai_transport.py",
]
CACHE = Path(tempfile.gettempdir()) / "llmtap-openai-compat"


def _venv_for(spec: str) -> Path:
    """A venv with ``spec``, pytest and this checkout (editable, no other dependencies), built at most once."""
    key = hashlib.sha256(f"{sys.version}|{spec}|{ROOT}|no-pip".encode()).hexdigest()[:12]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits, then finds the venv ready
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            # This environment's pip installs into the new venv: no ensurepip, no second pip download.
            pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
            subprocess.run(
                [*pip, "--disable-pip-version-check", spec, "pytest>=8", "pytest-timeout"], check=True
            )
            subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
            (venv / "ready").touch()
    return venv / "bin" / "python"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("spec", "major"), [("openai>=1.40,<2", "1"), ("openai>=2,<3", "2")])
def test_sdk_tests_pass_under_older_openai(spec: str, major: str) -> None:
    python = _venv_for(spec)
    version = subprocess.run(
        [str(python), "-c", "import openai; print(openai.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.split(".")[0] == major
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", *TEST_MODULES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"openai {version}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
