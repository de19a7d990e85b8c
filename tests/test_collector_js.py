"""`llmtap serve` with the OpenTelemetry JavaScript SDK's OTLP/HTTP exporters (JSON bodies), run by node.

The npm packages are pinned in tests/js/package-lock.json and installed with `npm ci` on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from collector_support import query, running_collector, settle

JS_DIR = Path(__file__).with_name("js")
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed to run the JS OTLP exporters"
)


@pytest.fixture(scope="module")
def js_client() -> Path:
    if not (JS_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-http").is_dir():
        result = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{result.stderr[-2000:]}")
    return JS_DIR / "send.mjs"


def test_javascript_sdk_exports_traces_logs_and_metrics(js_client, tmp_path):
    with running_collector(tmp_path) as collector:
        result = subprocess.run(
            [NODE, str(js_client), collector.http_url, "js-svc"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "error" not in result.stderr.lower(), result.stderr
        settle(collector)
        spans = query(
            collector,
            "SELECT SpanName, SpanKind, StatusCode, StatusMessage, SpanAttributes, ScopeName, ScopeVersion, "
            "Events.Name, Events.Attributes, length(TraceId), length(SpanId), Duration < 10000000000 "
            "FROM otel_traces WHERE ServiceName = 'js-svc'",
        )
        assert spans == [
            (
                "chat gpt-4o", "Client", "Error", "boom",
                {
                    "gen_ai.request.model": "gpt-4o", "gen_ai.request.stream": "true",
                    "gen_ai.request.temperature": "0.5", "gen_ai.response.finish_reasons": '["stop"]',
                    "gen_ai.usage.input_tokens": "12",
                },
                "js.tracer", "1.2.3", ["gen_ai.choice"], [{"index": "0"}], 32, 16, True,
            )
        ]  # fmt: skip
        logs = query(
            collector, "SELECT Body, SeverityText, SeverityNumber, LogAttributes, ScopeName FROM otel_logs"
        )
        assert logs == [("hello from js", "INFO", 9, {"k": "v"}, "js.logger")]
        sums = query(
            collector, "SELECT MetricName, Value, Attributes, IsMonotonic, ScopeName FROM otel_metrics_sum"
        )
        assert sums == [("js.requests", 2.0, {"model": "gpt-4o"}, True, "js.meter")]
