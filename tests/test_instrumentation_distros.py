"""Zero-code capture still works when the upstream ``opentelemetry-distro`` is installed beside llmtap.

``opentelemetry-instrument`` loads one distro: the one ``OTEL_PYTHON_DISTRO`` names, else the first entry point it
finds. The upstream distro defaults to OTLP/gRPC (:4317), ours to OTLP/HTTP (:4318); ``llmtap serve`` takes both.
In a venv with llmtap, openai, ``opentelemetry-distro`` and ``opentelemetry-exporter-otlp`` (the pair the upstream
docs install), an app runs under the launcher for each choice, including the launcher's own, and its spans,
metrics and logs must reach a real ``llmtap serve`` with no export error and our instrumentor active.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from collector_support import query, running_collector, settle
from llmtap.fake_openai import FakeOpenAIServer
from venv_support import cached_venv

REQUIREMENTS = [
    "openai",
    "opentelemetry-distro",
    "opentelemetry-exporter-otlp",
    # llmtap's own base dependencies (it is installed without them, from this checkout)
    "opentelemetry-sdk>=1.30",
    "opentelemetry-instrumentation>=0.51b0",
    "opentelemetry-exporter-otlp-proto-http>=1.30",
    "wrapt>=1.14",
    "click>=8.1",
]
APP = textwrap.dedent(
    """
    import logging, os, openai
    client = openai.OpenAI(base_url=os.environ["FAKE_BASE_URL"], api_key="sk-distro-secret", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi!"}])
    logging.getLogger("app").warning("one log record")
    print(os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"])
    """
)
EXPORT_FAILURES = ("Failed to auto initialize", "Traceback", "Failed to export", "Exception while exporting")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("choice", ["launcher's", "distro", "llmtap"])
def test_spans_reach_serve_whichever_distro_the_launcher_loads(choice: str, tmp_path: Path) -> None:
    python = cached_venv(REQUIREMENTS)
    first = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.metadata import entry_points as e; "
            "print(next(iter(e(group='opentelemetry_distro'))).name)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    distro = first if choice == "launcher's" else choice
    app = tmp_path / "app.py"
    app.write_text(APP)
    service = f"distro-{distro}-{choice}".replace("'", "")
    with running_collector(tmp_path) as collector, FakeOpenAIServer() as fake:
        port = collector.grpc_port if distro == "distro" else collector.http_port
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTAP_", "PYTHON"))}
        env.update(
            FAKE_BASE_URL=fake.base_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_SERVICE_NAME=service,
            OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
        )
        if choice != "launcher's":
            env["OTEL_PYTHON_DISTRO"] = choice
        result = subprocess.run(
            [str(python.with_name("opentelemetry-instrument")), str(python), str(app)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == ("grpc" if distro == "distro" else "http/protobuf")
        assert not [line for line in result.stderr.splitlines() if line.startswith(EXPORT_FAILURES)], (
            result.stderr
        )
        settle(collector)
        spans = query(
            collector,
            "SELECT SpanName, ScopeName, SpanAttributes['gen_ai.input.messages'] FROM otel.otel_traces "
            "WHERE ServiceName = {s:String}",
            {"s": service},
        )
        metrics = query(
            collector,
            "SELECT count() FROM otel.otel_metrics_histogram WHERE ServiceName = {s:String} "
            "AND MetricName = 'gen_ai.client.operation.duration'",
            {"s": service},
        )
    assert [(name, scope) for name, scope, _ in spans] == [
        ("chat gpt-4o-mini", "llmtap.instrumentation.openai")
    ]
    assert '"Hi!"' in spans[0][2]
    assert metrics[0][0] >= 1
