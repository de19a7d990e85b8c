"""The real openai SDK (sync and async clients) against the fake server over 127.0.0.1, endpoint by endpoint.

This file also runs under openai 1.x and 2.x (see test_fake_openai_compat.py), so it only uses SDK features those
versions share.
"""

from __future__ import annotations

import inspect
from typing import Any

import openai
import pytest
from llmtap.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, server: FakeOpenAIServer):
    """An OpenAI or AsyncOpenAI client; tests call it through ``resolve``/``collect`` so one body covers both."""
    if request.param == "sync":
        with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as sync_client:
            yield sync_client
    else:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test-key", max_retries=0
        ) as async_client:
            yield async_client


async def resolve(value: Any) -> Any:
    """The result of a sync call, or of an awaited async one."""
    return await value if inspect.isawaitable(value) else value


async def collect(stream: Any) -> list:
    """All items of a sync or async SDK stream."""
    stream = await resolve(stream)
    if hasattr(stream, "__aiter__"):
        return [item async for item in stream]
    return list(stream)


# ---- chat completions ---------------------------------------------------------------------------------------------


async def test_chat_plain(client) -> None:
    completion = await resolve(client.chat.completions.create(model="gpt-4o-mini", messages=USER))
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint.startswith("fp_")
    assert completion.created > 1_700_000_000
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    words = choice.message.content.split()
    assert 8 <= len(words) <= 24
    usage = completion.usage
    assert usage.prompt_tokens == len(["user", "What", "is", "the", "weather", "like", "in", "Paris", "today?"])
    assert usage.completion_tokens == len(words)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_is_deterministic_and_input_dependent(client) -> None:
    first = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER))
    again = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER))
    other = await resolve(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Something else"}]
        )
    )
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != again.id  # ids stay unique per request


async def test_chat_reasoning_model_reports_reasoning_tokens(client) -> None:
    completion = await resolve(client.chat.completions.create(model="o4-mini", messages=USER))
    details = completion.usage.completion_tokens_details
    assert details.reasoning_tokens > 0
    visible = len(completion.choices[0].message.content.split())
    assert completion.usage.completion_tokens == visible + details.reasoning_tokens


async def test_chat_long_prompt_reports_cached_tokens(client) -> None:
    long_prompt = [{"role": "user", "content": "word " * 1500}]
    completion = await resolve(client.chat.completions.create(model="gpt-4o", messages=long_prompt))
    cached = completion.usage.prompt_tokens_details.cached_tokens
    assert cached % 128 == 0
    assert 1024 <= cached <= completion.usage.prompt_tokens


async def test_chat_max_tokens_truncates_with_length(client) -> None:
    completion = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=3))
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].message.content.split()) == 3
    assert completion.usage.completion_tokens == 3


async def test_chat_n_choices(client) -> None:
    completion = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER, n=3))
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in completion.choices}) == 3
    words = sum(len(choice.message.content.split()) for choice in completion.choices)
    assert completion.usage.completion_tokens == words


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


async def test_chat_tool_call_then_answer(client) -> None:
    import json

    completion = await resolve(
        client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")
    assert 1 <= arguments["days"] <= 7
    follow_up = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    answer = await resolve(
        client.chat.completions.create(model="gpt-4o", messages=follow_up, tools=[WEATHER_TOOL])
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content


async def test_chat_tool_choice_none_and_required(client) -> None:
    plain = await resolve(
        client.chat.completions.create(
            model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
        )
    )
    assert plain.choices[0].message.tool_calls is None
    forced = await resolve(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[*USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"


async def test_chat_stream_with_usage(client) -> None:
    chunks = await collect(
        client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    plain = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content == plain.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == plain.usage.model_dump()


async def test_chat_stream_without_usage_and_n(client) -> None:
    chunks = await collect(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True, n=2))
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    plain = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER, n=2))
    assert [texts[0], texts[1]] == [choice.message.content for choice in plain.choices]


async def test_chat_stream_tool_call(client) -> None:
    chunks = await collect(
        client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], stream=True)
    )
    plain = await resolve(client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]))
    deltas = [chunk.choices[0].delta for chunk in chunks]
    assert deltas[0].tool_calls[0].function.name == "get_weather"
    arguments = "".join(
        call.function.arguments or "" for d in deltas if d.tool_calls for call in d.tool_calls
    )
    assert arguments == plain.choices[0].message.tool_calls[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_chat_bad_request_is_a_clear_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await resolve(client.chat.completions.create(model="gpt-4o", messages=[]))
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "messages"
    assert "empty array" in caught.value.message
