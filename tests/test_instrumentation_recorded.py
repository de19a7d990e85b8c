"""What is recorded in edge cases found by external checks (issue 19): raw Responses bodies, streams that open with
an empty chunk, app errors inside a stream, interrupted streams, error type names, usage details, ``extra_body``.

Each test runs the real SDK over HTTP against the fake server, first plain then instrumented (``compare``), so the
app must see no difference, and then checks the one span.
"""

from __future__ import annotations

import pytest
from fake_openai_helpers import USER, collect, open_client, resolve
from instrumentation_helpers import check_span, compare

pytest_plugins = ["instrumentation_fixtures"]  # the SDK-against-fake-server fixtures
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_attribute_warnings")]
MODEL = "gpt-4o-mini"


# ---- raw responses ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["create", "parse"])
async def test_raw_responses_body_is_read(pipeline, server, kind, method) -> None:
    """A Responses body always carries ``"error": null``; it is a success, not an error body."""

    async def scenario(client, _):
        call = getattr(client.responses.with_raw_response, method)
        raw = await resolve(call(model=MODEL, input="What is the weather like in Paris today?"))
        parsed = await resolve(raw.parse())
        return raw.status_code, parsed.output_text

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.response.id"].startswith("resp_")
    assert attrs["gen_ai.response.model"] == MODEL
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0


# ---- streams ------------------------------------------------------------------------------------------------------


async def test_stream_identity_skips_an_empty_prompt_filter_chunk(pipeline, server, kind) -> None:
    """Azure opens a stream with a ``prompt_filter_results`` chunk whose id and model are empty."""

    async def scenario(client, partial):
        stream = client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, extra_headers={"x-fake-prompt-filter": "1"}
        )
        return await collect(stream, partial)

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[1][0]["model"] == ""  # the knob did send the empty chunk first
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["gen_ai.response.model"] == MODEL
    assert attrs["openai.response.service_tier"] == "default"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


class AppError(Exception):
    """Raised by the app's own code while it reads a stream."""


@pytest.mark.parametrize("inside_loop", [True, False])
async def test_app_error_inside_a_stream_block_is_recorded(pipeline, server, kind, inside_loop) -> None:
    """An exception that ends the stream early is an error of the call's consumer: ERROR, with its type; one raised
    after the stream was read to its end leaves the call a success."""

    async def scenario(client, partial):
        stream = await resolve(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        if kind == "sync":
            with stream:
                for chunk in stream:
                    partial.append(chunk)
                    if inside_loop:
                        raise AppError("the app failed on the first chunk")
                raise AppError("the app failed after the stream")
        async with stream:
            async for chunk in stream:
                partial.append(chunk)
                if inside_loop:
                    raise AppError("the app failed on the first chunk")
            raise AppError("the app failed after the stream")

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[1] is AppError  # the app sees its own exception, unchanged
    span = pipeline.one_span()
    if not inside_loop:  # the whole answer had arrived: the call itself succeeded
        attrs = check_span(span, "chat", MODEL, stream=True)
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        return
    attrs = check_span(span, "chat", MODEL, stream=True, error=AppError.__qualname__)
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert span.events and span.events[0].name == "exception"


# ---- finish reasons -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses", "completions"])
async def test_interrupted_stream_finish_reason_is_error(pipeline, server, kind, api) -> None:
    """A stream cut before its end has no finish reason of its own: ``error``, as the official instrumentation says."""
    cut = {"x-fake-break-after": "3"}

    async def scenario(client, partial):
        if api == "chat":
            stream = client.chat.completions.create(
                model=MODEL, messages=USER, stream=True, extra_headers=cut
            )
        elif api == "responses":
            stream = client.responses.create(model=MODEL, input="Hello there", stream=True, extra_headers=cut)
        else:
            stream = client.completions.create(
                model=MODEL, prompt="Hello there", stream=True, extra_headers=cut
            )
        return await collect(stream, partial)

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[0] == "error"
    attrs = check_span(
        pipeline.one_span(),
        "chat" if api != "completions" else "text_completion",
        MODEL,
        stream=True,
        error=result[1].__qualname__,
    )
    assert attrs["gen_ai.response.finish_reasons"] == ("error",)


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_computer_call_finish_reason_is_tool_calls(pipeline, server, kind, stream) -> None:
    async def scenario(client, partial):
        call = client.responses.create(
            model=MODEL, input="Click OK", stream=stream, extra_headers={"x-fake-computer-call": "1"}
        )
        if stream:
            return await collect(call, partial)
        return await resolve(call)

    result = await compare(pipeline, kind, server.base_url, scenario)
    final = result[1][-1]["response"] if stream else result[1]
    assert final["output"][0]["type"] == "computer_call"
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=stream)
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)


# ---- raw streamed bodies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["exhausted", "closed"])
async def test_raw_stream_read_as_bytes_ends_its_span(pipeline, server, kind, how) -> None:
    """``with_raw_response(stream=True)`` read through ``http_response``: the span ends with the body, not at GC."""
    pipeline.instrument()
    async with open_client(kind, server.base_url) as client:
        raw = await resolve(
            client.chat.completions.with_raw_response.create(model=MODEL, messages=USER, stream=True)
        )
        body = raw.http_response
        received = []
        if kind == "sync":
            for piece in body.iter_bytes():
                received.append(piece)
                if how == "closed":
                    break
            if how == "closed":
                body.close()
        else:
            async for piece in body.aiter_bytes():
                received.append(piece)
                if how == "closed":
                    break
            if how == "closed":
                await body.aclose()
        assert b"".join(received).startswith(b"data: ")
        attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)  # ended while ``raw`` is alive
        assert attrs["http.response.status_code"] == 200
        del raw


async def test_streaming_response_loop_left_after_first_chunk(pipeline, server, kind) -> None:
    """``with_streaming_response``: the stream ``parse()`` gave ends the span, even when the block closes first."""

    async def scenario(client, partial):
        manager = client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=USER, stream=True
        )
        if kind == "sync":
            with manager as response:
                for chunk in response.parse():
                    partial.append(chunk)
                    break
        else:
            async with manager as response:
                async for chunk in await response.parse():
                    partial.append(chunk)
                    break
        return partial

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["gen_ai.response.model"] == MODEL
    assert "gen_ai.response.time_to_first_chunk" in attrs


# ---- usage --------------------------------------------------------------------------------------------------------

DETAILS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "llmtap.usage.audio.input_tokens",
    "llmtap.usage.audio.output_tokens",
)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("usage", ["bare", "details", "cache_write"])
async def test_usage_details_are_what_the_api_sent(pipeline, server, kind, api, usage) -> None:
    """No detail the API did not send (not even a 0), and every one it did, cache writes and audio included."""
    headers = {"bare": {"x-fake-bare-usage": "1"}, "cache_write": {"x-fake-cache-write-tokens": "3"}}
    headers = {**headers.get(usage, {}), "x-fake-cached-tokens": "0"}

    async def scenario(client, _):
        if api == "chat":
            return await resolve(
                client.chat.completions.create(model=MODEL, messages=USER, extra_headers=headers)
            )
        return await resolve(client.responses.create(model=MODEL, input="Hello there", extra_headers=headers))

    result = await compare(pipeline, kind, server.base_url, scenario)
    sent = result[1]["usage"]
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    recorded = {key: attrs[key] for key in DETAILS if key in attrs}
    if usage == "bare":
        assert recorded == {}
        return
    prompt = sent["prompt_tokens_details" if api == "chat" else "input_tokens_details"]
    output = sent["completion_tokens_details" if api == "chat" else "output_tokens_details"]
    expected = {
        "gen_ai.usage.cache_read.input_tokens": prompt["cached_tokens"],
        "gen_ai.usage.reasoning.output_tokens": output["reasoning_tokens"],
    }
    if prompt.get("cache_write_tokens") is not None:
        expected["gen_ai.usage.cache_creation.input_tokens"] = prompt["cache_write_tokens"]
    if api == "chat":
        expected["llmtap.usage.audio.input_tokens"] = prompt["audio_tokens"]
        expected["llmtap.usage.audio.output_tokens"] = output["audio_tokens"]
    assert recorded == expected
    if usage == "cache_write":
        assert recorded["gen_ai.usage.cache_creation.input_tokens"] == 3


# ---- extra_body ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_request_parameters_given_through_extra_body(pipeline, server, kind, api) -> None:
    """The SDK merges ``extra_body`` into the request body: what it sends is what is recorded."""
    limit = "max_tokens" if api == "chat" else "max_output_tokens"
    extra = {limit: 5, "service_tier": "flex", "temperature": 0.5}

    async def scenario(client, _):
        if api == "chat":
            call = client.chat.completions.create(
                model=MODEL, messages=USER, temperature=1.0, extra_body=extra
            )
        else:
            call = client.responses.create(
                model=MODEL, input="Hello there", temperature=1.0, extra_body=extra
            )
        return await resolve(call)

    await compare(pipeline, kind, server.base_url, scenario)
    assert server.requests[-1].json["temperature"] == 0.5  # the SDK did send extra_body's value
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.request.max_tokens"] == 5
    assert attrs["openai.request.service_tier"] == "flex"
    assert (
        attrs["gen_ai.request.temperature"] == 0.5
    )  # extra_body wins over the argument, as in the body sent
