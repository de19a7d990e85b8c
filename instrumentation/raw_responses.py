"""``with_raw_response`` and ``with_streaming_response``: the same methods, returning a response wrapper.

The body is never read on the app's behalf. A raw (``LegacyAPIResponse``) non-streamed body is already in memory,
so it is decoded from its bytes right away and the span ends. Otherwise the wrapper is proxied: when the app calls
``parse()`` we see the parsed result (a stream gets a stream proxy tied to the same span); when it closes the
response (the ``with`` block of ``with_streaming_response`` does) or drops it, the span ends with what is known:
the decoded body if the app read it, the status code otherwise. A streamed body the app reads itself
of a streamed call (``http_response.iter_bytes()``...) ends the span when it is exhausted or closed: the HTTP response's byte stream is
proxied, and the HTTP client closes it at either. Once ``parse()`` has handed out a stream, that stream ends the
span, with what its chunks said, even when the response is closed first.
"""

from __future__ import annotations

import json
from typing import Any

import wrapt
from llmtap.instrumentation import semconv as sc
from llmtap.instrumentation.calls import LLMCall
from llmtap.instrumentation.streams import AsyncStreamProxy, StreamProxy, wrap_stream
from llmtap.instrumentation.telemetry import internal_error

# Filled in by the instrumentor from the installed openai: (Stream, AsyncStream).
STREAM_TYPES: tuple[type, ...] = ()
ASYNC_STREAM_TYPES: tuple[type, ...] = ()


def _decoded_body(raw: Any) -> Any:
    """The JSON body if it has been read already, else None (reading it here would consume the app's stream)."""
    try:
        return json.loads(raw.http_response.content)  # raises ResponseNotRead when unread: no side effect
    except Exception:
        return None


def finish_from_raw(call: LLMCall, raw: Any) -> None:
    """End the span from a response wrapper the app did not ``parse()``."""
    if call.ended:
        return
    try:
        body = _decoded_body(raw)
        # A Responses body always carries "error": null; only a non-null "error" makes an error body.
        if isinstance(body, dict) and body.get("error") is None:
            call.succeed(body)
            return
        attrs: dict[str, Any] = {}
        status = getattr(raw, "status_code", None)
        if isinstance(status, int):
            attrs[sc.HTTP_STATUS_CODE] = status
        call.end(attrs)
    except Exception:
        internal_error("ending a raw-response span")


def adopt_parsed(call: LLMCall, parsed: Any) -> Any:
    """What the app's ``parse()`` returned: a stream to follow, or the final model to record."""
    if call.ended:
        return parsed
    try:
        if isinstance(parsed, STREAM_TYPES):
            return wrap_stream(parsed, call, is_async=False)
        if isinstance(parsed, ASYNC_STREAM_TYPES):
            return wrap_stream(parsed, call, is_async=True)
        if hasattr(parsed, "model_fields_set") or isinstance(parsed, dict):
            call.succeed(parsed)
    except Exception:
        internal_error("reading a parsed raw response")
    return parsed


class _Finisher:
    """Ends the span of one response wrapper: through the stream ``parse()`` handed out, if any, else from the raw
    response."""

    __slots__ = ("call", "raw", "stream")

    def __init__(self, call: LLMCall, raw: Any) -> None:
        self.call = call
        self.raw = raw
        self.stream: Any = None

    def adopt(self, parsed: Any) -> Any:
        result = adopt_parsed(self.call, parsed)
        if isinstance(result, (StreamProxy, AsyncStreamProxy)):
            self.stream = result
        return result

    def finish(self) -> None:
        if self.stream is not None:
            self.stream._self_state.finish()
        else:
            finish_from_raw(self.call, self.raw)


class _ByteStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """The HTTP response's byte stream, which the HTTP client closes when the body is exhausted or closed."""

    def __init__(self, wrapped: Any, finisher: _Finisher) -> None:
        super().__init__(wrapped)
        self._self_finisher = finisher

    def __iter__(self) -> Any:
        return iter(self.__wrapped__)

    def __aiter__(self) -> Any:
        return self.__wrapped__.__aiter__()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_finisher.finish()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_finisher.finish()


def _follow_body(raw: Any, finisher: _Finisher) -> None:
    """Proxy the byte stream of ``raw``'s HTTP response, so that its end ends the span: for a streamed call only,
    whose SSE body says nothing the status code does not (a JSON body is decoded after the read that closes it)."""
    if not getattr(raw, "_stream", False):
        return
    try:
        http_response = raw.http_response
        stream = http_response.stream
        if stream is not None and not isinstance(stream, _ByteStreamProxy) and not http_response.is_closed:
            http_response.stream = _ByteStreamProxy(stream, finisher)
    except Exception:
        internal_error("following a raw response body")


class RawResponseProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Proxy for ``LegacyAPIResponse`` (streamed) and ``APIResponse``."""

    def __init__(self, wrapped: Any, call: LLMCall) -> None:
        super().__init__(wrapped)
        self._self_finisher = _Finisher(call, wrapped)
        _follow_body(wrapped, self._self_finisher)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_finisher.adopt(self.__wrapped__.parse(*args, **kwargs))

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_finisher.finish()

    def __del__(self) -> None:
        finisher = getattr(self, "_self_finisher", None)
        if finisher is not None:
            finisher.finish()


class AsyncRawResponseProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Proxy for ``AsyncAPIResponse``, whose ``parse()`` and ``close()`` are coroutines."""

    def __init__(self, wrapped: Any, call: LLMCall) -> None:
        super().__init__(wrapped)
        self._self_finisher = _Finisher(call, wrapped)
        _follow_body(wrapped, self._self_finisher)

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_finisher.adopt(await self.__wrapped__.parse(*args, **kwargs))

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_finisher.finish()

    def __del__(self) -> None:
        finisher = getattr(self, "_self_finisher", None)
        if finisher is not None:
            finisher.finish()


def wrap_raw(raw: Any, call: LLMCall, legacy: bool, is_async: bool) -> Any:
    """Handle a response wrapper returned by an instrumented method."""
    if legacy and not getattr(raw, "_stream", False):
        finish_from_raw(call, raw)  # body already read: nothing to wait for
        return raw
    if is_async and not legacy:
        return AsyncRawResponseProxy(raw, call)
    return RawResponseProxy(raw, call)
