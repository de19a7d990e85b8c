"""Cached virtual environments for tests that need other versions of our dependencies than the dev venv has.

Each venv holds the given requirements plus this checkout (editable, no other dependencies), is built once and
kept in the temp directory, keyed by Python, requirements and checkout, so later runs only pay for the tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "llmtap-test-venvs"


def cached_venv(requirements: list[str]) -> Path:
    """The ``python`` of a venv with ``requirements`` and llmtap installed, built at most once."""
    key = hashlib.sha256(f"{sys.version}|{sorted(requirements)}|{ROOT}".encode()).hexdigest()[:12]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits, then finds the venv ready
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            # This environment's pip installs into the new venv: no ensurepip, no second pip download.
            pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
            subprocess.run([*pip, "--disable-pip-version-check", *requirements], check=True)
            subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
            (venv / "ready").touch()
    return venv / "bin" / "python"
