"""Every knob of the fake server, seen through the real openai SDK (sync and async): errors, timing, cut streams,
malformed bodies, usage overrides — per request (x-fake-* headers) and per server (keyword arguments).

Timing tests assert lower bounds only: a loaded machine may be slower, never faster.
"""

from __future__ import annotations

import time

import openai
import pytest
from fake_openai_helpers import USER, collect, connection_errors, open_client, resolve
from llmtap.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.anyio
pytest_plugins = ["fake_openai_helpers"]


def chat(sdk_client, headers: dict[str, str], **options):
    return sdk_client.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=headers, **options)


# ---- HTTP errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (403, openai.PermissionDeniedError, "invalid_request_error"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (409, openai.ConflictError, "invalid_request_error"),
        (422, openai.UnprocessableEntityError, "invalid_request_error"),
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
async def test_status_maps_to_the_sdk_exception(
    sdk_client, status: int, error_class: type, error_type: str
) -> None:
    with pytest.raises(error_class) as caught:
        await resolve(chat(sdk_client, {"x-fake-status": str(status)}))
    error = caught.value
    assert error.status_code == status
    assert error.type == error_type
    assert set(error.body) == {"message", "type", "param", "code"}
    assert error.message and error.request_id.startswith("req_")
    if status == 401:
        assert error.code == "invalid_api_key"
    if status == 429:
        assert error.code == "rate_limit_exceeded"
        assert error.response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in error.response.headers


async def test_retry_after_header(sdk_client) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await resolve(chat(sdk_client, {"x-fake-status": "429", "x-fake-retry-after": "7"}))
    assert caught.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError) as caught:
        await resolve(chat(sdk_client, {"x-fake-status": "503", "x-fake-retry-after": "2.5"}))
    assert caught.value.response.headers["retry-after"] == "2.5"


async def test_errors_on_every_endpoint(sdk_client) -> None:
    headers = {"x-fake-status": "500"}
    calls = [
        lambda: sdk_client.responses.create(model="gpt-4o", input="hi", extra_headers=headers),
        lambda: sdk_client.embeddings.create(
            model="text-embedding-3-small", input="hi", extra_headers=headers
        ),
        lambda: sdk_client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="hi", extra_headers=headers
        ),
        lambda: sdk_client.models.list(extra_headers=headers),
    ]
    for call in calls:
        with pytest.raises(openai.InternalServerError):
            await resolve(call())


async def test_error_attempts_let_sdk_retries_succeed(
    client_kind: str, fake_server: FakeOpenAIServer
) -> None:
    headers = {"x-fake-status": "503", "x-fake-error-attempts": "2", "x-fake-retry-after": "0.01"}
    before = len(fake_server.requests)
    async with open_client(client_kind, fake_server.base_url, max_retries=2) as sdk_client:
        completion = await resolve(chat(sdk_client, headers))
    assert completion.choices[0].message.content
    attempts = fake_server.requests[before:]
    assert [request.headers.get("x-stainless-retry-count") for request in attempts] == ["0", "1", "2"]


async def test_server_wide_status_and_header_override(client_kind: str) -> None:
    with FakeOpenAIServer(status=500) as failing:
        async with open_client(client_kind, failing.base_url) as sdk_client:
            with pytest.raises(openai.InternalServerError):
                await resolve(chat(sdk_client, {}))
            with pytest.raises(openai.RateLimitError):
                await resolve(chat(sdk_client, {"x-fake-status": "429"}))


async def test_api_key_is_enforced_when_configured(client_kind: str) -> None:
    with FakeOpenAIServer(api_key="sk-right") as guarded:
        async with open_client(client_kind, guarded.base_url, api_key="sk-wrong") as sdk_client:
            with pytest.raises(openai.AuthenticationError):
                await resolve(chat(sdk_client, {}))
        async with open_client(client_kind, guarded.base_url, api_key="sk-right") as sdk_client:
            assert (await resolve(chat(sdk_client, {}))).choices


async def test_invalid_knob_is_a_clear_400(sdk_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await resolve(chat(sdk_client, {"x-fake-latency-ms": "soon"}))
    assert caught.value.body["param"] == "x-fake-latency-ms"
    assert "soon" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await resolve(chat(sdk_client, {"x-fake-status": "200"}))
    assert "between 400 and 599" in caught.value.message


# ---- timing -------------------------------------------------------------------------------------------------------


async def test_latency(sdk_client) -> None:
    started = time.perf_counter()
    await resolve(chat(sdk_client, {"x-fake-latency-ms": "200"}))
    assert time.perf_counter() - started >= 0.2


async def test_latency_applies_to_errors_too(sdk_client) -> None:
    started = time.perf_counter()
    with pytest.raises(openai.InternalServerError):
        await resolve(chat(sdk_client, {"x-fake-latency-ms": "150", "x-fake-status": "500"}))
    assert time.perf_counter() - started >= 0.15


async def test_time_to_first_chunk_and_chunk_delay(sdk_client) -> None:
    started = time.perf_counter()
    stream = await resolve(
        chat(
            sdk_client,
            {"x-fake-ttfc-ms": "200", "x-fake-chunk-delay-ms": "30", "x-fake-chunks": "4"},
            stream=True,
        )
    )
    arrivals = []
    if hasattr(stream, "__aiter__"):
        async for _ in stream:
            arrivals.append(time.perf_counter() - started)
    else:
        for _ in stream:
            arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 6  # role, 4 content chunks, finish
    assert arrivals[0] >= 0.2
    # then five gaps (content ×4, finish) before the last chunk; measured from the start, since the client may
    # hand over the first chunk late but never a later one early (timer granularity aside)
    assert arrivals[-1] >= 0.2 + 5 * 0.03 - 0.005


async def test_server_wide_latency(client_kind: str) -> None:
    with FakeOpenAIServer(latency_ms=150) as slow:
        async with open_client(client_kind, slow.base_url) as sdk_client:
            started = time.perf_counter()
            await resolve(sdk_client.models.list())
            assert time.perf_counter() - started >= 0.15


# ---- stream shape -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [1, 3, 40])
async def test_chunk_count(sdk_client, chunks: int) -> None:
    plain = await resolve(chat(sdk_client, {}))
    streamed = await collect(chat(sdk_client, {"x-fake-chunks": str(chunks)}, stream=True))
    content = [chunk.choices[0].delta.content for chunk in streamed[1:-1]]
    assert len(content) == chunks
    assert "".join(content) == plain.choices[0].message.content


async def test_broken_stream_raises_from_the_iterator(sdk_client) -> None:
    received: list = []
    with pytest.raises(connection_errors()):
        await collect(chat(sdk_client, {"x-fake-break-after": "3"}, stream=True), into=received)
    assert len(received) == 3


async def test_broken_responses_stream(sdk_client) -> None:
    received: list = []
    with pytest.raises(connection_errors()):
        await collect(
            sdk_client.responses.create(
                model="gpt-4o", input="hi", stream=True, extra_headers={"x-fake-break-after": "5"}
            ),
            into=received,
        )
    assert [event.type for event in received][-1] == "response.output_text.delta"
    assert len(received) == 5


async def test_break_after_beyond_the_end_still_breaks(sdk_client) -> None:
    received: list = []
    with pytest.raises(connection_errors()):
        await collect(chat(sdk_client, {"x-fake-break-after": "1000"}, stream=True), into=received)
    assert received[-1].choices[0].finish_reason == "stop"  # everything but [DONE]


async def test_malformed_body_raises(sdk_client) -> None:
    with pytest.raises(ValueError):
        await resolve(chat(sdk_client, {"x-fake-malformed": "1"}))


async def test_malformed_stream_event_raises(sdk_client) -> None:
    received: list = []
    with pytest.raises(ValueError):
        await collect(chat(sdk_client, {"x-fake-malformed": "1"}, stream=True), into=received)
    assert len(received) == 1


async def test_server_keeps_serving_after_errors_and_streams(
    client_kind: str, fake_server: FakeOpenAIServer
) -> None:
    """Every reply is framed correctly, so one client (one keep-alive pool) serves the whole sequence."""
    async with open_client(client_kind, fake_server.base_url) as sdk_client:
        before = len(fake_server.requests)
        await resolve(chat(sdk_client, {}))
        with pytest.raises(openai.RateLimitError):
            await resolve(chat(sdk_client, {"x-fake-status": "429"}))
        await collect(chat(sdk_client, {}, stream=True))
        await resolve(chat(sdk_client, {}))
    assert len(fake_server.requests) - before == 4


# ---- usage overrides ----------------------------------------------------------------------------------------------


async def test_cached_and_reasoning_token_knobs(sdk_client) -> None:
    completion = await resolve(
        chat(sdk_client, {"x-fake-cached-tokens": "5", "x-fake-reasoning-tokens": "40"})
    )
    assert completion.usage.prompt_tokens_details.cached_tokens == 5
    assert completion.usage.completion_tokens_details.reasoning_tokens == 40
    response = await resolve(
        sdk_client.responses.create(
            model="gpt-4o", input="hi there", extra_headers={"x-fake-cached-tokens": "99"}
        )
    )
    assert response.usage.input_tokens_details.cached_tokens == response.usage.input_tokens  # capped
