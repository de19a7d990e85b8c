"""Transparent proxies around the SDK's streams: the app sees the same object, the span sees every chunk.

``wrapt.ObjectProxy`` keeps ``isinstance``, attribute access (``response``, ``_iterator``...) and ``repr`` identical;
we only override iteration, ``close``/``aclose`` and the context-manager methods so the span ends exactly once:
on exhaustion, on an error, on close, when the app breaks out of a loop, or when the stream is garbage collected
without any of those (``__del__``). Per-chunk work is one accumulator call.

An exception raised by the app's own code inside ``with stream:`` before the stream was read to its end ends the
stream early: it is recorded as an error of the call's consumer, ``error.type`` its class and the span status
ERROR, as the official instrumentation does, and it reaches the app unchanged (one raised after the end leaves the
completed call a success). Inside a ``with`` block, a loop the app leaves
(by ``break`` or an exception) does not end the span; the block's exit does, and it is the only place that sees the
exception. A bare ``for`` loop that raises cannot be told from one that breaks (Python closes the iterator without
showing the exception to it), so that span ends without an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import wrapt
from llmtap.instrumentation.calls import LLMCall
from llmtap.instrumentation.telemetry import internal_error


class StreamState:
    """Accumulates chunks for one streamed call and closes its span once."""

    __slots__ = ("accumulator", "call", "done", "entered")

    def __init__(self, call: LLMCall) -> None:
        self.call = call
        self.accumulator = call.operation.stream_accumulator(call.capturing)  # type: ignore[misc]
        self.done = False
        self.entered = False  # inside the app's ``with stream:`` block, whose exit ends the span

    def left_loop(self) -> None:
        """The app broke out of a loop (or raised in it) and dropped the iterator."""
        if not self.entered:
            self.finish()

    def on_chunk(self, chunk: Any) -> None:
        try:
            if self.call.first_chunk_ns is None:
                self.call.mark_first_chunk()
            self.accumulator.add(chunk)
        except Exception:
            internal_error("reading a stream chunk")

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            call = self.call
            attrs = self.accumulator.attributes()
            if call.capturing:
                attrs["gen_ai.output.messages"] = call.output_messages_attribute(
                    self.accumulator.output(call.scrubber)
                )
            stream_error = getattr(self.accumulator, "error", None)
            if error is not None:
                call.fail(error, attrs)
            elif stream_error is not None:
                call.fail(_StreamErrorEvent(stream_error), attrs)
            else:
                call.end(attrs)
        except Exception:
            internal_error("ending a stream span")


class _StreamErrorEvent(Exception):
    """A Responses stream reported an ``error`` event without the SDK raising."""


class StreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Proxy for ``openai.Stream`` (chat chunks, Responses events, completion chunks)."""

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    def __next__(self) -> Any:
        try:
            item = self.__wrapped__.__next__()
        except StopIteration:
            self._self_state.finish()
            raise
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.on_chunk(item)
        return item

    def __iter__(self) -> Iterator[Any]:
        return self._self_iterate()

    def _self_iterate(self) -> Iterator[Any]:
        state = self._self_state
        try:
            for item in self.__wrapped__:
                state.on_chunk(item)
                yield item
        except GeneratorExit:  # the app broke out of its loop (or raised in it) and dropped the iterator
            state.left_loop()
            raise
        except BaseException as exc:
            state.finish(exc)
            raise
        state.finish()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.finish()

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        self._self_state.entered = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_state.finish(exc)

    def __del__(self) -> None:
        state = getattr(self, "_self_state", None)
        if state is not None:
            state.finish()


class AsyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Proxy for ``openai.AsyncStream``."""

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    async def __anext__(self) -> Any:
        try:
            item = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_state.finish()
            raise
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.on_chunk(item)
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_iterate()

    async def _self_iterate(self) -> AsyncIterator[Any]:
        state = self._self_state
        try:
            async for item in self.__wrapped__:
                state.on_chunk(item)
                yield item
        except GeneratorExit:
            state.left_loop()
            raise
        except BaseException as exc:
            state.finish(exc)
            raise
        state.finish()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_state.finish()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_state.finish()

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        self._self_state.entered = True
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_state.finish(exc)

    def __del__(self) -> None:
        state = getattr(self, "_self_state", None)
        if state is not None:
            state.finish()


def wrap_stream(stream: Any, call: LLMCall, is_async: bool) -> Any:
    """Return the proxy the app gets instead of ``stream``; on any problem, the untouched stream."""
    if call.operation.stream_accumulator is None:
        call.end({})
        return stream
    state = StreamState(call)
    return AsyncStreamProxy(stream, state) if is_async else StreamProxy(stream, state)


def finish_helper_stream(helper: Any) -> None:
    """``ChatCompletionStream.close()`` and friends close the HTTP response directly, bypassing the raw stream's
    ``close``: after one of them ran, end the span of the proxied raw stream inside it."""
    raw = getattr(helper, "_raw_stream", None)
    if isinstance(raw, (StreamProxy, AsyncStreamProxy)):
        raw._self_state.finish()
