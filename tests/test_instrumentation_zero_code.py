"""Zero-code capture end to end: ``opentelemetry-instrument python app.py`` with only llmtap installed.

A real subprocess runs a small OpenAI app against the fake server; its spans travel over OTLP/HTTP to a tiny
receiver on 127.0.0.1 in this test, which decodes them with the opentelemetry-proto classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from llmtap.fake_openai import FakeOpenAIServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LAUNCHER = Path(sys.executable).with_name("opentelemetry-instrument")
APP = textwrap.dedent(
    """
    import os, openai
    client = openai.OpenAI(base_url=os.environ["FAKE_BASE_URL"], api_key="sk-e2e-secret", max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi!"}])
    for _ in client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Go"}],
                                            stream=True):
        pass
    print(answer.choices[0].message.content)
    """
)


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.paths: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.paths.append(self.path)
        reply = b""
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                self.server.resources.append(
                    {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                )
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(scope_spans.spans)
            reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTAP_"))}
    env.update(extra)
    return env


def _attributes(span: Any) -> dict[str, Any]:
    values = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        values[kv.key] = (
            list(v.string_value for v in value.array_value.values)
            if kind == "array_value"
            else getattr(value, kind)
        )
    return values


@pytest.mark.slow
def test_opentelemetry_instrument_exports_one_span_per_call(receiver: _Receiver, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    with FakeOpenAIServer() as fake:
        env = _env(
            FAKE_BASE_URL=fake.base_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_port}",
            OTEL_SERVICE_NAME="e2e-app",
            OTEL_RESOURCE_ATTRIBUTES="service.namespace=checkout",
        )
        result = subprocess.run(
            [str(LAUNCHER), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # the app's own output is untouched
    assert len(receiver.spans) == 2, [s.name for s in receiver.spans]
    plain, streamed = sorted(receiver.spans, key=lambda s: _attributes(s)["gen_ai.request.stream"])
    assert plain.name == "chat gpt-4o-mini" and plain.kind == plain.SPAN_KIND_CLIENT
    attrs = _attributes(plain)
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.usage.output_tokens"] > 0
    assert json.loads(attrs["gen_ai.input.messages"])[0]["parts"][0]["content"] == "Hi!"
    assert "gen_ai.response.time_to_first_chunk" in _attributes(streamed)
    assert receiver.resources[0]["service.name"] == "e2e-app"
    assert receiver.resources[0]["service.namespace"] == "checkout"
    assert "/v1/metrics" in receiver.paths  # the GenAI histograms travel too
    assert all("sk-e2e-secret" not in str(_attributes(s)) for s in receiver.spans)


@pytest.mark.slow
def test_distro_defaults_to_otlp_http_on_4318_and_user_settings_win(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            import os
            from opentelemetry import trace
            processor = trace.get_tracer_provider()._active_span_processor._span_processors[0]
            exporter = processor._batch_processor._exporter
            print(os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"], type(exporter).__module__, exporter._endpoint)
            """
        )
    )
    default = subprocess.run(
        [str(LAUNCHER), sys.executable, str(probe)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert default.returncode == 0, default.stderr
    protocol, module, endpoint = default.stdout.split()
    assert protocol == "http/protobuf" and module.startswith("opentelemetry.exporter.otlp.proto.http")
    assert endpoint == "http://localhost:4318/v1/traces"
    custom = subprocess.run(
        [str(LAUNCHER), sys.executable, str(probe)],
        env=_env(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/v1/traces"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert custom.stdout.split()[2] == "http://127.0.0.1:9/v1/traces"
