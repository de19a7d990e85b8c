"""OpenAI request/response content → the GenAI conventions' message "parts" structures.

Input and output shapes follow gen-ai-input-messages.json / gen-ai-output-messages.json of
open-telemetry/semantic-conventions-genai: ``{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call",
"id", "name", "arguments"}, {"type": "tool_call_response", "id", "response"}, {"type": "reasoning", ...}, ...]}``.
Everything here accepts both what the app passed (dicts, or SDK models handed back) and what came back (SDK models,
or the decoded JSON of a raw response), hence ``get`` instead of attribute access. Every string that may carry
user content goes through ``scrub`` (redaction) on its way in.

Nothing here consumes, mutates or re-orders what the app passed: the SDK reads the same arguments after us. An
iterable that cannot be read twice without side effects (an iterator, a generator, ``map``...) is left alone and
its argument's name is noted on the scrubber (``skip``), which the span reports as ``llmtap.content.skipped``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

Scrub = Callable[[Any], Any]
Message = dict[str, Any]

# OpenAI finish reasons → the conventions' FinishReason enum (inside output messages only; the span attribute
# gen_ai.response.finish_reasons keeps the provider's own values).
_FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}


def get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` for mappings, ``obj.key`` for objects; ``default`` when missing or None."""
    if isinstance(obj, dict):
        value = obj.get(key)
    elif obj is None:
        return default
    else:
        cls = type(obj)
        plain = _plain_attribute.get((cls, key))
        if plain is None:
            plain = _learn_attribute(cls, key)
        if plain:
            value = getattr(obj, key, None)
        else:
            extra = obj.__pydantic_extra__
            value = extra.get(key) if extra else None
    return default if value is None else value


# (class, name) -> whether getattr is the way to read it. SDK objects are pydantic models, and reading a name that
# is not one of their fields makes pydantic raise and catch an AttributeError: the costliest part of reading a
# response, which asks for optional names such as ``reasoning_content``. Such names can only be in the model's
# extras, so they are read from there.
_plain_attribute: dict[tuple[type, str], bool] = {}
_PLAIN_ATTRIBUTE_LIMIT = 4096


def _learn_attribute(cls: type, key: str) -> bool:
    if not hasattr(cls, "__pydantic_extra__"):  # not a pydantic 2 model
        plain = True
    else:
        fields = getattr(cls, "model_fields", None) or {}
        plain = key in fields or key.startswith("_") or any(key in klass.__dict__ for klass in cls.__mro__)
    if len(_plain_attribute) >= _PLAIN_ATTRIBUTE_LIMIT:
        _plain_attribute.clear()
    _plain_attribute[cls, key] = plain
    return plain


def reader(obj: Any) -> Callable[[str], Any]:
    """``reader(obj)(key)`` is ``get(obj, key)``, cheaper when reading several keys of one object: ``dict.get``
    itself for dicts (what apps pass as messages); for pydantic models (what the SDK returns) a lookup in the
    instance's field values and extras, where ``get`` would look the name up first; other objects use ``get``."""
    if isinstance(obj, dict):
        return obj.get
    if not _stores_fields_in_dict(type(obj)):
        return functools.partial(get, obj)
    extra = obj.__pydantic_extra__
    values = {**obj.__dict__, **extra} if extra else obj.__dict__

    def field(key: str) -> Any:
        value = values.get(key, _ABSENT)
        if value is _ABSENT:  # a property, a private name, or nothing: whatever ``get`` makes of it
            return get(obj, key)
        return value

    return field


_ABSENT = object()
# Pydantic 2 model classes -> True: their declared fields are the instance dict's entries (what getattr returns),
# their extras are in ``__pydantic_extra__``.
_field_dict_classes: dict[type, bool] = {}


def _stores_fields_in_dict(cls: type) -> bool:
    known = _field_dict_classes.get(cls)
    if known is None:
        known = hasattr(cls, "__pydantic_extra__") and isinstance(getattr(cls, "model_fields", None), dict)
        if len(_field_dict_classes) >= _PLAIN_ATTRIBUTE_LIMIT:
            _field_dict_classes.clear()
        _field_dict_classes[cls] = known
    return known


_REREADABLE = (list, tuple, dict, str, bytes, bytearray)


def readable(value: Any) -> bool:
    """Whether iterating ``value`` leaves it as it was: lists, tuples, dicts, strings and other collections (sets,
    dict views, ``range``, deques, arrays: they hold their items, and the SDK iterates them in the same order we
    do). Iterators, generators and iterables that are not collections may be single-pass: never read."""
    return isinstance(value, _REREADABLE) or (
        isinstance(value, Collection) and not isinstance(value, Iterator)
    )


def _items(value: Any, scrub: Scrub, argument: str) -> Any:
    """``value`` to iterate over if that has no side effects; else nothing, and a single-pass iterable's
    ``argument`` is noted as skipped (None, openai's NotGiven and other non-iterables are just nothing)."""
    if isinstance(value, _REREADABLE) or readable(value):
        return value
    if isinstance(value, Iterable):
        _skip(scrub, argument)
    return ()


def _skip(scrub: Scrub | None, argument: str) -> None:
    skip = getattr(scrub, "skip", None)  # a ``content.Scrubber``; a plain callable keeps no notes
    if skip is not None:
        skip(argument)


def _text(content: Any, scrub: Scrub) -> dict[str, Any]:
    return {"type": "text", "content": scrub(content if isinstance(content, str) else str(content))}


def _arguments(raw: Any, scrub: Scrub) -> Any:
    """Tool arguments arrive as a JSON string: recorded as the decoded value when it is valid JSON."""
    if not isinstance(raw, str):
        return raw
    raw = scrub(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _data_url_blob(url: str, modality: str, scrub: Scrub) -> dict[str, Any]:
    header, _, data = url.partition(",")
    mime = header[5:].split(";", 1)[0] or None
    part = {"type": "blob", "modality": modality, "content": data}
    if mime:
        part["mime_type"] = mime
    return part


def _chat_content_parts(content: Any, scrub: Scrub, argument: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text(content, scrub)]
    parts = []
    for item in _items(content, scrub, argument):
        kind = get(item, "type")
        if kind == "text":
            parts.append(_text(get(item, "text", ""), scrub))
        elif kind == "image_url":
            url = get(get(item, "image_url"), "url", "")
            if url.startswith("data:"):
                parts.append(_data_url_blob(url, "image", scrub))
            else:
                parts.append({"type": "uri", "modality": "image", "uri": url})
        elif kind == "input_audio":
            audio = get(item, "input_audio")
            fmt = get(audio, "format")
            parts.append(
                {
                    "type": "blob",
                    "modality": "audio",
                    "mime_type": f"audio/{fmt}",
                    "content": get(audio, "data", ""),
                }
            )
        elif kind == "file":
            file = get(item, "file")
            if get(file, "file_id"):
                parts.append({"type": "file", "modality": "document", "file_id": get(file, "file_id")})
            else:
                parts.append({"type": "blob", "modality": "document", "content": get(file, "file_data", "")})
        elif kind == "refusal":
            parts.append({"type": "refusal", "content": scrub(get(item, "refusal", ""))})
        else:
            parts.append({"type": str(kind)})
    return parts


def _tool_call_parts(tool_calls: Any, scrub: Scrub, argument: str = "") -> list[dict[str, Any]]:
    parts = []
    for call in _items(tool_calls, scrub, argument):
        field = reader(call)
        function = field("function")
        if function is None:  # custom tools carry `custom: {name, input}`
            custom = field("custom")
            parts.append(
                {
                    "type": "tool_call",
                    "id": field("id"),
                    "name": get(custom, "name", ""),
                    "arguments": scrub(get(custom, "input")),
                }
            )
            continue
        parts.append(
            {
                "type": "tool_call",
                "id": field("id"),
                "name": get(function, "name", ""),
                "arguments": _arguments(get(function, "arguments"), scrub),
            }
        )
    return parts


def _reasoning_part(field: Callable[[str], Any], scrub: Scrub) -> list[dict[str, Any]]:
    # Not in OpenAI's own schema, but OpenAI-compatible servers (vLLM, DeepSeek, OpenRouter) return it.
    reasoning = field("reasoning_content") or field("reasoning")
    if isinstance(reasoning, str) and reasoning:
        return [{"type": "reasoning", "content": scrub(reasoning)}]
    return []


def chat_input(messages: Any, scrub: Scrub, argument: str = "messages") -> list[Message]:
    """Chat Completions ``messages=`` → input messages (system/developer messages stay in the history)."""
    result = []
    for message in _items(messages, scrub, argument):
        field = reader(message)
        role = field("role")
        if role is None:
            role = "user"
        if role in ("tool", "function"):
            part = {
                "type": "tool_call_response",
                "id": field("tool_call_id"),
                "response": scrub(_plain_text(field("content"), scrub, argument)),
            }
            entry: Message = {"role": "tool", "parts": [part]}
        else:
            parts = _reasoning_part(field, scrub) + _chat_content_parts(field("content"), scrub, argument)
            refusal = field("refusal")
            if refusal:
                parts.append({"type": "refusal", "content": scrub(refusal)})
            tool_calls = field("tool_calls")
            if tool_calls:
                parts += _tool_call_parts(tool_calls, scrub, argument)
            function_call = field("function_call")
            if function_call is not None:
                parts.append(
                    {
                        "type": "tool_call",
                        "name": get(function_call, "name", ""),
                        "arguments": _arguments(get(function_call, "arguments"), scrub),
                    }
                )
            entry = {"role": role, "parts": parts}
        name = field("name")
        if name:
            entry["name"] = name
        result.append(entry)
    return result


def _plain_text(content: Any, scrub: Scrub, argument: str) -> Any:
    if isinstance(content, (list, tuple)):
        return "".join(get(item, "text", "") for item in content)
    if isinstance(content, Iterator):  # parts given as a generator: not read
        _skip(scrub, argument)
        return ""
    return content


def chat_output_message(
    text: str | None,
    tool_calls: Any,
    finish_reason: str | None,
    scrub: Scrub,
    refusal: str | None = None,
    reasoning: str | None = None,
    audio_transcript: str | None = None,
) -> Message:
    """One choice → one output message (also used for streams, from the accumulated pieces)."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"type": "reasoning", "content": scrub(reasoning)})
    if text:
        parts.append(_text(text, scrub))
    if audio_transcript:
        parts.append(_text(audio_transcript, scrub))
    if refusal:
        parts.append({"type": "refusal", "content": scrub(refusal)})
    parts += _tool_call_parts(tool_calls, scrub)
    return {"role": "assistant", "parts": parts, "finish_reason": map_finish_reason(finish_reason)}


def map_finish_reason(reason: str | None) -> str:
    if not reason:
        return "error"
    return _FINISH_REASONS.get(reason, reason)


def chat_output(choices: Any, scrub: Scrub) -> list[Message]:
    result = []
    for choice in choices or ():
        message = reader(get(choice, "message"))
        reasoning = message("reasoning_content") or message("reasoning")
        function_call = message("function_call")
        tool_calls = message("tool_calls")
        if function_call is not None and not tool_calls:
            tool_calls = [{"function": function_call}]
        audio = message("audio")
        result.append(
            chat_output_message(
                message("content"),
                tool_calls,
                get(choice, "finish_reason"),
                scrub,
                refusal=message("refusal"),
                reasoning=reasoning if isinstance(reasoning, str) else None,
                audio_transcript=get(audio, "transcript") if audio is not None else None,
            )
        )
    return result


def tool_definitions(tools: Any, scrub: Scrub | None = None) -> list[dict[str, Any]]:
    """Chat (``{"type": "function", "function": {...}}``) and Responses (flat) tool definitions."""
    result = []
    for tool in _items(tools, scrub, "tools"):
        kind = get(tool, "type", "function")
        function = get(tool, "function")
        source = function if function is not None else tool
        name = get(source, "name") or kind
        entry: dict[str, Any] = {"type": kind, "name": name}
        description = get(source, "description")
        if description is not None:
            entry["description"] = description
        parameters = get(source, "parameters")
        if parameters is not None:
            entry["parameters"] = parameters
        result.append(entry)
    return result


def function_definitions(functions: Any, scrub: Scrub | None = None) -> list[dict[str, Any]]:
    """Chat ``functions=`` (deprecated) as tool definitions."""
    return [
        {"type": "function", **{k: get(f, k) for k in ("name", "description", "parameters") if get(f, k)}}
        for f in _items(functions, scrub, "functions")
    ]


# --- Responses API -------------------------------------------------------------------------------------------


def system_instructions(instructions: Any, scrub: Scrub) -> list[dict[str, Any]]:
    if isinstance(instructions, str):
        return [_text(instructions, scrub)] if instructions else []
    return _responses_content_parts(instructions, scrub, "instructions")


def _responses_content_parts(content: Any, scrub: Scrub, argument: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text(content, scrub)]
    parts = []
    for item in _items(content, scrub, argument):
        kind = get(item, "type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(_text(get(item, "text", ""), scrub))
        elif kind == "refusal":
            parts.append({"type": "refusal", "content": scrub(get(item, "refusal", ""))})
        elif kind == "input_image":
            url = get(item, "image_url")
            if get(item, "file_id"):
                parts.append({"type": "file", "modality": "image", "file_id": get(item, "file_id")})
            elif isinstance(url, str) and url.startswith("data:"):
                parts.append(_data_url_blob(url, "image", scrub))
            else:
                parts.append({"type": "uri", "modality": "image", "uri": url or ""})
        elif kind == "input_file":
            if get(item, "file_id"):
                parts.append({"type": "file", "modality": "document", "file_id": get(item, "file_id")})
            elif get(item, "file_url"):
                parts.append({"type": "uri", "modality": "document", "uri": get(item, "file_url")})
            else:
                parts.append({"type": "blob", "modality": "document", "content": get(item, "file_data", "")})
        elif kind == "input_audio":
            audio = get(item, "input_audio", item)
            parts.append(
                {
                    "type": "blob",
                    "modality": "audio",
                    "mime_type": f"audio/{get(audio, 'format')}",
                    "content": get(audio, "data", ""),
                }
            )
        else:
            parts.append({"type": str(kind)})
    return parts


def _responses_item_parts(
    item: Any, scrub: Scrub, argument: str = "input"
) -> tuple[str, list[dict[str, Any]]]:
    """One Responses input/output item → (role, parts)."""
    kind = get(item, "type", "message")
    if kind == "message" or (kind is None and get(item, "role")):
        return get(item, "role", "user"), _responses_content_parts(get(item, "content"), scrub, argument)
    if kind in ("function_call", "custom_tool_call"):
        arguments = get(item, "arguments") if kind == "function_call" else get(item, "input")
        return "assistant", [
            {
                "type": "tool_call",
                "id": get(item, "call_id"),
                "name": get(item, "name", ""),
                "arguments": _arguments(arguments, scrub),
            }
        ]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return "tool", [
            {
                "type": "tool_call_response",
                "id": get(item, "call_id"),
                "response": scrub(_plain_text(get(item, "output"), scrub, argument)),
            }
        ]
    if kind == "reasoning":
        texts = [
            get(s, "text", "") for s in _items(get(item, "content") or get(item, "summary"), scrub, argument)
        ]
        return "assistant", [{"type": "reasoning", "content": scrub("\n".join(texts))}]
    # Built-in tools (web_search_call, file_search_call, code_interpreter_call, ...) run on OpenAI's side.
    return "assistant", [
        {
            "type": "server_tool_call",
            "id": get(item, "id"),
            "name": str(kind),
            "server_tool_call": {"type": str(kind)},
        }
    ]


def responses_input(input_value: Any, scrub: Scrub) -> list[Message]:
    if input_value is None:
        return []
    if isinstance(input_value, str):
        return [{"role": "user", "parts": [_text(input_value, scrub)]}]
    result: list[Message] = []
    for item in _items(input_value, scrub, "input"):
        role, parts = _responses_item_parts(item, scrub)
        if result and result[-1]["role"] == role and role != "user" and get(item, "type") != "message":
            result[-1]["parts"].extend(parts)  # consecutive tool calls belong to one assistant turn
        else:
            result.append({"role": role, "parts": parts})
    return result


def responses_output(response: Any, finish_reason: str | None, scrub: Scrub) -> list[Message]:
    """The whole ``response.output`` list is one answer: one assistant message with all its parts."""
    parts: list[dict[str, Any]] = []
    for item in get(response, "output", ()) or ():
        parts += _responses_item_parts(item, scrub)[1]
    return [{"role": "assistant", "parts": parts, "finish_reason": map_finish_reason(finish_reason)}]


def responses_finish_reason(response: Any) -> str | None:
    """Responses have a status, not a finish reason: map it onto the Chat Completions vocabulary."""
    status = get(response, "status")
    if status == "completed":
        for item in get(response, "output", ()) or ():
            if get(item, "type") in ("function_call", "custom_tool_call"):
                return "tool_calls"
        return "stop"
    if status == "incomplete":
        reason = get(get(response, "incomplete_details"), "reason")
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    if status == "failed":
        return "error"
    return status


# --- Legacy completions ---------------------------------------------------------------------------------------


def completion_input(prompt: Any, scrub: Scrub) -> list[Message]:
    if prompt is None:
        return []
    prompts = [prompt] if isinstance(prompt, str) else list(_items(prompt, scrub, "prompt"))
    if prompts and not isinstance(prompts[0], str):  # token arrays
        if not all(isinstance(p, int) or readable(p) for p in prompts):
            _skip(scrub, "prompt")  # a token array given as an iterator: not read
            return []
        return [{"role": "user", "parts": [{"type": "tokens", "content": to_token_text(prompts)}]}]
    return [{"role": "user", "parts": [_text(p, scrub)]} for p in prompts]


def to_token_text(tokens: Any) -> str:
    return json.dumps(tokens)[:1000]


def completion_output(choices: Any, scrub: Scrub) -> list[Message]:
    return [
        {
            "role": "assistant",
            "parts": [_text(get(choice, "text", ""), scrub)],
            "finish_reason": map_finish_reason(get(choice, "finish_reason")),
        }
        for choice in choices or ()
    ]
