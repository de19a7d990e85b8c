"""The fake server at the HTTP level: framing, keep-alive, routing, bad requests, the request log and the CLI."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys

import openai
import pytest
from fake_openai_helpers import reset_mid_request
from hypothesis import given
from hypothesis import strategies as st
from llmtap.fake_openai import FakeOpenAIServer, Knobs
from llmtap.fake_openai.knobs import KnobError
from llmtap.fake_openai.text import split_pieces

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
def connection(server: FakeOpenAIServer):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    yield conn
    conn.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body=None, headers=None) -> tuple:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def error_of(payload: bytes) -> dict:
    body = json.loads(payload)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_keep_alive_serves_many_requests_on_one_socket(connection) -> None:
    response, _ = request(connection, "POST", "/v1/chat/completions", CHAT)
    first_socket = connection.sock
    assert response.status == 200 and response.getheader("content-length")
    response, body = request(connection, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.getheader("transfer-encoding") == "chunked"
    assert body.endswith(b"data: [DONE]\n\n")
    response, _ = request(connection, "GET", "/v1/models")
    assert response.status == 200 and connection.sock is first_socket


def test_sse_framing(connection) -> None:
    response, body = request(
        connection, "POST", "/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True}
    )
    assert response.getheader("content-type").startswith("text/event-stream")
    events = body.decode().strip().split("\n\n")
    first_name, first_data = events[0].split("\n")
    assert first_name == "event: response.created"
    assert json.loads(first_data.removeprefix("data: "))["type"] == "response.created"


def test_broken_stream_cuts_the_connection(connection) -> None:
    with pytest.raises(http.client.IncompleteRead):
        request(
            connection, "POST", "/v1/chat/completions", {**CHAT, "stream": True}, {"x-fake-break-after": "2"}
        )


def test_client_leaving_mid_stream_does_not_hurt_the_server(server: FakeOpenAIServer) -> None:
    body = json.dumps({**CHAT, "stream": True}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-fake-chunk-delay-ms: 20\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head % len(body) + body)
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    response, _ = request(conn, "GET", "/v1/models")
    conn.close()
    assert response.status == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("POST", "/v1/nothing-here", 404, "Invalid URL (POST /v1/nothing-here)"),
        ("GET", "/v1/chat/completions", 405, "use POST"),
        ("POST", "/v2/chat/completions", 404, "Invalid URL"),
    ],
)
def test_unknown_routes(connection, method: str, path: str, status: int, needle: str) -> None:
    response, body = request(connection, method, path, CHAT if method == "POST" else None)
    assert response.status == status
    assert needle in error_of(body)["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", b"{not json", None),
        ("/v1/chat/completions", b"[1, 2]", None),
        ("/v1/chat/completions", {"messages": CHAT["messages"]}, "model"),
        ("/v1/chat/completions", {"model": "gpt-4o"}, "messages"),
        ("/v1/chat/completions", {**CHAT, "n": "two"}, "n"),
        ("/v1/chat/completions", {**CHAT, "n": 0}, "n"),
        ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream"),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"content": "no role"}]}, "messages[0]"),
        ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools[0]"),
        ("/v1/chat/completions", {**CHAT, "tools": ["get_weather"]}, "tools[0]"),
        ("/v1/chat/completions", {**CHAT, "response_format": {"type": "xml"}}, "response_format.type"),
        (
            "/v1/chat/completions",
            {
                **CHAT,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        ("/v1/responses", {"model": "gpt-4o"}, "input"),
        ("/v1/responses", {"model": "gpt-4o", "input": []}, "input"),
        (
            "/v1/responses",
            {"model": "gpt-4o", "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.name",
        ),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ""}, "input[0]"),
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"},
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "x", "dimensions": 5000},
            "dimensions",
        ),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct"}, "prompt"),
    ],
)
def test_bad_requests_get_a_clear_400(connection, path: str, body, param: str | None) -> None:
    response, payload = request(connection, "POST", path, body)
    assert response.status == 400
    error = error_of(payload)
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_chunked_request_body(server: FakeOpenAIServer) -> None:
    body = json.dumps(CHAT).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        sock.sendall(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 200")
    assert server.requests[-1].json == CHAT


def test_request_log(server: FakeOpenAIServer, connection) -> None:
    request(connection, "POST", "/v1/chat/completions?debug=1", CHAT, {"x-custom": "yes"})
    logged = server.requests[-1]
    assert (logged.method, logged.path, logged.json) == ("POST", "/v1/chat/completions", CHAT)
    assert logged.headers["x-custom"] == "yes"


def test_request_log_can_be_switched_off() -> None:
    with FakeOpenAIServer(record_requests=False) as quiet:
        conn = http.client.HTTPConnection(quiet.host, quiet.port, timeout=10)
        first = json.loads(request(conn, "POST", "/v1/chat/completions", CHAT)[1])
        second = json.loads(request(conn, "POST", "/v1/chat/completions", CHAT)[1])
        conn.close()
    assert quiet.requests == []
    assert first["id"] != second["id"]  # ids stay unique without the log


def test_custom_tools_are_accepted_but_never_called(connection) -> None:
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    response, body = request(connection, "POST", "/v1/chat/completions", {**CHAT, "tools": [custom]})
    assert response.status == 200
    assert json.loads(body)["choices"][0]["finish_reason"] == "stop"


def test_azure_openai_client_routes(server: FakeOpenAIServer) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.url, api_version="2024-10-21", api_key="x", max_retries=0
    )
    completion = client.chat.completions.create(model="my-deployment", messages=CHAT["messages"])
    assert completion.model == "my-deployment"
    assert server.requests[-1].path == "/openai/deployments/my-deployment/chat/completions"
    embedding = client.embeddings.create(model="embedder", input="x")
    assert len(embedding.data[0].embedding) == 1536


def test_server_lifecycle() -> None:
    server = FakeOpenAIServer()
    server.start()
    assert server.start() is server and server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    idle = http.client.HTTPConnection(server.host, server.port, timeout=5)
    idle.request("GET", "/v1/models")
    idle.getresponse().read()
    server.stop()  # returns although a keep-alive connection is still open
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()
    idle.close()


def test_knob_validation() -> None:
    with pytest.raises(TypeError, match="unknown fake-openai knob"):
        FakeOpenAIServer(latency=5)
    with pytest.raises(KnobError, match="chunks"):
        Knobs.from_kwargs(chunks=0)
    knobs = Knobs.from_kwargs(latency_ms=5, status=None).with_headers(
        {"x-fake-malformed": "true", "x-fake-status": "503"}
    )
    assert (knobs.latency_ms, knobs.malformed, knobs.status) == (5, True, 503)
    with pytest.raises(KnobError) as caught:
        knobs.with_headers({"x-fake-break-after": "-1"})
    assert caught.value.source == "x-fake-break-after"


@given(
    st.text(alphabet="ab .\n", min_size=1).map(str.rstrip).filter(bool),
    st.integers(min_value=1, max_value=60),
)
def test_split_pieces_rebuilds_the_text(text: str, pieces: int) -> None:
    parts = split_pieces(text, pieces)
    assert "".join(parts) == text
    assert len(parts) == min(pieces, len(text)) or len(parts) == pieces
    assert all(parts)


def test_cli_runs_in_the_foreground_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmtap", "fake-openai", "--port", "0", "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base_url = line.split("listening on ")[1].split()[0]
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_cli_reports_bad_options_and_busy_ports(server: FakeOpenAIServer) -> None:
    run = [sys.executable, "-m", "llmtap", "fake-openai"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    bad = subprocess.run([*run, "--chunks", "0"], capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 2 and "chunks" in bad.stderr and "Traceback" not in bad.stderr
    busy = subprocess.run(
        [*run, "--port", str(server.port)], capture_output=True, text=True, timeout=30, env=env
    )
    assert busy.returncode == 1 and "cannot listen" in busy.stderr and "Traceback" not in busy.stderr


def test_a_client_resetting_its_connection_prints_no_traceback(
    server: FakeOpenAIServer, connection, capfd
) -> None:
    reset_mid_request(server.port)
    assert "Traceback" not in capfd.readouterr().err
    assert request(connection, "GET", "/v1/models")[0].status == 200  # and it keeps serving
