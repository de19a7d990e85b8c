"""What each OpenAI API means as a GenAI span: request attributes, response attributes, content, stream chunks.

One ``Operation`` per API family (Chat Completions, Responses, Embeddings, legacy Completions). Functions take
the call's keyword arguments and the returned object (an SDK model, or the decoded JSON of a raw response) and
return plain attribute dicts; ``calls.LLMCall`` puts them on the span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmtap.instrumentation import messages as msg
from llmtap.instrumentation import semconv as sc
from llmtap.instrumentation.messages import Message, Scrub, get

Attributes = dict[str, Any]

# The finish reason of an answer that did not finish (a cut stream), as the official instrumentation records it.
UNFINISHED = "error"

# openai's "argument not given" sentinels (NotGiven, Omit); filled in by the instrumentor once openai is imported.
SENTINEL_TYPES: tuple[type, ...] = ()


def given(value: Any) -> bool:
    return value is not None and not isinstance(value, SENTINEL_TYPES)


# The type checks below also rule out openai's NotGiven/Omit sentinels (they are none of these types).
def _set_float(attrs: Attributes, key: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        attrs[key] = float(value)


def _set_int(attrs: Attributes, key: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        attrs[key] = value


def _set_str(attrs: Attributes, key: str, value: Any) -> None:
    if isinstance(value, str):
        attrs[key] = value


_REQUEST_FLOATS = (
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("frequency_penalty", sc.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.REQUEST_PRESENCE_PENALTY),
)


def _common_request(kw: dict[str, Any], attrs: Attributes) -> None:
    # Runs on every call: parameters the app did not pass (most of them) cost one dict lookup each.
    for key, name in _REQUEST_FLOATS:
        value = kw.get(key)
        if value is not None:
            _set_float(attrs, name, value)
    seed = kw.get("seed")
    if seed is not None:
        _set_int(attrs, sc.REQUEST_SEED, seed)
    stop = kw.get("stop")
    if given(stop):
        if isinstance(stop, str):
            attrs[sc.REQUEST_STOP_SEQUENCES] = (stop,)
        elif isinstance(stop, (list, tuple)):
            attrs[sc.REQUEST_STOP_SEQUENCES] = tuple(str(s) for s in stop)
    n = kw.get("n")
    if given(n) and isinstance(n, int) and n != 1:
        attrs[sc.REQUEST_CHOICE_COUNT] = n
    attrs[sc.REQUEST_STREAM] = kw.get("stream") is True
    service_tier = kw.get("service_tier")
    if service_tier is not None:
        _set_str(attrs, sc.OPENAI_REQUEST_SERVICE_TIER, service_tier)
    metadata = kw.get("metadata")
    if given(metadata) and isinstance(metadata, dict):
        for key, value in metadata.items():
            attrs[sc.METADATA_PREFIX + str(key)] = value if isinstance(value, str) else str(value)
    user = kw.get("user")
    if given(user) and isinstance(user, str):
        attrs[sc.USER_ID] = user


# (field of the details object, attribute): the usage details recorded when, and only when, the API sent them.
_INPUT_DETAILS = (
    ("cached_tokens", sc.USAGE_CACHE_READ_INPUT_TOKENS),
    ("cache_write_tokens", sc.USAGE_CACHE_CREATION_INPUT_TOKENS),
    ("audio_tokens", sc.USAGE_AUDIO_INPUT_TOKENS),
)
_OUTPUT_DETAILS = (
    ("reasoning_tokens", sc.USAGE_REASONING_OUTPUT_TOKENS),
    ("audio_tokens", sc.USAGE_AUDIO_OUTPUT_TOKENS),
)


def _usage(
    attrs: Attributes, usage: Any, input_key: str, output_key: str, input_details: str, output_details: str
):
    if usage is None:
        return
    field = msg.reader(usage)
    _set_int(attrs, sc.USAGE_INPUT_TOKENS, field(input_key))
    _set_int(attrs, sc.USAGE_OUTPUT_TOKENS, field(output_key))
    for details, names in ((input_details, _INPUT_DETAILS), (output_details, _OUTPUT_DETAILS)):
        value = field(details) if details else None
        if value is not None:
            detail = msg.reader(value)
            for key, name in names:
                _set_int(attrs, name, detail(key))  # a field the API left out is None: not recorded


def _response_identity(attrs: Attributes, response: Any) -> Callable[[str], Any]:
    """Sets the identity attributes; returns the response's reader for the caller's other fields."""
    field = msg.reader(response)
    _set_str(attrs, sc.RESPONSE_ID, field("id"))
    _set_str(attrs, sc.RESPONSE_MODEL, field("model"))
    _set_str(attrs, sc.OPENAI_RESPONSE_SERVICE_TIER, field("service_tier"))
    _set_str(attrs, sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT, field("system_fingerprint"))
    return field


class _StreamIdentity:
    """id, model, service tier and fingerprint of a stream: the first non-empty value of each.

    Azure (and a filtered stream) opens with a ``prompt_filter_results`` chunk whose id and model are ``""``, so the
    first chunk alone is not enough. Chunks are read until one has brought both an id and a model; after that,
    ``pending`` is False and a chunk costs nothing here."""

    __slots__ = ("attrs", "pending")

    def __init__(self) -> None:
        self.attrs: Attributes = {}
        self.pending = True

    def add(self, chunk: Any) -> None:
        found: Attributes = {}
        _response_identity(found, chunk)
        attrs = self.attrs
        for key, value in found.items():
            if value and key not in attrs:
                attrs[key] = value
        self.pending = sc.RESPONSE_ID not in attrs or sc.RESPONSE_MODEL not in attrs


@dataclass
class RequestContent:
    system: list[dict[str, Any]] | None = None
    input: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None


# --- Chat Completions -----------------------------------------------------------------------------------------


def chat_request(kw: dict[str, Any]) -> Attributes:
    attrs: Attributes = {sc.OPENAI_API_TYPE: "chat_completions"}
    _common_request(kw, attrs)
    max_tokens = kw.get("max_completion_tokens")
    _set_int(attrs, sc.REQUEST_MAX_TOKENS, max_tokens if given(max_tokens) else kw.get("max_tokens"))
    response_format = kw.get("response_format")
    if given(response_format):
        kind = get(response_format, "type") if isinstance(response_format, dict) else "json_schema"
        attrs[sc.OUTPUT_TYPE] = "json" if kind in ("json_schema", "json_object") else "text"
    return attrs


def chat_request_content(kw: dict[str, Any], scrub: Scrub) -> RequestContent:
    tools = kw.get("tools")
    functions = kw.get("functions")
    definitions = msg.tool_definitions(tools, scrub) if given(tools) else None
    if given(functions):
        definitions = (definitions or []) + msg.function_definitions(functions, scrub)
    return RequestContent(input=msg.chat_input(kw.get("messages"), scrub), tools=definitions)


def chat_response(response: Any) -> Attributes:
    attrs: Attributes = {}
    field = _response_identity(attrs, response)
    choices = field("choices") or ()
    attrs[sc.RESPONSE_FINISH_REASONS] = tuple(get(c, "finish_reason") or "" for c in choices)
    _usage(
        attrs,
        field("usage"),
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    )
    return attrs


def chat_response_content(response: Any, scrub: Scrub) -> list[Message]:
    return msg.chat_output(get(response, "choices"), scrub)


class _ChoiceAccumulator:
    __slots__ = ("finish_reason", "reasoning", "refusal", "text", "tool_calls")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None


class ChatStreamAccumulator:
    """Rebuilds the answer from ``ChatCompletionChunk``s; kept minimal because it runs once per chunk."""

    __slots__ = ("capture", "choices", "identity", "usage")

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.identity = _StreamIdentity()
        self.usage: Any = None
        self.choices: dict[int, _ChoiceAccumulator] = {}

    def add(self, chunk: Any) -> None:
        if self.identity.pending:
            self.identity.add(chunk)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        for choice in chunk.choices:
            acc = self.choices.get(choice.index)
            if acc is None:
                acc = self.choices[choice.index] = _ChoiceAccumulator()
            if choice.finish_reason:
                acc.finish_reason = choice.finish_reason
            if not self.capture:
                continue
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                acc.text.append(delta.content)
            if delta.tool_calls:
                self._add_tool_calls(acc, delta.tool_calls)
            if delta.refusal:
                acc.refusal.append(delta.refusal)
            extra = delta.model_extra
            if extra:
                reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                if isinstance(reasoning, str):
                    acc.reasoning.append(reasoning)

    @staticmethod
    def _add_tool_calls(acc: _ChoiceAccumulator, deltas: Any) -> None:
        for delta in deltas:
            call = acc.tool_calls.get(delta.index)
            if call is None:
                call = acc.tool_calls[delta.index] = {"id": None, "name": "", "arguments": []}
            if delta.id:
                call["id"] = delta.id
            function = delta.function
            if function is not None:
                if function.name:
                    call["name"] += function.name
                if function.arguments:
                    call["arguments"].append(function.arguments)

    def attributes(self) -> Attributes:
        attrs: Attributes = dict(self.identity.attrs)
        if self.choices:
            attrs[sc.RESPONSE_FINISH_REASONS] = tuple(
                self.choices[i].finish_reason or UNFINISHED for i in sorted(self.choices)
            )
        _usage(
            attrs,
            self.usage,
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
        return attrs

    def output(self, scrub: Scrub) -> list[Message]:
        result = []
        for index in sorted(self.choices):
            acc = self.choices[index]
            tool_calls = [
                {"id": c["id"], "function": {"name": c["name"], "arguments": "".join(c["arguments"])}}
                for _, c in sorted(acc.tool_calls.items())
            ]
            result.append(
                msg.chat_output_message(
                    "".join(acc.text),
                    tool_calls,
                    acc.finish_reason,
                    scrub,
                    refusal="".join(acc.refusal),
                    reasoning="".join(acc.reasoning),
                )
            )
        return result


# --- Responses ------------------------------------------------------------------------------------------------


def responses_request(kw: dict[str, Any]) -> Attributes:
    attrs: Attributes = {sc.OPENAI_API_TYPE: "responses"}
    _common_request(kw, attrs)
    _set_int(attrs, sc.REQUEST_MAX_TOKENS, kw.get("max_output_tokens"))
    text = kw.get("text")
    text_format = kw.get("text_format")
    if given(text_format):
        attrs[sc.OUTPUT_TYPE] = "json"
    elif given(text) and isinstance(text, dict):
        kind = get(get(text, "format"), "type")
        if kind:
            attrs[sc.OUTPUT_TYPE] = "json" if kind in ("json_schema", "json_object") else "text"
    conversation = kw.get("conversation")
    if given(conversation):
        conversation_id = conversation if isinstance(conversation, str) else get(conversation, "id")
        _set_str(attrs, sc.CONVERSATION_ID, conversation_id)
    return attrs


def responses_request_content(kw: dict[str, Any], scrub: Scrub) -> RequestContent:
    instructions = kw.get("instructions")
    tools = kw.get("tools")
    return RequestContent(
        system=msg.system_instructions(instructions, scrub) if given(instructions) else None,
        input=msg.responses_input(kw.get("input") if given(kw.get("input")) else None, scrub),
        tools=msg.tool_definitions(tools, scrub) if given(tools) else None,
    )


# Output items that ask the app to act and call back, as a function call does.
_CLIENT_TOOL_CALLS = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "computer_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
    }
)


def responses_finish_reason(response: Any) -> str | None:
    """Responses have a status, not a finish reason: map it onto the Chat Completions vocabulary.

    A response that never reached a final status (``in_progress``, ``queued``: a stream cut before its last event)
    has ``error``, as a cut chat stream has."""
    status = get(response, "status")
    if status == "completed":
        for item in get(response, "output", ()) or ():
            if get(item, "type") in _CLIENT_TOOL_CALLS:
                return "tool_calls"
        return "stop"
    if status == "incomplete":
        reason = get(get(response, "incomplete_details"), "reason")
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    if status in ("failed", "in_progress", "queued"):
        return UNFINISHED
    return status


def responses_response(response: Any) -> Attributes:
    attrs: Attributes = {}
    _response_identity(attrs, response)
    reason = responses_finish_reason(response)
    if reason:
        attrs[sc.RESPONSE_FINISH_REASONS] = (reason,)
    _usage(
        attrs,
        get(response, "usage"),
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "output_tokens_details",
    )
    conversation = get(get(response, "conversation"), "id")
    _set_str(attrs, sc.CONVERSATION_ID, conversation)
    return attrs


def responses_response_content(response: Any, scrub: Scrub) -> list[Message]:
    return msg.responses_output(response, responses_finish_reason(response), scrub)


_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamAccumulator:
    """Responses streams end with an event carrying the whole response: keep that, count nothing per delta."""

    __slots__ = ("capture", "error", "final", "head", "text")

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.head: Any = None
        self.final: Any = None
        self.error: str | None = None
        self.text: list[str] = []

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            if self.capture:
                self.text.append(event.delta)
        elif kind in _TERMINAL_EVENTS:
            self.final = event.response
        elif kind == "response.created":
            self.head = event.response
        elif kind == "error":
            self.error = str(getattr(event, "code", None) or "error")

    def attributes(self) -> Attributes:
        response = self.final if self.final is not None else self.head
        return responses_response(response) if response is not None else {}

    def output(self, scrub: Scrub) -> list[Message]:
        if self.final is not None:
            return responses_response_content(self.final, scrub)
        text = "".join(self.text)
        parts = [{"type": "text", "content": scrub(text)}] if text else []
        return [{"role": "assistant", "parts": parts, "finish_reason": "error"}]


# --- Embeddings -----------------------------------------------------------------------------------------------


def embeddings_request(kw: dict[str, Any]) -> Attributes:
    attrs: Attributes = {}
    encoding = kw.get("encoding_format")
    if given(encoding) and isinstance(encoding, str):
        attrs[sc.REQUEST_ENCODING_FORMATS] = (encoding,)
    _set_int(attrs, sc.EMBEDDINGS_DIMENSION_COUNT, kw.get("dimensions"))
    user = kw.get("user")
    if given(user) and isinstance(user, str):
        attrs[sc.USER_ID] = user
    return attrs


def embeddings_response(response: Any) -> Attributes:
    attrs: Attributes = {}
    _set_str(attrs, sc.RESPONSE_MODEL, get(response, "model"))
    usage = get(response, "usage")
    _set_int(attrs, sc.USAGE_INPUT_TOKENS, get(usage, "prompt_tokens"))
    data = get(response, "data", ())
    if data:
        embedding = get(data[0], "embedding")
        if isinstance(embedding, list):
            attrs[sc.EMBEDDINGS_DIMENSION_COUNT] = len(embedding)
    return attrs


# --- Legacy completions ---------------------------------------------------------------------------------------


def completion_request(kw: dict[str, Any]) -> Attributes:
    attrs: Attributes = {}
    _common_request(kw, attrs)
    _set_int(attrs, sc.REQUEST_MAX_TOKENS, kw.get("max_tokens"))
    return attrs


def completion_request_content(kw: dict[str, Any], scrub: Scrub) -> RequestContent:
    return RequestContent(input=msg.completion_input(kw.get("prompt"), scrub))


def completion_response(response: Any) -> Attributes:
    attrs: Attributes = {}
    _response_identity(attrs, response)
    attrs[sc.RESPONSE_FINISH_REASONS] = tuple(
        get(c, "finish_reason") or "" for c in get(response, "choices", ())
    )
    _usage(
        attrs, get(response, "usage"), "prompt_tokens", "completion_tokens", "", "completion_tokens_details"
    )
    return attrs


def completion_response_content(response: Any, scrub: Scrub) -> list[Message]:
    return msg.completion_output(get(response, "choices"), scrub)


class CompletionStreamAccumulator:
    __slots__ = ("capture", "finish", "identity", "text", "usage")

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.identity = _StreamIdentity()
        self.usage: Any = None
        self.text: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}

    def add(self, chunk: Any) -> None:
        if self.identity.pending:
            self.identity.add(chunk)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.finish_reason:
                self.finish[choice.index] = choice.finish_reason
            if self.capture and choice.text:
                self.text.setdefault(choice.index, []).append(choice.text)

    def attributes(self) -> Attributes:
        attrs: Attributes = dict(self.identity.attrs)
        indexes = sorted(set(self.text) | set(self.finish))
        if indexes:
            attrs[sc.RESPONSE_FINISH_REASONS] = tuple(self.finish.get(i, UNFINISHED) for i in indexes)
        _usage(attrs, self.usage, "prompt_tokens", "completion_tokens", "", "completion_tokens_details")
        return attrs

    def output(self, scrub: Scrub) -> list[Message]:
        indexes = sorted(set(self.text) | set(self.finish))
        return [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": scrub("".join(self.text.get(i, ())))}],
                "finish_reason": msg.map_finish_reason(self.finish.get(i)),
            }
            for i in indexes
        ]


# --- The table ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """How one API family maps onto a GenAI span."""

    name: str
    request_attributes: Callable[[dict[str, Any]], Attributes]
    response_attributes: Callable[[Any], Attributes]
    request_content: Callable[[dict[str, Any], Scrub], RequestContent] | None = None
    response_content: Callable[[Any, Scrub], list[Message]] | None = None
    stream_accumulator: Callable[[bool], Any] | None = None


CHAT = Operation(
    sc.OP_CHAT,
    chat_request,
    chat_response,
    chat_request_content,
    chat_response_content,
    ChatStreamAccumulator,
)
RESPONSES = Operation(
    sc.OP_CHAT,
    responses_request,
    responses_response,
    responses_request_content,
    responses_response_content,
    ResponsesStreamAccumulator,
)
EMBEDDINGS = Operation(sc.OP_EMBEDDINGS, embeddings_request, embeddings_response)
COMPLETIONS = Operation(
    sc.OP_TEXT_COMPLETION,
    completion_request,
    completion_response,
    completion_request_content,
    completion_response_content,
    CompletionStreamAccumulator,
)
