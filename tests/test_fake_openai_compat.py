"""The fake server works with every openai major: the SDK test modules run again under openai 1.x and 2.x.

The dev environment carries openai 3.x (httpx2); openai 1.x and 2.x talk through httpx. Each older major gets its
own venv, built once and cached in the temp directory (keyed by Python, version spec and checkout), so later runs
only pay for the tests themselves.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from venv_support import ROOT, cached_venv

TEST_MODULES = [
    "tests/test_fake_openai_sdk.py",
    "tests/test_fake_openai_knobs.py",
    "tests/test_fake_openai_transport.py",
]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("spec", "major"), [("openai>=1.40,<2", "1"), ("openai>=2,<3", "2")])
def test_sdk_tests_pass_under_older_openai(spec: str, major: str) -> None:
    python = cached_venv([spec, "pytest>=8", "pytest-timeout"])
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
