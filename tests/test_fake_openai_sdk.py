"""The real openai SDK (sync and async clients) against the fake server over 127.0.0.1, endpoint by endpoint.

This file also runs under openai 1.x and 2.x (see test_fake_openai_compat.py), so it only uses SDK features those
versions share.
"""

from __future__ import annotations

from typing import Any, Literal

import openai
import pydantic
import pytest
from fake_openai_helpers import USER, collect, resolve

pytestmark = pytest.mark.anyio
pytest_plugins = ["fake_openai_helpers"]


# ---- chat completions ---------------------------------------------------------------------------------------------


async def test_chat_plain(sdk_client) -> None:
    completion = await resolve(sdk_client.chat.completions.create(model="gpt-4o-mini", messages=USER))
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
    assert usage.prompt_tokens == len(
        ["user", "What", "is", "the", "weather", "like", "in", "Paris", "today?"]
    )
    assert usage.completion_tokens == len(words)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_is_deterministic_and_input_dependent(sdk_client) -> None:
    first = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=USER))
    again = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=USER))
    other = await resolve(
        sdk_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Something else"}]
        )
    )
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != again.id  # ids stay unique per request


async def test_chat_reasoning_model_reports_reasoning_tokens(sdk_client) -> None:
    completion = await resolve(sdk_client.chat.completions.create(model="o4-mini", messages=USER))
    details = completion.usage.completion_tokens_details
    assert details.reasoning_tokens > 0
    visible = len(completion.choices[0].message.content.split())
    assert completion.usage.completion_tokens == visible + details.reasoning_tokens


async def test_chat_long_prompt_reports_cached_tokens(sdk_client) -> None:
    long_prompt = [{"role": "user", "content": "word " * 1500}]
    completion = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=long_prompt))
    cached = completion.usage.prompt_tokens_details.cached_tokens
    assert cached % 128 == 0
    assert 1024 <= cached <= completion.usage.prompt_tokens


async def test_chat_max_tokens_truncates_with_length(sdk_client) -> None:
    completion = await resolve(
        sdk_client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=3)
    )
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].message.content.split()) == 3
    assert completion.usage.completion_tokens == 3


async def test_chat_n_choices(sdk_client) -> None:
    completion = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=USER, n=3))
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


async def test_chat_tool_call_then_answer(sdk_client) -> None:
    import json

    completion = await resolve(
        sdk_client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
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
        sdk_client.chat.completions.create(model="gpt-4o", messages=follow_up, tools=[WEATHER_TOOL])
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content


async def test_chat_tool_choice_none_and_required(sdk_client) -> None:
    plain = await resolve(
        sdk_client.chat.completions.create(
            model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
        )
    )
    assert plain.choices[0].message.tool_calls is None
    forced = await resolve(
        sdk_client.chat.completions.create(
            model="gpt-4o",
            messages=[*USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"


async def test_chat_stream_with_usage(sdk_client) -> None:
    chunks = await collect(
        sdk_client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    plain = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=USER))
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


async def test_chat_stream_without_usage_and_n(sdk_client) -> None:
    chunks = await collect(
        sdk_client.chat.completions.create(model="gpt-4o", messages=USER, stream=True, n=2)
    )
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    plain = await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=USER, n=2))
    assert [texts[0], texts[1]] == [choice.message.content for choice in plain.choices]


async def test_chat_stream_tool_call(sdk_client) -> None:
    chunks = await collect(
        sdk_client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], stream=True)
    )
    plain = await resolve(
        sdk_client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    )
    deltas = [chunk.choices[0].delta for chunk in chunks]
    assert deltas[0].tool_calls[0].function.name == "get_weather"
    arguments = "".join(
        call.function.arguments or "" for d in deltas if d.tool_calls for call in d.tool_calls
    )
    assert arguments == plain.choices[0].message.tool_calls[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_chat_bad_request_is_a_clear_400(sdk_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await resolve(sdk_client.chat.completions.create(model="gpt-4o", messages=[]))
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "messages"
    assert "empty array" in caught.value.message


# ---- structured outputs -------------------------------------------------------------------------------------------


class Address(pydantic.BaseModel):
    street: str
    city: str
    postcode: str | None


class Person(pydantic.BaseModel):
    name: str
    age: int
    height_m: float
    member: bool
    role: Literal["admin", "editor", "viewer"]
    address: Address
    tags: list[str]


def chat_parse(sdk_client: Any) -> Any:
    """``chat.completions.parse`` (openai >= 1.92) or its older home under ``beta``."""
    completions = sdk_client.chat.completions
    return completions.parse if hasattr(completions, "parse") else sdk_client.beta.chat.completions.parse


async def test_chat_parse_yields_the_pydantic_model(sdk_client) -> None:
    completion = await resolve(chat_parse(sdk_client)(model="gpt-4o", messages=USER, response_format=Person))
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert isinstance(parsed.address, Address)
    assert parsed.role in ("admin", "editor", "viewer")
    again = await resolve(chat_parse(sdk_client)(model="gpt-4o", messages=USER, response_format=Person))
    assert again.choices[0].message.parsed == parsed


async def test_chat_json_object_mode(sdk_client) -> None:
    import json

    completion = await resolve(
        sdk_client.chat.completions.create(
            model="gpt-4o", messages=USER, response_format={"type": "json_object"}
        )
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


# ---- responses ----------------------------------------------------------------------------------------------------


async def test_responses_plain(sdk_client) -> None:
    response = await resolve(
        sdk_client.responses.create(model="gpt-4.1", input="Tell me a story", instructions="Be brief")
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == "gpt-4.1"
    assert response.instructions == "Be brief"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    words = response.output_text.split()
    assert 8 <= len(words) <= 24
    usage = response.usage
    assert usage.input_tokens == len(["user", "Tell", "me", "a", "story", "Be", "brief"])
    assert usage.output_tokens == len(words)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_reasoning_model(sdk_client) -> None:
    response = await resolve(sdk_client.responses.create(model="gpt-5-mini", input="Think about it"))
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.usage.output_tokens_details.reasoning_tokens
    assert reasoning > 0
    assert response.usage.output_tokens == len(response.output_text.split()) + reasoning


async def test_responses_max_output_tokens_is_incomplete(sdk_client) -> None:
    response = await resolve(
        sdk_client.responses.create(model="gpt-4o", input="Tell me a story", max_output_tokens=2)
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert len(response.output_text.split()) == 2


async def test_responses_function_call(sdk_client) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        **{k: v for k, v in WEATHER_TOOL["function"].items() if k != "name"},
    }
    response = await resolve(
        sdk_client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[tool])
    )
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    follow_up = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    answer = await resolve(sdk_client.responses.create(model="gpt-4o", input=follow_up, tools=[tool]))
    assert answer.output[0].type == "message" and answer.output_text


async def test_responses_stream_events(sdk_client) -> None:
    events = await collect(sdk_client.responses.create(model="gpt-4o", input="Tell me a story", stream=True))
    plain = await resolve(sdk_client.responses.create(model="gpt-4o", input="Tell me a story"))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-5:] == [
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == plain.output_text
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.usage.model_dump() == plain.usage.model_dump()
    assert events[0].response.status == "in_progress" and events[0].response.usage is None


async def test_responses_stream_helper(sdk_client) -> None:
    manager = sdk_client.responses.stream(model="gpt-4o", input="Tell me a story")
    if hasattr(manager, "__aenter__"):
        async with manager as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    else:
        with manager as stream:
            events = list(stream)
            final = stream.get_final_response()
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert final.output_text == deltas
    assert final.usage.output_tokens == len(deltas.split())


async def test_responses_parse(sdk_client) -> None:
    response = await resolve(
        sdk_client.responses.parse(model="gpt-4o", input="Who is it?", text_format=Person)
    )
    assert isinstance(response.output_parsed, Person)


# ---- embeddings, legacy completions, models ------------------------------------------------------------------------


async def test_embeddings_float_and_base64_agree(sdk_client) -> None:
    texts = ["the quick brown fox", "jumps"]
    as_float = await resolve(
        sdk_client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    )
    as_base64 = await resolve(
        sdk_client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="base64")
    )
    assert [item.index for item in as_float.data] == [0, 1]
    assert len(as_float.data[0].embedding) == 1536
    assert sum(value * value for value in as_float.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    assert as_float.data[0].embedding != as_float.data[1].embedding
    decoded = as_base64.data[0].embedding
    if isinstance(decoded, str):  # older SDKs hand base64 through undecoded
        import base64
        import struct

        raw = base64.b64decode(decoded)
        decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert decoded == as_float.data[0].embedding
    assert as_float.usage.prompt_tokens == 5 == as_float.usage.total_tokens
    assert as_float.model == "text-embedding-3-small"


async def test_embeddings_dimensions(sdk_client) -> None:
    result = await resolve(
        sdk_client.embeddings.create(model="text-embedding-3-large", input="x", dimensions=256)
    )
    assert len(result.data[0].embedding) == 256


async def test_legacy_completions(sdk_client) -> None:
    completion = await resolve(
        sdk_client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Write a haiku", max_tokens=5)
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    (choice,) = completion.choices
    assert choice.finish_reason == "length" and len(choice.text.split()) == 5
    assert completion.usage.prompt_tokens == 3 and completion.usage.completion_tokens == 5
    chunks = await collect(
        sdk_client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Write a haiku",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == choice.text
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 5
    echoed = await resolve(
        sdk_client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Write a haiku", max_tokens=5, echo=True
        )
    )
    assert echoed.choices[0].text == "Write a haiku" + choice.text


async def test_models(sdk_client) -> None:
    page = await resolve(sdk_client.models.list())
    ids = [model.id for model in page.data]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    model = await resolve(sdk_client.models.retrieve("gpt-4o-mini"))
    assert model.id == "gpt-4o-mini" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        await resolve(sdk_client.models.retrieve("no-such-model"))
    assert caught.value.code == "model_not_found"
