"""The in-process transports deliver the very same replies as the socket server, with the same timing and failures."""

from __future__ import annotations

import importlib.util
import json
import re
import time

import openai
import pytest
from fake_openai_helpers import USER, collect, connection_errors, resolve
from llmtap.fake_openai import FakeOpenAIServer
from llmtap.fake_openai.transport import (
    async_http_client_class,
    async_transport,
    http_client_class,
    http_module,
    sync_transport,
)

pytestmark = pytest.mark.anyio
MODULES = [name for name in ("httpx2", "httpx") if importlib.util.find_spec(name)]
CHAT = {"model": "gpt-4o", "messages": USER}
# (method, path, JSON body, extra headers): one of every kind of reply
REQUESTS = [
    ("POST", "/v1/chat/completions", CHAT, {}),
    (
        "POST",
        "/v1/chat/completions",
        {**CHAT, "stream": True, "n": 2, "stream_options": {"include_usage": True}},
        {},
    ),
    ("POST", "/v1/responses", {"model": "o3", "input": "hi", "stream": True}, {}),
    (
        "POST",
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"},
        {},
    ),
    ("POST", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "stream": True}, {}),
    ("GET", "/v1/models", None, {}),
    ("POST", "/v1/chat/completions", CHAT, {"x-fake-status": "429"}),
    ("POST", "/v1/chat/completions", CHAT, {"x-fake-malformed": "1"}),
    ("POST", "/v1/nope", {}, {}),
]
_CLOCK = re.compile(rb'"created(_at)?":\d+')
_VOLATILE = {"date", "server", "connection", "keep-alive"}


def _normalised(status: int, headers, body: bytes) -> tuple:
    """A reply without what legitimately differs between two runs: the clock and socket-level headers."""
    kept = sorted((name.lower(), value) for name, value in headers.items() if name.lower() not in _VOLATILE)
    return status, kept, _CLOCK.sub(b'"created":0', body)


def _send(client, method: str, url: str, body, headers) -> tuple:
    response = (
        client.request(method, url, json=body, headers=headers)
        if body is not None
        else client.request(method, url, headers=headers)
    )
    return _normalised(response.status_code, response.headers, response.content)


@pytest.mark.parametrize("module", MODULES)
def test_sync_transport_replies_byte_for_byte_like_the_server(module: str) -> None:
    client_class = http_client_class(module)
    with FakeOpenAIServer() as server, client_class() as over_socket:
        expected = [_send(over_socket, m, server.url + p, b, h) for m, p, b, h in REQUESTS]
    with client_class(transport=sync_transport(module=module)) as in_process:
        got = [_send(in_process, m, "http://fake" + p, b, h) for m, p, b, h in REQUESTS]
    assert got == expected
    assert [status for status, _, _ in got] == [200] * 6 + [429, 200, 404]


@pytest.mark.parametrize("module", MODULES)
async def test_async_transport_replies_byte_for_byte_like_the_server(module: str) -> None:
    client_class = async_http_client_class(module)
    expected, got = [], []
    with FakeOpenAIServer() as server:
        async with client_class() as over_socket:
            for method, path, body, headers in REQUESTS:
                response = await over_socket.request(method, server.url + path, json=body, headers=headers)
                expected.append(_normalised(response.status_code, response.headers, response.content))
    async with client_class(transport=async_transport(module=module)) as in_process:
        for method, path, body, headers in REQUESTS:
            response = await in_process.request(method, "http://fake" + path, json=body, headers=headers)
            got.append(_normalised(response.status_code, response.headers, response.content))
    assert got == expected


def test_http_module_follows_the_installed_openai() -> None:
    uses = openai.DefaultHttpxClient.__mro__
    assert any(cls.__module__.startswith(http_module().__name__) for cls in uses)
    with pytest.raises(ValueError, match="httpx2, httpx"):
        http_module("requests")


@pytest.fixture(params=["sync", "async"])
async def in_process_client(request: pytest.FixtureRequest):
    """An SDK client whose HTTP client serves the fake API in-process (as benchmarks use it)."""
    options = {"base_url": "http://fake/v1", "api_key": "x", "max_retries": 0}
    if request.param == "sync":
        transport = sync_transport()
        http_client = openai.DefaultHttpxClient(transport=transport)
        with openai.OpenAI(**options, http_client=http_client) as client:
            yield client, transport
    else:
        transport = async_transport()
        async with openai.AsyncOpenAI(
            **options, http_client=openai.DefaultAsyncHttpxClient(transport=transport)
        ) as client:
            yield client, transport


async def test_sdk_over_the_transport(in_process_client) -> None:
    in_process_client, transport = in_process_client
    completion = await resolve(in_process_client.chat.completions.create(model="gpt-4o", messages=USER))
    chunks = await collect(
        in_process_client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    )
    assert (
        "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        == completion.choices[0].message.content
    )
    response = await resolve(in_process_client.responses.create(model="gpt-4o", input="hi"))
    assert response.output_text
    assert transport.requests[-1].json == {"model": "gpt-4o", "input": "hi"}


async def test_transport_applies_timing_and_failures(in_process_client) -> None:
    in_process_client, _ = in_process_client
    started = time.perf_counter()
    stream = in_process_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        extra_headers={
            "x-fake-latency-ms": "100",
            "x-fake-ttfc-ms": "100",
            "x-fake-chunk-delay-ms": "20",
            "x-fake-chunks": "3",
        },
    )
    chunks = await collect(stream)
    assert len(chunks) == 5
    assert time.perf_counter() - started >= 0.2 + 4 * 0.02 - 0.005
    received: list = []
    with pytest.raises(connection_errors()):
        await collect(
            in_process_client.chat.completions.create(
                model="gpt-4o", messages=USER, stream=True, extra_headers={"x-fake-break-after": "2"}
            ),
            into=received,
        )
    assert len(received) == 2
    with pytest.raises(openai.RateLimitError) as caught:
        await resolve(
            in_process_client.chat.completions.create(
                model="gpt-4o", messages=USER, extra_headers={"x-fake-status": "429"}
            )
        )
    assert json.loads(caught.value.response.content)["error"]["code"] == "rate_limit_exceeded"
