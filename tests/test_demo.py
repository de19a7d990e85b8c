"""`llmtap demo` runs the whole pipeline in separate processes and only succeeds when every call was stored."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llmtap.clickhouse.connection import connect
from llmtap.collector.discovery import find_serve

from llmtap.demo import COMPOSE_PASSWORDS, COMPOSE_STEPS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    data_dir = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "llmtap", "demo", "--calls", "16", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"COLUMNS": "200", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    return result, data_dir


@pytest.fixture
def store(demo_run) -> Iterator[Any]:
    """A client on the store the demo filled (closed after the test: chDB holds one store per process)."""
    result, data_dir = demo_run
    assert result.returncode == 0
    client = connect(f"chdb://{data_dir / 'chdb'}")
    yield client
    client.close()


def test_demo_exits_zero_and_says_every_call_was_stored(demo_run) -> None:
    result, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 16 calls made were stored" in result.stdout
    for heading in (
        "Calls by model", "Calls by service", "Latency by model", "llmtap logs --dsn chdb://", *COMPOSE_STEPS
    ):  # fmt: skip
        assert heading in result.stdout


def test_demo_store_holds_both_services_users_tags_and_content(store) -> None:
    rows = store.query(
        "SELECT ServiceName, count(), uniqExact(UserId), countIf(IsError), arrayDistinct(flatten(groupArray(Tags))),"
        " uniqExact(Operation) FROM llm_calls GROUP BY ServiceName ORDER BY ServiceName"
    ).result_rows
    assert [row[0] for row in rows] == ["checkout-api", "support-bot"]
    assert sum(row[1] for row in rows) == 16
    assert all(row[2] >= 2 for row in rows), rows
    assert all(row[4] for row in rows), "custom tags were recorded"
    content = store.query(
        "SELECT countIf(InputMessages != '' OR Operation = 'embeddings'), countIf(Project = 'demo-shop') FROM llm_calls"
    ).result_rows[0]
    assert content == (16, 16)


def test_demo_calls_are_priced_by_the_bundled_prices(store) -> None:
    """serve loads llmtap's prices when it creates the store, so known models are costed with no extra step."""
    unpriced = store.query(
        "SELECT groupUniqArray(Model) FROM llm_calls_costed WHERE Cost IS NULL AND Model LIKE 'gpt-%'"
    ).result_rows[0][0]
    assert unpriced == []


def _gone(pid: int, within: float) -> bool:
    """Whether the process has exited (a zombie awaiting its reaper counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name)
def test_a_kept_running_demo_stopped_by_a_signal_stops_serve(tmp_path: Path, stop: signal.Signals) -> None:
    """`timeout`, systemd and container runtimes stop with SIGTERM, a closed terminal with SIGHUP: as Ctrl-C."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "llmtap", "demo", "--calls", "2", "--keep-running", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"COLUMNS": "200", "PYTHONUNBUFFERED": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )  # fmt: skip
    serve = None
    try:
        seen = []
        for line in demo.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "press Ctrl-C" in line:
                break
        else:
            pytest.fail("the demo did not reach --keep-running:\n" + "".join(seen))
        serve = find_serve(f"chdb://{tmp_path / 'chdb'}")
        assert serve is not None
        demo.send_signal(stop)
        rest = demo.communicate(timeout=60)[0]
        stopped = _gone(serve.pid, within=10)
    finally:
        demo.kill()
        if serve is not None and not _gone(serve.pid, within=0.1):
            os.kill(serve.pid, signal.SIGKILL)
    assert stopped, f"serve (pid {serve.pid}) outlived the demo"
    assert demo.returncode == 0, "".join(seen) + rest
    assert "all 2 calls made were stored" in rest


def test_the_demos_compose_steps_fill_every_password_compose_requires(tmp_path: Path) -> None:
    """The demo's hint is the whole step: the copied .env gets every password docker-compose.yml insists on."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    setup = [step for step in COMPOSE_STEPS if not step.startswith("docker compose")]
    subprocess.run(["bash", "-c", " && ".join(setup)], cwd=tmp_path, check=True)
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required, "docker-compose.yml names the variables it refuses to start without"
    assert {name for name in required if not env.get(name)} == set()
    assert all(len(env[name]) == 32 for name in COMPOSE_PASSWORDS)
    assert len({env[name] for name in COMPOSE_PASSWORDS}) == len(COMPOSE_PASSWORDS), "one password each"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".env", ".env.example"], (
        "nothing else is left"
    )
