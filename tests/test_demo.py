"""`llmtap demo` runs the whole pipeline in separate processes and only succeeds when every call was stored."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llmtap.clickhouse.connection import connect


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
    for heading in ("Calls by model", "Calls by service", "Latency by model", "llmtap logs --dsn chdb://"):
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
