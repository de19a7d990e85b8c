"""Each example in examples/ runs against a real `llmtap serve` and the local fake LLM, and its calls are stored."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from js_support import js_node_modules
from llmtap.clickhouse.connection import connect
from llmtap.collector.discovery import find_serve
from llmtap.fake_openai import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[tuple]]]:
    """Run every example once against serve; yield the stored calls by service once serve has stopped."""
    home = tmp_path_factory.mktemp("examples")
    dsn = f"chdb://{home / 'chdb'}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "llmtap", "serve", "--port", "0", "--grpc-port", "-1", "--dsn", dsn, "--no-status"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (info := find_serve(dsn)) is None:
            assert serve.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        with FakeOpenAIServer() as fake:
            env = {
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": info.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "sk-examples",
            }
            launcher = str(Path(sys.executable).with_name("opentelemetry-instrument"))
            runs = {
                "app": [launcher, sys.executable, str(EXAMPLES / "app.py")],
                "async-streaming": [launcher, sys.executable, str(EXAMPLES / "async_streaming.py")],
                "custom-attributes-example": [sys.executable, str(EXAMPLES / "custom_attributes.py")],
                "log-interaction-example": [sys.executable, str(EXAMPLES / "log_interaction.py")],
            }
            for service, argv in runs.items():
                result = subprocess.run(
                    argv,
                    env={**env, "OTEL_SERVICE_NAME": service},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert result.returncode == 0, f"{service}: {result.stderr}"
            if shutil.which("node") and shutil.which("npm"):
                modules = js_node_modules()
                script = home / "node" / "send_span.mjs"
                script.parent.mkdir()
                shutil.copy(EXAMPLES / "node" / "send_span.mjs", script)
                (script.parent / "node_modules").symlink_to(modules)
                result = subprocess.run(
                    ["node", str(script), info.url], capture_output=True, text=True, timeout=60
                )
                assert result.returncode == 0, result.stderr
        time.sleep(1.5)  # serve's flush interval
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    client = connect(dsn)
    rows = client.query(
        "SELECT ServiceName, Operation, Model, IsStream, UserId, Tags, Attributes, Metadata, InputMessages"
        " FROM llm_calls ORDER BY Timestamp"
    ).result_rows
    client.close()
    by_service: dict[str, list[tuple]] = {}
    for row in rows:
        by_service.setdefault(row[0], []).append(row[1:])
    yield by_service


def test_minimal_app_is_captured_with_no_code(stored) -> None:
    ((operation, model, *_),) = stored["app"]
    assert (operation, model) == ("chat", "gpt-4o-mini")


def test_async_streams_are_one_span_each(stored) -> None:
    calls = stored["async-streaming"]
    assert len(calls) == 2 and all(call[2] == 1 for call in calls)


def test_custom_attributes_and_metadata_reach_the_store(stored) -> None:
    ((_, _, _, user, tags, attributes, metadata, _),) = stored["custom-attributes-example"]
    assert user == "alice" and tags == ["checkout"]
    assert attributes == {"plan": "pro", "feature": "order-summary"}
    assert metadata == {"order_id": "1234"}


def test_log_interaction_and_capture_produce_the_same_span_shape(stored) -> None:
    calls = stored["log-interaction-example"]
    assert sorted(call[1] for call in calls) == ["llama-3.1-8b-instruct", "my-rules-engine"]
    assert all(call[0] == "chat" and "good morning" in calls[0][7] for call in calls[:1])


def test_a_node_service_joins_over_otlp(stored) -> None:
    js_node_modules()  # skips, with the reason, where node is missing
    ((operation, model, _, user, *_),) = stored["node-chatbot"]
    assert (operation, model, user) == ("chat", "gpt-4o-mini", "node-user")
