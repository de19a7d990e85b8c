"""POST /v1/chat/completions: plain answers, tool calls, n>1, structured outputs and SSE streaming."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from llmtap.fake_openai.answers import Answer, Format, choose_tool, compose, output_format
from llmtap.fake_openai.call import Call, system_fingerprint
from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.reply import DONE, Event
from llmtap.fake_openai.text import seed_of, split_pieces, words_in
from llmtap.fake_openai.usage import Usage

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat_completions(call: Call) -> dict | list[Event]:
    model = call.model()
    messages = _messages(call)
    n = call.count("n", 1, maximum=128)
    max_tokens = call.count("max_completion_tokens", None)
    max_tokens = call.count("max_tokens", None) if max_tokens is None else max_tokens
    tools = _function_tools(call)
    output = _response_format(call)
    seed = seed_of("chat", model, messages, call.body.get("tools"), output.schema, call.body.get("seed"))
    tool = choose_tool(tools, call.body.get("tool_choice"), messages[-1].get("role"), seed)
    answers = [compose(seed_of(seed, index), output, tool, max_tokens) for index in range(n)]
    usage = Usage.compute(
        model,
        words_in(messages) + words_in(call.body.get("tools")),
        sum(a.words for a in answers),
        seed,
        call.knobs,
    )
    head = {
        "id": call.new_id("chatcmpl-"),
        "created": call.created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": system_fingerprint(model),
    }
    if not call.field("stream", bool, False):
        choices = [_choice(call, index, answer) for index, answer in enumerate(answers)]
        return {"object": "chat.completion", **head, "choices": choices, "usage": usage.chat()}
    stream_options = call.field("stream_options", dict, {})
    return _stream(call, head, answers, usage if stream_options.get("include_usage") else None)


def _messages(call: Call) -> list[dict]:
    messages = call.field("messages", list)
    if not messages:
        raise invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise invalid(
                f"Invalid 'messages[{index}]': expected an object with 'role' one of {', '.join(ROLES)}.",
                f"messages[{index}]",
                "invalid_value",
            )
    return messages


def _function_tools(call: Call) -> list[dict]:
    """The function definitions among ``tools`` (custom tools are accepted, but the fake never calls them)."""
    functions = []
    for index, tool in enumerate(call.field("tools", list, [])):
        if not isinstance(tool, dict):
            raise invalid(
                f"Invalid 'tools[{index}]': expected a tool object.", f"tools[{index}]", "invalid_type"
            )
        if tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                f"tools[{index}]",
                "missing_required_parameter",
            )
        functions.append(function)
    return functions


def _response_format(call: Call) -> Format:
    response_format = call.field("response_format", dict, {"type": "text"})
    return output_format(
        response_format.get("type"),
        response_format.get("json_schema"),
        "response_format.type",
        "response_format.json_schema",
    )


def _tool_call(call: Call, index: int, answer: Answer) -> dict:
    assert answer.tool_call is not None
    return {
        "id": call.new_id("call_", index),
        "type": "function",
        "function": {"name": answer.tool_call.name, "arguments": answer.tool_call.arguments},
    }


def _choice(call: Call, index: int, answer: Answer) -> dict:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_call is not None:
        message["tool_calls"] = [_tool_call(call, index, answer)]
    return {"index": index, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}


# Azure OpenAI's first chunk of a stream: the prompt's content-filter verdict, with no id, model or choices.
_PROMPT_FILTER_CHUNK = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                kind: {"filtered": False, "severity": "safe"}
                for kind in ("hate", "self_harm", "sexual", "violence")
            },
        }
    ],
}


def _stream(call: Call, head: dict, answers: list[Answer], usage: Usage | None) -> list[Event]:
    """Chunks of all choices interleaved, as the real API sends them; usage last when asked for."""

    def chunk(index: int, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {"object": "chat.completion.chunk", **head, "choices": [choice]}
        return {**body, "usage": None} if usage is not None else body

    per_choice = []
    for index, answer in enumerate(answers):
        chunks = []
        if answer.tool_call is not None:
            opening = {**_tool_call(call, index, answer), "index": 0}
            opening["function"] = {"name": answer.tool_call.name, "arguments": ""}
            chunks.append(
                chunk(index, {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None})
            )
            for piece in split_pieces(answer.tool_call.arguments, call.knobs.chunks):
                chunks.append(chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            chunks.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
            chunks.extend(
                chunk(index, {"content": piece})
                for piece in split_pieces(answer.text or "", call.knobs.chunks)
            )
        chunks.append(chunk(index, {}, answer.finish_reason))
        per_choice.append(chunks)
    events = [Event(item) for group in zip_longest(*per_choice) for item in group if item is not None]
    if call.knobs.prompt_filter:
        events.insert(0, Event(_PROMPT_FILTER_CHUNK))
    if usage is not None:
        events.append(
            Event({"object": "chat.completion.chunk", **head, "choices": [], "usage": usage.chat()})
        )
    return [*events, Event(DONE)]
