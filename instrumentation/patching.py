"""Which openai SDK methods we wrap, and the wrappers themselves.

We patch resource classes (not client instances), so clients created before or after ``instrument()`` are both
covered, and ``unpatch()`` puts the original functions back. Methods missing from the installed openai version
are skipped, which is how one table serves openai 1.x, 2.x and 3.x.

Exactly one span per call: a ContextVar marks "inside an instrumented call", so a wrapped method that calls another
wrapped method (``parse()`` on versions that route through ``create()``) does not open a second span. The
``stream()`` helpers call ``create(stream=True)`` lazily, when their manager is entered: that call opens the span,
and the helper streams' own ``close()`` (which closes the HTTP response directly) is wrapped so it ends it.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wrapt
from llmtap.instrumentation import operations, raw_responses
from llmtap.instrumentation.calls import LLMCall, server_of, start_call
from llmtap.instrumentation.operations import Operation
from llmtap.instrumentation.streams import finish_helper_stream, wrap_stream
from llmtap.instrumentation.telemetry import Telemetry, internal_error
from opentelemetry import context as otel_context
from opentelemetry import trace

_log = logging.getLogger(__name__)
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("llmtap_in_call", default=False)


@dataclass(frozen=True)
class Target:
    module: str
    attribute: str  # "Class.method"
    operation: Operation | None  # None: a helper stream's close()
    is_async: bool


def _targets() -> list[Target]:
    chat, responses = operations.CHAT, operations.RESPONSES
    table = [
        ("openai.resources.chat.completions", "Completions.create", "AsyncCompletions.create", chat),
        ("openai.resources.chat.completions", "Completions.parse", "AsyncCompletions.parse", chat),
        # openai 1.x before parse() left beta
        ("openai.resources.beta.chat.completions", "Completions.parse", "AsyncCompletions.parse", chat),
        ("openai.resources.responses", "Responses.create", "AsyncResponses.create", responses),
        ("openai.resources.responses", "Responses.parse", "AsyncResponses.parse", responses),
        ("openai.resources.embeddings", "Embeddings.create", "AsyncEmbeddings.create", operations.EMBEDDINGS),
        (
            "openai.resources.completions",
            "Completions.create",
            "AsyncCompletions.create",
            operations.COMPLETIONS,
        ),
        ("openai.lib.streaming.chat", "ChatCompletionStream.close", "AsyncChatCompletionStream.close", None),
        ("openai.lib.streaming.responses", "ResponseStream.close", "AsyncResponseStream.close", None),
    ]
    targets = []
    for module, sync_attr, async_attr, operation in table:
        targets.append(Target(module, sync_attr, operation, False))
        targets.append(Target(module, async_attr, operation, True))
    return targets


class _Holder:
    """The live Telemetry, read by every wrapper call; None once uninstrumented (wrappers then pass through)."""

    telemetry: Telemetry | None = None


_ACTIVE = _Holder()


def active_telemetry() -> Telemetry | None:
    return _ACTIVE.telemetry


_patched: list[tuple[Any, str]] = []


def _result(call: LLMCall, result: Any, is_async: bool) -> Any:
    """Follow the returned object to the end of the call; the app gets it back unchanged or transparently proxied."""
    try:
        if isinstance(result, raw_responses.STREAM_TYPES):
            return wrap_stream(result, call, is_async=False)
        if isinstance(result, raw_responses.ASYNC_STREAM_TYPES):
            return wrap_stream(result, call, is_async=True)
        if isinstance(result, _LEGACY_RAW_TYPES):
            return raw_responses.wrap_raw(result, call, legacy=True, is_async=is_async)
        if isinstance(result, _RAW_TYPES):
            return raw_responses.wrap_raw(result, call, legacy=False, is_async=is_async)
        call.succeed(result)
    except Exception:
        internal_error("recording a response")
        if not call.ended:
            try:
                call.end({})
            except Exception:
                internal_error("ending a span")
    return result


def _start(operation: Operation, instance: Any, kwargs: dict[str, Any]) -> LLMCall | None:
    telemetry = _ACTIVE.telemetry
    if telemetry is None or _IN_CALL.get():
        return None
    try:
        return start_call(telemetry, operation, kwargs, server_of(instance._client))
    except Exception:
        internal_error("starting a span")
        return None


def _fail(call: LLMCall, error: BaseException) -> None:
    try:
        call.fail(error)
    except Exception:
        internal_error("recording an error")


def _sync_wrapper(operation: Operation) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _start(operation, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        in_call = _IN_CALL.set(True)
        active = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            _fail(call, error)
            raise
        finally:
            otel_context.detach(active)
            _IN_CALL.reset(in_call)
        return _result(call, result, is_async=False)

    return wrapper


def _async_wrapper(operation: Operation) -> Callable[..., Any]:
    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _start(operation, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        in_call = _IN_CALL.set(True)
        active = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            _fail(call, error)
            raise
        finally:
            otel_context.detach(active)
            _IN_CALL.reset(in_call)
        return _result(call, result, is_async=True)

    return wrapper


def _helper_close_sync(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _finish_helper(instance)


async def _helper_close_async(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _finish_helper(instance)


def _finish_helper(instance: Any) -> None:
    try:
        finish_helper_stream(instance)
    except Exception:
        internal_error("closing a helper stream")


_LEGACY_RAW_TYPES: tuple[type, ...] = ()
_RAW_TYPES: tuple[type, ...] = ()


def _load_openai_types() -> None:
    """Classes we recognise in return values, resolved from whatever openai version is installed."""
    global _LEGACY_RAW_TYPES, _RAW_TYPES
    import openai
    from openai import _legacy_response, _response, _types

    raw_responses.STREAM_TYPES = (openai.Stream,)
    raw_responses.ASYNC_STREAM_TYPES = (openai.AsyncStream,)
    _LEGACY_RAW_TYPES = (_legacy_response.LegacyAPIResponse,)
    _RAW_TYPES = (_response.APIResponse, _response.AsyncAPIResponse)
    operations.SENTINEL_TYPES = tuple(
        t for t in (getattr(_types, "NotGiven", None), getattr(_types, "Omit", None)) if isinstance(t, type)
    )


def patch(telemetry: Telemetry) -> None:
    """Wrap every target the installed openai has (idempotent: a second call only swaps the telemetry)."""
    _ACTIVE.telemetry = telemetry
    if _patched:
        return
    _load_openai_types()
    for target in _targets():
        try:
            module = importlib.import_module(target.module)
            class_name, method = target.attribute.split(".")
            owner = getattr(module, class_name)
            original = owner.__dict__.get(method)
        except (ImportError, AttributeError):
            continue
        if original is None or isinstance(original, wrapt.FunctionWrapper):
            continue
        if target.operation is None:
            wrapper = _helper_close_async if target.is_async else _helper_close_sync
        else:
            wrapper = (_async_wrapper if target.is_async else _sync_wrapper)(target.operation)
        wrapt.wrap_function_wrapper(owner, method, wrapper)
        _patched.append((owner, method))
    _log.debug("llmtap: wrapped %d openai methods", len(_patched))


def unpatch() -> None:
    """Restore the original methods."""
    _ACTIVE.telemetry = None
    while _patched:
        owner, method = _patched.pop()
        current = owner.__dict__.get(method)
        if isinstance(current, wrapt.FunctionWrapper):
            setattr(owner, method, current.__wrapped__)


def patched_methods() -> list[str]:
    """``Class.method`` names currently wrapped (for diagnostics and tests)."""
    return [f"{owner.__module__}.{owner.__qualname__}.{method}" for owner, method in _patched]
