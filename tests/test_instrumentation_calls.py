"""Every OpenAI call form, sync and async, instrumented vs not, against the fake server over 127.0.0.1.

Each test runs the same scenario twice on fresh clients, first with the original SDK methods and then
instrumented, asserts the app saw exactly the same results / exceptions / stream contents, and checks the one
span the instrumented run produced.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import openai
import pydantic
import pytest
from fake_openai_helpers import USER, collect, open_client, resolve
from instrumentation_helpers import check_span, compare
from llmtap.fake_openai import FakeOpenAIServer

pytest_plugins = ["instrumentation_fixtures"]  # the SDK-against-fake-server fixtures
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_attribute_warnings")]
MODEL = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class Person(pydantic.BaseModel):
    name: str
    age: int


def content(attrs: dict[str, Any], key: str) -> Any:
    return json.loads(attrs[key])


# ---- chat completions ---------------------------------------------------------------------------------------------


async def test_chat_plain(pipeline, server, kind) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER]

    async def scenario(client, _):
        return await resolve(
            client.chat.completions.create(
                model=MODEL,
                messages=messages,
                temperature=0.3,
                top_p=0.9,
                max_tokens=50,
                seed=7,
                stop=["END"],
                frequency_penalty=0.1,
                presence_penalty=0.2,
                metadata={"team": "search"},
                user="u-1",
            )
        )

    _status, result = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=False)
    assert attrs["gen_ai.request.temperature"] == 0.3 and attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.max_tokens"] == 50 and attrs["gen_ai.request.seed"] == 7
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert (
        attrs["gen_ai.request.frequency_penalty"] == 0.1 and attrs["gen_ai.request.presence_penalty"] == 0.2
    )
    assert attrs["llmtap.metadata.team"] == "search" and attrs["user.id"] == "u-1"
    assert attrs["gen_ai.response.model"] == MODEL
    assert attrs["gen_ai.response.id"].startswith("chatcmpl-")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == result["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == result["usage"]["completion_tokens"]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 0
    assert content(attrs, "gen_ai.input.messages") == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": USER[0]["content"]}]},
    ]
    assert content(attrs, "gen_ai.output.messages") == [
        {
            "role": "assistant",
            "finish_reason": "stop",
            "parts": [{"type": "text", "content": result["choices"][0]["message"]["content"]}],
        }
    ]
    assert len(attrs["llmtap.prompt.hash"]) == 64


async def test_chat_tools(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER_TOOL]))

    _status, result = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    (call,) = result["choices"][0]["message"]["tool_calls"]
    (message,) = content(attrs, "gen_ai.output.messages")
    assert message["finish_reason"] == "tool_call"
    assert message["parts"] == [
        {
            "type": "tool_call",
            "id": message["parts"][0]["id"],
            "name": "get_weather",
            "arguments": json.loads(call["function"]["arguments"]),
        }
    ]
    assert content(attrs, "gen_ai.tool.definitions") == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": WEATHER_TOOL["function"]["parameters"],
        }
    ]


async def test_chat_tool_result_round_trip(pipeline, server, kind) -> None:
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C and sunny"},
    ]

    async def scenario(client, _):
        return await resolve(
            client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL])
        )

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    inputs = content(attrs, "gen_ai.input.messages")
    assert inputs[1] == {
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
        ],
    }
    assert inputs[2] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18°C and sunny"}],
    }


async def test_chat_n_choices(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(client.chat.completions.create(model=MODEL, messages=USER, n=3))

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.request.choice.count"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "stop", "stop")
    assert len(content(attrs, "gen_ai.output.messages")) == 3


async def test_chat_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        stream = client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
        return await collect(stream, partial)

    _status, chunks = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert content(attrs, "gen_ai.output.messages")[0]["parts"] == [{"type": "text", "content": text}]
    assert attrs["gen_ai.usage.output_tokens"] == chunks[-1]["usage"]["completion_tokens"]
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < 5
    assert pipeline.metric_points("gen_ai.client.operation.time_to_first_chunk")


async def test_chat_stream_tool_call(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        return await collect(
            client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER_TOOL], stream=True),
            partial,
        )

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    (part,) = content(attrs, "gen_ai.output.messages")[0]["parts"]
    assert (
        part["type"] == "tool_call" and part["name"] == "get_weather" and isinstance(part["arguments"], dict)
    )


def chat_parse(client: Any) -> Any:
    completions = client.chat.completions
    return completions.parse if hasattr(completions, "parse") else client.beta.chat.completions.parse


async def test_chat_parse(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(chat_parse(client)(model=MODEL, messages=USER, response_format=Person))

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.output.type"] == "json"
    assert json.loads(content(attrs, "gen_ai.output.messages")[0]["parts"][0]["content"])


async def test_chat_stream_helper(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        manager = client.chat.completions.stream(model=MODEL, messages=USER)
        if kind == "sync":
            with manager as stream:
                partial.extend(event.type for event in stream)
                return partial, stream.get_final_completion()
        async with manager as stream:
            async for event in stream:
                partial.append(event.type)
            return partial, await stream.get_final_completion()

    _status, (_events, final) = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert (
        content(attrs, "gen_ai.output.messages")[0]["parts"][0]["content"]
        == final["choices"][0]["message"]["content"]
    )


async def test_chat_stream_helper_closed_early(pipeline, server, kind) -> None:
    """ChatCompletionStream.close() closes the HTTP response itself: the span must still end, right then."""

    async def scenario(client, partial):
        manager = client.chat.completions.stream(model=MODEL, messages=USER)
        if kind == "sync":
            with manager as stream:
                partial.append(next(iter(stream)).type)
        else:
            async with manager as stream:
                async for event in stream:
                    partial.append(event.type)
                    break
        return partial

    await compare(pipeline, kind, server.base_url, scenario)
    check_span(pipeline.one_span(), "chat", MODEL, stream=True)


# ---- responses ----------------------------------------------------------------------------------------------------


async def test_responses_create(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(
            client.responses.create(
                model=MODEL,
                input="Weather in Paris?",
                instructions="Answer in French.",
                max_output_tokens=64,
                temperature=0.5,
            )
        )

    _status, result = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=False)
    assert attrs["openai.api.type"] == "responses"
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert content(attrs, "gen_ai.system_instructions") == [{"type": "text", "content": "Answer in French."}]
    assert content(attrs, "gen_ai.input.messages") == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
    ]
    assert attrs["gen_ai.response.id"].startswith("resp")
    assert attrs["gen_ai.usage.input_tokens"] == result["usage"]["input_tokens"]
    text = content(attrs, "gen_ai.output.messages")[0]["parts"][-1]["content"]
    assert text == result["output"][-1]["content"][0]["text"]


async def test_responses_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        return await collect(
            client.responses.create(model=MODEL, input="Tell me a story", stream=True), partial
        )

    _status, events = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    final = events[-1]["response"]
    assert attrs["gen_ai.usage.output_tokens"] == final["usage"]["output_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


async def test_responses_parse(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(client.responses.parse(model=MODEL, input="Who is it?", text_format=Person))

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.output.type"] == "json"


async def test_responses_stream_helper(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        manager = client.responses.stream(model=MODEL, input="Tell me a story")
        if kind == "sync":
            with manager as stream:
                partial.extend(event.type for event in stream)
                return partial, stream.get_final_response()
        async with manager as stream:
            async for event in stream:
                partial.append(event.type)
            return partial, await stream.get_final_response()

    await compare(pipeline, kind, server.base_url, scenario)
    check_span(pipeline.one_span(), "chat", MODEL, stream=True)


# ---- embeddings, legacy completions -------------------------------------------------------------------------------


async def test_embeddings(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(client.embeddings.create(model="text-embedding-3-small", input=["a", "b"]))

    _status, result = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "embeddings", "text-embedding-3-small")
    assert attrs["gen_ai.embeddings.dimension.count"] == len(result["data"][0]["embedding"])
    assert attrs["gen_ai.usage.input_tokens"] == result["usage"]["prompt_tokens"]


async def test_legacy_completions(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5)
        )

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "text_completion", "gpt-3.5-turbo-instruct", stream=False)
    assert content(attrs, "gen_ai.input.messages") == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hi"}]}
    ]


async def test_legacy_completions_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        return await collect(
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", stream=True), partial
        )

    _status, chunks = await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "text_completion", "gpt-3.5-turbo-instruct", stream=True)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert content(attrs, "gen_ai.output.messages")[0]["parts"][0]["content"] == text


# ---- raw and streaming responses ----------------------------------------------------------------------------------


async def test_with_raw_response(pipeline, server, kind) -> None:
    async def scenario(client, _):
        raw = await resolve(client.chat.completions.with_raw_response.create(model=MODEL, messages=USER))
        return raw.status_code, raw.headers.get("content-type"), raw.parse()

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert content(attrs, "gen_ai.output.messages")


async def test_with_raw_response_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        raw = await resolve(
            client.chat.completions.with_raw_response.create(model=MODEL, messages=USER, stream=True)
        )
        return await collect(raw.parse(), partial)

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert content(attrs, "gen_ai.output.messages")[0]["parts"]


async def test_with_streaming_response_parse(pipeline, server, kind) -> None:
    async def scenario(client, _):
        manager = client.chat.completions.with_streaming_response.create(model=MODEL, messages=USER)
        if kind == "sync":
            with manager as response:
                return response.status_code, response.parse()
        async with manager as response:
            return response.status_code, await response.parse()

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert content(attrs, "gen_ai.output.messages")


async def test_with_streaming_response_json_without_parse(pipeline, server, kind) -> None:
    async def scenario(client, _):
        manager = client.chat.completions.with_streaming_response.create(model=MODEL, messages=USER)
        if kind == "sync":
            with manager as response:
                return response.json()["choices"]
        async with manager as response:
            return (await response.json())["choices"]

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)  # decoded from the body the app read


async def test_with_streaming_response_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        manager = client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=USER, stream=True
        )
        if kind == "sync":
            with manager as response:
                return await collect(response.parse(), partial)
        async with manager as response:
            return await collect(await response.parse(), partial)

    await compare(pipeline, kind, server.base_url, scenario)
    check_span(pipeline.one_span(), "chat", MODEL, stream=True)


async def test_with_streaming_response_raw_lines(pipeline, server, kind) -> None:
    """The app reads the SSE lines itself: nothing is parsed for it, the span ends when the response closes."""

    async def scenario(client, partial):
        manager = client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=USER, stream=True
        )
        if kind == "sync":
            with manager as response:
                partial.extend(line for line in response.iter_lines() if line)
        else:
            async with manager as response:
                partial.extend([line async for line in response.iter_lines() if line])
        return [line for line in partial if not line.startswith("data: {")]

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert attrs["http.response.status_code"] == 200


# ---- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(400, "BadRequestError"), (429, "RateLimitError"), (500, "InternalServerError")]
)
async def test_http_errors(pipeline, server, kind, status, error) -> None:
    async def scenario(client, _):
        return await resolve(
            client.chat.completions.create(
                model=MODEL, messages=USER, extra_headers={"x-fake-status": str(status)}
            )
        )

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[0] == "error" and result[1].__name__ == error
    span = pipeline.one_span()
    attrs = check_span(span, "chat", MODEL, error=error)
    assert attrs["http.response.status_code"] == status
    assert span.events and span.events[0].name == "exception"
    duration = pipeline.metric_points("gen_ai.client.operation.duration")
    assert any(p.attributes.get("error.type") == error for p in duration)


async def test_timeout(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(
            client.chat.completions.create(
                model=MODEL, messages=USER, timeout=0.05, extra_headers={"x-fake-latency-ms": "1000"}
            )
        )

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[1] is openai.APITimeoutError
    check_span(pipeline.one_span(), "chat", MODEL, error="APITimeoutError")


async def test_connection_refused(pipeline, kind) -> None:
    with FakeOpenAIServer() as gone:
        base_url = gone.base_url  # a port that was ours a moment ago and is now closed

    async def scenario(client, _):
        return await resolve(client.chat.completions.create(model=MODEL, messages=USER))

    result = await compare(pipeline, kind, base_url, scenario)
    assert result[1] is openai.APIConnectionError
    attrs = check_span(pipeline.one_span(), "chat", MODEL, error="APIConnectionError")
    assert "gen_ai.input.messages" in attrs  # the request side is recorded even though no answer came


async def test_broken_stream(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        return await collect(
            client.chat.completions.create(
                model=MODEL, messages=USER, stream=True, extra_headers={"x-fake-break-after": "3"}
            ),
            partial,
        )

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert result[0] == "error" and len(result[3]) == 3
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True, error=result[1].__qualname__)
    assert content(attrs, "gen_ai.output.messages")[0]["parts"]  # what arrived before the break is kept


async def test_malformed_body(pipeline, server, kind) -> None:
    async def scenario(client, _):
        return await resolve(
            client.chat.completions.create(
                model=MODEL, messages=USER, extra_headers={"x-fake-malformed": "1"}
            )
        )

    result = await compare(pipeline, kind, server.base_url, scenario)
    assert len(pipeline.spans()) == 1
    if result[0] == "error":
        check_span(pipeline.one_span(), "chat", MODEL, error=result[1].__qualname__)


# ---- abandoned streams --------------------------------------------------------------------------------------------


async def test_stream_break_out_ends_span(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        stream = await resolve(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        if kind == "sync":
            for chunk in stream:
                partial.append(chunk)
                break
        else:
            async for chunk in stream:
                partial.append(chunk)
                break
        await resolve(stream.close())
        return partial

    await compare(pipeline, kind, server.base_url, scenario)
    attrs = check_span(pipeline.one_span(), "chat", MODEL, stream=True)
    assert "gen_ai.response.time_to_first_chunk" in attrs


async def test_stream_garbage_collected_ends_span(pipeline, server, kind) -> None:
    pipeline.instrument()
    async with open_client(kind, server.base_url) as client:
        stream = await resolve(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        first = next(stream) if kind == "sync" else await stream.__anext__()
        assert first.choices is not None
        assert pipeline.spans() == ()
        del stream
        gc.collect()
        check_span(pipeline.one_span(), "chat", MODEL, stream=True)


async def test_stream_context_manager(pipeline, server, kind) -> None:
    async def scenario(client, partial):
        stream = await resolve(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        if kind == "sync":
            with stream as entered:
                assert entered is stream
                partial.append(next(entered))
        else:
            async with stream as entered:
                assert entered is stream
                partial.append(await entered.__anext__())
        return partial

    await compare(pipeline, kind, server.base_url, scenario)
    check_span(pipeline.one_span(), "chat", MODEL, stream=True)


async def test_stream_is_still_an_sdk_stream(pipeline, server, kind) -> None:
    pipeline.instrument()
    async with open_client(kind, server.base_url) as client:
        stream = await resolve(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        assert isinstance(stream, openai.Stream if kind == "sync" else openai.AsyncStream)
        assert stream.response.status_code == 200
        await collect(stream)
    assert len(pipeline.spans()) == 1
