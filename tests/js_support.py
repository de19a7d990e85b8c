"""The OpenTelemetry JavaScript SDK for tests: tests/js pins it (package-lock.json) and `npm ci` installs it once."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).with_name("js")


def js_node_modules() -> Path:
    """tests/js/node_modules, installed on first use; skips the test with the reason when node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the OpenTelemetry JavaScript SDK")
    modules = JS_DIR / "node_modules"
    if not (modules / "@opentelemetry" / "exporter-trace-otlp-http").is_dir():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{result.stderr[-2000:]}")
    return modules
