"""Every `llmtap`, `python` and `opentelemetry-instrument` command the README shows is run here, so none can rot.

They run in this test environment; tests/test_fresh_clone.py runs the set-up command and the quick start again the
way a newcomer does (a fresh copy of what git tracks, a fresh venv, a regular install, from the repository root).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from llmtap.fake_openai import FakeOpenAIServer
from readme_support import README, Command, Shell, bash_blocks, inline_commands, python_blocks, run_block


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    with FakeOpenAIServer() as fake:
        runner = Shell(tmp_path_factory.mktemp("readme-home"), fake.base_url)
        yield runner
        runner.end_block()


def test_the_readme_shows_the_two_setup_commands_first() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert [block.strip() for block in blocks[:2]] == [
        'pip install ".[all]" && llmtap demo',
        'pip install ".[dev]" && pytest',
    ]
    assert README.index("```bash") < README.index("\n## "), (
        "the set-up commands come before the first section"
    )


@pytest.mark.parametrize(
    "block", [block for block in bash_blocks() if block], ids=lambda block: block[0].text
)
def test_every_readme_bash_block_runs(shell: Shell, block: list[Command]) -> None:
    """One test per block, so each has the suite's timeout; they share the scratch home, in the README's order."""
    run_block(shell, block)


@pytest.mark.parametrize("cmd", inline_commands(), ids=lambda cmd: cmd.text)
def test_every_readme_inline_command_runs(shell: Shell, cmd: Command) -> None:
    try:
        shell.run(cmd)
    finally:
        shell.end_block()


def test_the_readme_commands_include_the_demo_and_an_instrumented_app() -> None:
    """The commands the tests above run (one test each) include the main job and the zero-code capture."""
    texts = [cmd.text for block in bash_blocks() for cmd in block] + [cmd.text for cmd in inline_commands()]
    assert any(text.startswith("llmtap demo") for text in texts)
    assert any(text.startswith("opentelemetry-instrument python") for text in texts)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_readme_python_block_runs(shell: Shell, index: int) -> None:
    source = python_blocks()[index]
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=shell.home,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
