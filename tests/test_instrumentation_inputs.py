"""The instrumentation never consumes, mutates or re-orders what the app passes (issue 19).

The SDK accepts iterators and generators for ``messages``, ``tools``, ``input``, ``prompt``, content parts and so
on. Each scenario runs once on the plain SDK and once instrumented (content capture on and off), over HTTP against
the fake server: the request bodies the server received and what the app got back must be identical, and the span
lists the arguments it could not read without consuming them in ``llmtap.content.skipped``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fake_openai_helpers import open_client, resolve
from instrumentation_helpers import Pipeline, normalize
from llmtap.fake_openai import FakeOpenAIServer
from llmtap.instrumentation import messages

pytest_plugins = ["instrumentation_fixtures"]  # the SDK-against-fake-server fixtures
pytestmark = pytest.mark.anyio
MODEL = "gpt-4o-mini"
SKIPPED = "llmtap.content.skipped"
USER = {"role": "user", "content": "What is the weather like in Paris today?"}
CHAT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FUNCTION = CHAT_TOOL["function"]
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": FUNCTION["parameters"]}
STRICT_TOOL = {  # parse() accepts strict function tools only
    "type": "function",
    "function": {
        **FUNCTION,
        "strict": True,
        "parameters": {**FUNCTION["parameters"], "additionalProperties": False},
    },
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


def gen(*items: Any) -> Any:
    return (item for item in items)


# name -> (call on a fresh client, with fresh arguments built by the lambda; the argument the span marks skipped)
SCENARIOS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "chat tools=iter": (
        lambda c: c.chat.completions.create(model=MODEL, messages=[USER], tools=iter([CHAT_TOOL])),
        "tools",
    ),
    "chat.parse tools=iter": (
        lambda c: c.chat.completions.parse(model=MODEL, messages=[USER], tools=iter([STRICT_TOOL])),
        "tools",
    ),
    "chat functions=iter": (
        lambda c: c.chat.completions.create(model=MODEL, messages=[USER], functions=iter([FUNCTION])),
        "functions",
    ),
    "chat messages=generator": (
        lambda c: c.chat.completions.create(model=MODEL, messages=gen(USER)),
        "messages",
    ),
    "chat messages=iter": (
        lambda c: c.chat.completions.create(model=MODEL, messages=iter([USER, USER])),
        "messages",
    ),
    "chat content parts=generator": (
        lambda c: c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": gen({"type": "text", "text": "Paris?"})}]
        ),
        "messages",
    ),
    "chat tool_calls=generator": (
        lambda c: c.chat.completions.create(
            model=MODEL,
            messages=[
                USER,
                {"role": "assistant", "tool_calls": gen(TOOL_CALL)},
                {"role": "tool", "tool_call_id": "call_1", "content": gen({"type": "text", "text": "sunny"})},
            ],
        ),
        "messages",
    ),
    "responses tools=iter": (
        lambda c: c.responses.create(model=MODEL, input="Paris?", tools=iter([RESPONSES_TOOL])),
        "tools",
    ),
    # The SDK itself cannot send this one (TypeError: generator is not JSON serializable): the app must get that
    # same error, not another one.
    "responses input=generator": (
        lambda c: c.responses.create(model=MODEL, input=gen(USER)),
        "input",
    ),
    "responses content parts=generator": (
        lambda c: c.responses.create(
            model=MODEL, input=[{"role": "user", "content": gen({"type": "input_text", "text": "Paris?"})}]
        ),
        "input",
    ),
    "completions prompt=iter": (
        lambda c: c.completions.create(model=MODEL, prompt=iter(["Say hi", "Say bye"])),
        "prompt",
    ),
    "completions token arrays=generators": (
        lambda c: c.completions.create(model=MODEL, prompt=[gen(1, 2, 3), gen(4, 5)]),
        "prompt",
    ),
}


@pytest.fixture(autouse=True)
def clean(pipeline: Pipeline):
    pipeline.uninstrument()
    yield
    pipeline.uninstrument()


async def run(server: FakeOpenAIServer, kind: str, call: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """What the app got (result or exception) and the bodies the server received."""
    before = len(server.requests)
    async with open_client(kind, server.base_url) as client:
        try:
            outcome: Any = ("ok", normalize(await resolve(call(client))))
        except Exception as error:
            outcome = ("error", type(error), str(error))
    return outcome, [request.json for request in server.requests[before:]]


@pytest.mark.parametrize("capture", [True, False], ids=["capture", "no-capture"])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_single_pass_arguments_reach_the_api_unchanged(
    server: FakeOpenAIServer, pipeline: Pipeline, name: str, kind: str, capture: bool
):
    call, argument = SCENARIOS[name]
    plain = await run(server, kind, call)
    pipeline.instrument(capture_content=capture)
    traced = await run(server, kind, call)
    assert traced == plain
    bodies = traced[1]
    assert bodies or name == "responses input=generator", "the SDK sent nothing"
    span = pipeline.one_span()
    attrs = dict(span.attributes or {})
    assert attrs[SKIPPED] == (argument,)
    if capture and argument in ("messages", "input", "prompt"):
        json.loads(attrs["gen_ai.input.messages"])  # what could be read is still valid JSON


async def test_readable_arguments_are_recorded_without_a_mark(server: FakeOpenAIServer, pipeline: Pipeline):
    """Lists, tuples and other collections are read as before, and nothing is marked."""
    pipeline.instrument()
    await run(
        server,
        "sync",
        lambda c: c.chat.completions.create(
            model=MODEL,
            messages=(USER, {"role": "user", "content": ({"type": "text", "text": "and Rome?"},)}),
            tools=(CHAT_TOOL,),
        ),
    )
    attrs = dict(pipeline.one_span().attributes or {})
    assert SKIPPED not in attrs
    assert [m["parts"][0]["content"] for m in json.loads(attrs["gen_ai.input.messages"])] == [
        USER["content"],
        "and Rome?",
    ]
    assert json.loads(attrs["gen_ai.tool.definitions"])[0]["name"] == "get_weather"


def test_what_counts_as_readable():
    assert all(
        messages.readable(value)
        for value in ([], (), {}, "text", b"bytes", {1, 2}, frozenset(), range(3), {}.keys(), bytearray())
    )
    assert not any(
        messages.readable(value)
        for value in (iter([]), gen(), map(str, []), zip([], [], strict=True), filter(None, []))
    )
