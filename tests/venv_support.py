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


def cached_venv(requirements: list[str], *, editable: bool = True) -> Path:
    """The ``python`` of a venv with ``requirements`` and llmtap installed, built at most once.

    ``editable=False`` installs the checkout as a user gets it (a built wheel, with llmtap's own dependencies);
    it is reinstalled on every call, so the venv always runs the checkout's current code.
    """
    key_text = f"{sys.version}|{sorted(requirements)}|{ROOT}"
    if not editable:  # a new llmtap dependency needs a new venv
        key_text += f"|wheel|{(ROOT / 'pyproject.toml').read_text()}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    # This environment's pip installs into the new venv: no ensurepip, no second pip download.
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
    pip.append("--disable-pip-version-check")
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits, then finds the venv ready
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            subprocess.run([*pip, *requirements], check=True)
            if editable:
                subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
            else:
                subprocess.run([*pip, str(ROOT)], check=True)  # llmtap's dependencies, once
            (venv / "ready").touch()
        elif not editable:
            subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    return venv / "bin" / "python"
