"""The README's set-up command and quick start, run the way a newcomer runs them.

A fresh copy of what git tracks plays the fresh clone; a fresh venv in it gets a regular (not editable) install,
and every command runs from the clone's root, exactly as the README writes it. From there, `python -m` and
`opentelemetry-instrument` put the root first on the import path, so any folder there named like the package
would shadow the installed one (the demo's serve and the instrumented app both failed that way once).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkout_support import copy_checkout
from readme_support import Command, Shell, bash_blocks, run_block

pytestmark = pytest.mark.slow
FIRST_COMMAND = 'pip install ".[all]" && llmtap demo'


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("fresh-clone"))


@pytest.fixture(scope="module")
def venv_bin(clone: Path) -> Path:
    """A fresh venv inside the clone, where users often keep theirs (pip's cache may serve the downloads)."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin"


def _activated(venv_bin: Path) -> dict[str, str]:
    """The environment of a shell where the venv is activated (nothing of this test run's own venv leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {
        **env,
        "VIRTUAL_ENV": str(venv_bin.parent),
        "PATH": f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
    }


@pytest.fixture(scope="module")
def first_command(clone: Path, venv_bin: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", "-c", FIRST_COMMAND], cwd=clone, env=_activated(venv_bin), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"`{FIRST_COMMAND}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture
def fake_openai(clone: Path, venv_bin: Path, first_command: object) -> Iterator[str]:
    """The README's `llmtap fake-openai`, from the fresh install, on a free port instead of 8000."""
    server = subprocess.Popen(
        [str(venv_bin / "llmtap"), "fake-openai", "--port", "0"], cwd=clone, env=_activated(venv_bin),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert "listening on http://127.0.0.1:" in line, line
        yield line.split("listening on ")[1].split()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.timeout(900)  # the install and the demo
def test_the_first_command_runs_as_written_from_the_clones_root(
    clone: Path, venv_bin: Path, first_command: subprocess.CompletedProcess[str]
) -> None:
    readme = (clone / "README.md").read_text()
    assert f"```bash\n{FIRST_COMMAND}\n```" in readme, "the README's first command changed: update this test"
    assert "all 60 calls made were stored" in first_command.stdout, first_command.stdout
    # `python -c` and `-m` put the working directory first on the import path, as the demo's children have it.
    where = subprocess.run(
        [str(venv_bin / "python"), "-c", "import llmtap.collector; print(llmtap.collector.__file__)"],
        cwd=clone, env=_activated(venv_bin), capture_output=True, text=True,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv_bin.parent / "lib"), where.stdout


@pytest.mark.timeout(900)  # alone, it installs first (the module's fixtures)
def test_the_quick_start_runs_as_written_from_the_clones_root(
    tmp_path: Path, clone: Path, venv_bin: Path, fake_openai: str
) -> None:
    """`llmtap serve &`, the instrumented example app, then `llmtap logs` shows its call (and the rest of the block)."""
    (quick_start,) = [block for block in bash_blocks() if _runs_an_instrumented_app(block)]
    shell = Shell(tmp_path, fake_openai, checkout=clone, python=str(venv_bin / "python"))
    run_block(shell, quick_start)


def _runs_an_instrumented_app(block: list[Command]) -> bool:
    return any(cmd.words[0] == "opentelemetry-instrument" for cmd in block)
