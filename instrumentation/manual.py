"""The manual API, for LLM calls made without the OpenAI SDK: same span shape, same content rules, same metrics.

``log_interaction(...)`` reports a call that already happened; ``@capture`` records each call of a function that
talks to a model (its first argument, or ``prompt``/``messages``/``input``, is the prompt; its return value the
response).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

from llmtap.instrumentation import messages as msg
from llmtap.instrumentation import semconv as sc
from llmtap.instrumentation.calls import LLMCall, start_call
from llmtap.instrumentation.context import attribute_value
from llmtap.instrumentation.messages import Message, Scrub, get
from llmtap.instrumentation.operations import Operation, RequestContent
from llmtap.instrumentation.telemetry import ContentSettings, Telemetry, internal_error
from opentelemetry import context as otel_context
from opentelemetry import trace

F = TypeVar("F", bound=Callable[..., Any])
_default: Telemetry | None = None


def _telemetry() -> Telemetry:
    """The instrumentation's Telemetry when ``instrument()`` ran, else one from the global providers and env."""
    global _default
    from llmtap.instrumentation.patching import active_telemetry

    active = active_telemetry()
    if active is not None:
        return active
    if _default is None:
        _default = Telemetry(ContentSettings.resolve())
    return _default


def _input_messages(prompt: Any, scrub: Scrub) -> list[Message]:
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "parts": [{"type": "text", "content": scrub(prompt)}]}]
    if isinstance(prompt, Mapping):
        prompt = [prompt]
    return msg.chat_input(prompt, scrub)


def _output_messages(response: Any, finish_reason: str | None, scrub: Scrub) -> list[Message]:
    if response is None:
        return []
    if isinstance(response, str):
        return [msg.chat_output_message(response, None, finish_reason, scrub)]
    if get(response, "choices") is not None:  # an OpenAI-shaped completion object or dict
        return msg.chat_output(get(response, "choices"), scrub)
    if get(response, "role") is not None or get(response, "content") is not None:  # one message
        return [
            msg.chat_output_message(
                get(response, "content"), get(response, "tool_calls"), finish_reason, scrub
            )
        ]
    return [msg.chat_output_message(str(response), None, finish_reason, scrub)]


def _epoch_ns(value: datetime | float | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    return int(float(value) * 1e9)


def _request_attributes(options: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, name in (("temperature", sc.REQUEST_TEMPERATURE), ("top_p", sc.REQUEST_TOP_P)):
        if isinstance(options.get(key), (int, float)):
            attrs[name] = float(options[key])
    if isinstance(options.get("max_tokens"), int):
        attrs[sc.REQUEST_MAX_TOKENS] = options["max_tokens"]
    if options.get("stream") is not None:
        attrs[sc.REQUEST_STREAM] = bool(options["stream"])
    for key, value in (options.get("attributes") or {}).items():
        converted = attribute_value(value)
        if converted is not None:
            attrs[sc.ATTR_PREFIX + key] = converted
    for key, value in (options.get("metadata") or {}).items():
        attrs[sc.METADATA_PREFIX + key] = value if isinstance(value, str) else str(value)
    return attrs


def _response_attributes(options: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, name in (
        ("input_tokens", sc.USAGE_INPUT_TOKENS),
        ("output_tokens", sc.USAGE_OUTPUT_TOKENS),
        ("cached_tokens", sc.USAGE_CACHE_READ_INPUT_TOKENS),
        ("reasoning_tokens", sc.USAGE_REASONING_OUTPUT_TOKENS),
    ):
        if isinstance(options.get(key), int):
            attrs[name] = options[key]
    if options.get("response_model"):
        attrs[sc.RESPONSE_MODEL] = str(options["response_model"])
    if options.get("response_id"):
        attrs[sc.RESPONSE_ID] = str(options["response_id"])
    if options.get("finish_reason"):
        attrs[sc.RESPONSE_FINISH_REASONS] = (str(options["finish_reason"]),)
    return attrs


def _operation(name: str, prompt: Any, system: Any, options: dict[str, Any]) -> Operation:
    def request_content(_kwargs: dict[str, Any], scrub: Scrub) -> RequestContent:
        return RequestContent(
            system=msg.system_instructions(system, scrub) if system else None,
            input=_input_messages(prompt, scrub),
        )

    def response_content(response: Any, scrub: Scrub) -> list[Message]:
        return _output_messages(response, options.get("finish_reason"), scrub)

    return Operation(
        name,
        lambda _kwargs: _request_attributes(options),
        lambda _response: _response_attributes(options),
        request_content,
        response_content,
    )


def log_interaction(
    prompt: Any,
    response: Any = None,
    model: str | None = None,
    *,
    provider: str = "custom",
    operation: str = sc.OP_CHAT,
    system: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    finish_reason: str | None = "stop",
    response_model: str | None = None,
    response_id: str | None = None,
    duration: float | None = None,
    start_time: datetime | float | None = None,
    end_time: datetime | float | None = None,
    time_to_first_chunk: float | None = None,
    error: BaseException | str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    stream: bool | None = None,
    attributes: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Record one LLM call made outside the OpenAI SDK, as the same GenAI span the instrumentation emits.

    ``prompt`` is a string or OpenAI-style chat messages; ``response`` a string, a message dict or a completion
    object. Times are epoch seconds or datetimes; by default the call ends now and lasted ``duration`` seconds.
    Never raises: a bad argument is logged and the call is recorded as well as possible.
    """
    try:
        options = dict(locals())
        end_ns = _epoch_ns(end_time) or time.time_ns()
        start_ns = _epoch_ns(start_time)
        if start_ns is None:
            start_ns = end_ns - int((duration or 0.0) * 1e9)
        op = _operation(operation, prompt, system, options)
        call = start_call(
            _telemetry(), op, {"model": model}, (server_address, server_port, provider), start_ns
        )
        if time_to_first_chunk is not None:
            call.first_chunk_ns = start_ns + int(time_to_first_chunk * 1e9)
        _finish(call, response, error, end_ns)
    except Exception:
        internal_error("log_interaction")


def _finish(
    call: LLMCall, response: Any, error: BaseException | str | None, end_ns: int | None = None
) -> None:
    attrs = call.operation.response_attributes(response)
    build = call.operation.response_content
    if response is not None and build is not None and call.capturing:
        attrs[sc.OUTPUT_MESSAGES] = call.output_messages_attribute(build(response, call.scrubber))
    if error is None:
        call.end(attrs, end_ns)
    elif isinstance(error, str):
        call.fail(_ReportedError(error), attrs, error_type=error, end_time_ns=end_ns)
    else:
        call.fail(error, attrs, end_time_ns=end_ns)


class _ReportedError(Exception):
    """An error given to ``log_interaction`` as a string (its error type)."""


def _prompt_of(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for key in ("prompt", "messages", "input"):
        if key in kwargs:
            return kwargs[key]
    return args[0] if args else None


@overload
def capture(func: F) -> F: ...


@overload
def capture(
    func: None = None, *, model: str | None = None, provider: str = "custom", operation: str = sc.OP_CHAT
) -> Callable[[F], F]: ...


def capture(
    func: F | None = None, *, model: str | None = None, provider: str = "custom", operation: str = sc.OP_CHAT
) -> Any:
    """Decorator: each call of the function becomes one GenAI span (current while it runs, so nested spans attach).

    ``@llmtap.capture`` or ``@llmtap.capture(model="llama3", provider="ollama")``; a ``model=`` keyword argument of
    the call overrides ``model``. Exceptions are recorded and re-raised unchanged.
    """
    if func is None:
        return lambda f: capture(f, model=model, provider=provider, operation=operation)

    def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[LLMCall | None, Any]:
        try:
            call_model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else model
            op = _operation(operation, _prompt_of(func, args, kwargs), None, {"finish_reason": "stop"})
            call = start_call(_telemetry(), op, {"model": call_model}, (None, None, provider))
            return call, otel_context.attach(trace.set_span_in_context(call.span))
        except Exception:
            internal_error("capture (start)")
            return None, None

    def end(call: LLMCall | None, token: Any, result: Any, error: BaseException | None) -> None:
        if call is None:
            return
        try:
            otel_context.detach(token)
            _finish(call, result, error)
        except Exception:
            internal_error("capture (end)")

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call, token = begin(args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                end(call, token, None, exc)
                raise
            end(call, token, result, None)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call, token = begin(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            end(call, token, None, exc)
            raise
        end(call, token, result, None)
        return result

    return wrapper
