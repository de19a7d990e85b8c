"""Running the README's commands as a user would: the blocks and inline commands parsed, and a shell for them.

Commands come from the ```bash blocks (in order; a block's `cmd &` lines run in the background until the block
ends) and from inline code spans; ```python blocks run as scripts. They run in a scratch home directory (so the
default embedded store is fresh) with `OPENAI_BASE_URL` pointing at the local fake server and serve's ports and the
OTLP endpoint moved to free ports through their documented environment variables — the command text is unchanged.
Placeholders are filled in (`<id>`: a stored call's id), and benchmarks run in their `--quick` mode, as in CI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PROGRAMS = ("llmtap", "python", "opentelemetry-instrument")
# Commands that run until stopped: started, seen alive, then stopped.
LONG_RUNNING = re.compile(r"^llmtap (serve|fake-openai)\b|--follow\b|\s-f\b|--keep-running\b")
INLINE = re.compile(r"`((?:llmtap|python|opentelemetry-instrument) [^`]+)`")
TIMEOUT = 300


@dataclass(frozen=True)
class Command:
    words: list[str]
    env: dict[str, str]
    background: bool

    @property
    def text(self) -> str:
        return shlex.join(self.words)


def parse_line(line: str) -> list[Command]:
    """The runnable commands of one shell line (`a && b`, `VAR=x cmd`, trailing `&`, comments)."""
    words = shlex.split(line, comments=True)
    background = bool(words) and words[-1] == "&"
    words = words[:-1] if background else words
    commands, segment = [], []
    for word in [*words, "&&"]:
        if word != "&&":
            segment.append(word)
            continue
        env = {}
        while segment and re.match(r"^[A-Z_][A-Z0-9_]*=", segment[0]):
            key, value = segment.pop(0).split("=", 1)
            env[key] = value
        if segment and segment[0] in PROGRAMS:
            commands.append(Command(_normalise(segment), env, background))
        segment = []
    return commands


def _normalise(words: list[str]) -> list[str]:
    words = [word.strip("[]") if word in ("[--quick]",) else word for word in words]
    if words[0] == "python" and len(words) > 1 and words[1].startswith("bench/") and "--quick" not in words:
        words.append("--quick")
    return words


def bash_blocks() -> list[list[Command]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return [[cmd for line in block.splitlines() for cmd in parse_line(line)] for block in blocks]


def inline_commands() -> list[Command]:
    fenced = {cmd.text for block in bash_blocks() for cmd in block}
    seen, commands = set(fenced), []
    for match in INLINE.finditer(README):
        for cmd in parse_line(match.group(1)):
            if cmd.text not in seen:
                seen.add(cmd.text)
                commands.append(cmd)
    return commands


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Shell:
    """Runs README commands like a user would, in a scratch home, with the block's background commands alive."""

    def __init__(
        self, home: Path, openai_url: str, *, checkout: Path | None = None, python: str = sys.executable
    ):
        """Commands run in ``checkout`` (default: ``home``, with this checkout's examples and bench linked in), with
        ``python`` and the commands installed beside it first on the PATH."""
        self.home = home
        self.cwd = checkout or home
        self.python = python
        self.http_port, self.grpc_port = _free_port(), _free_port()
        if checkout is None:
            for name in ("examples", "bench"):
                (home / name).symlink_to(ROOT / name)
        bin_dir = str(Path(python).parent)
        self.env = {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "COLUMNS": "200",
            "LLMTAP_PORT": str(self.http_port),
            "LLMTAP_GRPC_PORT": str(self.grpc_port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.http_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OPENAI_BASE_URL": openai_url,
            "OPENAI_API_KEY": "sk-readme-test",
        }
        self.background: list[tuple[Command, subprocess.Popen[str]]] = []

    def argv(self, cmd: Command) -> list[str]:
        words = [
            word.replace("<id>", self.latest_call_id()) if "<id>" in word else word for word in cmd.words
        ]
        if words[0] == "python":
            words[0] = self.python
        return words

    def run(self, cmd: Command) -> str:
        env = {**self.env, **cmd.env}
        if cmd.env.get("OPENAI_BASE_URL", "").startswith("http://127.0.0.1:8000"):
            # The README's fake server port may be busy here: use the test's fake server instead.
            env["OPENAI_BASE_URL"] = self.env["OPENAI_BASE_URL"]
        if cmd.background or (LONG_RUNNING.search(cmd.text) and "--help" not in cmd.words):
            return self._start(cmd, env)
        result = subprocess.run(
            self.argv(cmd), cwd=self.cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert result.returncode == 0, (
            f"`{cmd.text}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        if cmd.words[0] == "opentelemetry-instrument":
            self.settle()
        return result.stdout

    def _start(self, cmd: Command, env: dict[str, str]) -> str:
        argv = self.argv(cmd)
        if cmd.words[:2] == ["llmtap", "fake-openai"]:
            argv = [*argv[:2], "--port", "0", *[w for w in argv[2:] if w not in ("--port", "8000")]]
        process = subprocess.Popen(
            argv, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        if cmd.words[:2] == ["llmtap", "serve"]:
            self._wait_healthy(process, cmd)
        else:
            first = process.stdout.readline() if process.stdout else ""
            assert process.poll() is None, f"`{cmd.text}` stopped at once: {first}{process.stdout.read()}"
        if cmd.background:
            self.background.append((cmd, process))
        else:
            self._stop(cmd, process)
        return ""

    def _wait_healthy(self, process: subprocess.Popen[str], cmd: Command) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, f"`{cmd.text}` exited:\n{process.stdout.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"`{cmd.text}` never became healthy")

    def settle(self) -> None:
        """Wait until a running serve has written everything it acknowledged."""
        if not any(cmd.words[:2] == ["llmtap", "serve"] for cmd, _ in self.background):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=5) as answer:
                health = json.load(answer)
            if not health["queued_items"]:
                return
            time.sleep(0.2)

    def latest_call_id(self) -> str:
        out = subprocess.run(
            ["llmtap", "logs", "--json", "-n", "1"], cwd=self.cwd, env=self.env, capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip
        return json.loads(out.splitlines()[0])["span_id"]

    def end_block(self) -> None:
        while self.background:
            cmd, process = self.background.pop()
            self._stop(cmd, process)

    def _stop(self, cmd: Command, process: subprocess.Popen[str]) -> None:
        alive = process.poll() is None
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"`{cmd.text}` did not stop on Ctrl-C") from None
        assert alive, f"`{cmd.text}` had stopped by itself (exit {process.returncode})"


def run_block(shell: Shell, block: list[Command]) -> None:
    """Run one bash block; a block that runs an instrumented app must show its call in `llmtap logs`."""
    try:
        outputs = [shell.run(cmd) for cmd in block]
    finally:
        shell.end_block()
    if any(cmd.words[0] == "opentelemetry-instrument" for cmd in block):
        logs = outputs[[cmd.text for cmd in block].index("llmtap logs")]
        assert "gpt-4o-mini" in logs, f"the instrumented app's call is not in `llmtap logs`:\n{logs}"
