"""POST /v1/responses: text, function calls, reasoning items, structured outputs, and the streaming event sequence.

Event names and payloads follow openai-python's ``ResponseStreamEvent`` union, so ``responses.stream()`` and
``responses.parse()`` accumulate them exactly as they do with the real API.
"""

from __future__ import annotations

from typing import Any

from llmtap.fake_openai.answers import Answer, Format, choose_tool, compose, output_format
from llmtap.fake_openai.call import Call
from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.reply import Event
from llmtap.fake_openai.text import seed_of, split_pieces, words_in
from llmtap.fake_openai.usage import Usage, is_reasoning_model


def responses(call: Call) -> dict | list[Event]:
    model = call.model()
    items = _input(call)
    instructions = call.field("instructions", str, None)
    tools = _tools(call)
    text_format = _text_format(call)
    max_tokens = call.count("max_output_tokens", None)
    seed = seed_of("responses", model, items, instructions, tools, text_format.schema)
    last = items[-1]
    tool = choose_tool(
        [tool for tool in tools if tool.get("type") == "function"],
        call.body.get("tool_choice"),
        last.get("role") or last.get("type"),
        seed,
    )
    answer = compose(seed, text_format, tool, max_tokens)
    usage = Usage.compute(
        model, words_in(items) + words_in(instructions) + words_in(tools), answer.words, seed, call.knobs
    )
    output = _output(call, model, answer, usage)
    response = _response(call, model, output, answer, usage, instructions, tools, text_format, max_tokens)
    if not call.field("stream", bool, False):
        return response
    return _stream(call, response)


def _input(call: Call) -> list[dict]:
    value = call.field("input", (str, list))
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not value:
        raise invalid(
            "Invalid 'input': empty array. Expected an array with minimum length 1.", "input", "empty_array"
        )
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not (item.get("role") or item.get("type")):
            raise invalid(
                f"Invalid 'input[{index}]': expected an input item object with 'role' or 'type'.",
                f"input[{index}]",
                "invalid_value",
            )
    return value


def _tools(call: Call) -> list[dict]:
    tools = call.field("tools", list, [])
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise invalid(
                f"Missing required parameter: 'tools[{index}].type'.",
                f"tools[{index}].type",
                "missing_required_parameter",
            )
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise invalid(
                f"Missing required parameter: 'tools[{index}].name'.",
                f"tools[{index}].name",
                "missing_required_parameter",
            )
    return tools


def _text_format(call: Call) -> Format:
    spec = call.field("text", dict, {}).get("format") or {"type": "text"}
    return output_format(
        spec.get("type") if isinstance(spec, dict) else None, spec, "text.format.type", "text.format"
    )


def _output(call: Call, model: str, answer: Answer, usage: Usage) -> list[dict]:
    output: list[dict] = []
    if is_reasoning_model(model) and usage.reasoning_tokens:
        output.append({"id": call.new_id("rs_"), "type": "reasoning", "summary": []})
    if call.knobs.computer_call:
        output.append(
            {
                "id": call.new_id("cu_"),
                "type": "computer_call",
                "status": "completed",
                "call_id": call.new_id("call_"),
                "action": {"type": "click", "button": "left", "x": 10, "y": 20},
                "pending_safety_checks": [],
            }
        )
    elif answer.tool_call is not None:
        output.append(
            {
                "id": call.new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "arguments": answer.tool_call.arguments,
                "call_id": call.new_id("call_"),
                "name": answer.tool_call.name,
            }
        )
    else:
        output.append(
            {
                "id": call.new_id("msg_"),
                "type": "message",
                "status": "incomplete" if answer.truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}],
            }
        )
    return output


def _response(
    call: Call,
    model: str,
    output: list[dict],
    answer: Answer,
    usage: Usage,
    instructions: str | None,
    tools: list[dict],
    text_format: Format,
    max_tokens: int | None,
) -> dict:
    body = call.body
    return {
        "id": call.new_id("resp_"),
        "object": "response",
        "created_at": call.created,
        "status": "incomplete" if answer.truncated else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if answer.truncated else None,
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {
            "format": (body.get("text") or {}).get("format") or {"type": text_format.kind},
            "verbosity": "medium",
        },
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [
            {"strict": True, "description": None, **tool} if tool["type"] == "function" else tool
            for tool in tools
        ],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage.responses(),
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _stream(call: Call, response: dict) -> list[Event]:
    """created, in_progress, per item added/deltas/done, then completed (or incomplete) — numbered in order."""
    events: list[Event] = []

    def emit(kind: str, **payload: Any) -> None:
        events.append(Event({"type": kind, "sequence_number": len(events), **payload}, kind))

    pending = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in split_pieces(item["arguments"], call.knobs.chunks):
                emit("response.function_call_arguments.delta", **where, delta=piece)
            emit(
                "response.function_call_arguments.done",
                **where,
                arguments=item["arguments"],
                name=item["name"],
            )
        elif item["type"] == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = item["content"][0]
            emit("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
            for piece in split_pieces(part["text"], call.knobs.chunks):
                emit("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
            emit("response.content_part.done", **where, content_index=0, part=part)
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit(
        "response.completed" if response["status"] == "completed" else "response.incomplete",
        response=response,
    )
    return events
