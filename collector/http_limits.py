"""The read limits of serve's HTTP port that uvicorn lacks, on its own h11 protocol, plus the body byte budget.

uvicorn closes idle keep-alive connections, but only after a first response, and it has no header or body read
timeout. This protocol subclass adds, per connection, the limits Apache's mod_reqtimeout is known for:

- idle (connected or between requests, no byte of a request yet): uvicorn's keep-alive timeout, from the connect on;
- request head: complete within ``header_seconds`` of its first byte, else the connection is closed;
- body: complete within ``body_seconds`` plus one second per ``body_min_rate`` bytes received, else 408 and close
  (a trickle below the minimum rate runs out of time, however long it has been going);
- more than ``max_connections`` open: each request gets 503 with Retry-After and the connection is closed;
- every close is a lingering close (RFC 9112 §9.6): the write side first, then what the client still sends is read
  and dropped for a moment, so that its TCP stack does not discard serve's answer on a reset (a request refused
  before its body was read is answered while the body is still arriving).

Why a subclass: uvicorn's own ``limit_concurrency`` answers 503 without Retry-After (OTLP exporters retry only with
it), and uvicorn offers no hook for read deadlines; the h11 connection state (``their_state``) says exactly which
phase a request is in, so each timer follows it. Everything runs on the server's event loop: no thread per socket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# An ASGI application: scope, receive, send.
ASGIApp = Any


@dataclass(frozen=True)
class HTTPLimits:
    """How long and how slowly serve's HTTP clients may take, and how many may be connected."""

    header_seconds: float = 10.0  # from a request's first byte until its head is complete
    body_seconds: float = 10.0  # for a body, plus one second per body_min_rate bytes received
    body_min_rate: int = 1024  # bytes per second
    idle_seconds: float = 30.0  # an open connection without a request (keep-alive)
    max_connections: int = 1000  # open at once; more get 503 + Retry-After
    backlog: int = 2048  # connections the kernel queues before serve accepts them (uvicorn's default)


class ByteBudget:
    """Bounds the request bytes held in memory at once across all requests, taken as they arrive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()  # taken on the event loop and in the export workers

    def try_take(self, size: int, held: int = 0) -> bool:
        """Take ``size`` more bytes for a request that holds ``held`` already. A request alone may use the whole
        budget even if larger (up to --max-body-mb)."""
        with self._lock:
            if self._used > held and self._used + size > self.limit:
                return False
            self._used += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self._used -= size


_HEAD = "head"
_BODY = "body"
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20  # then the connection is reset: an answer this far back has been read


class _LingeringTransport(asyncio.Transport):
    """A connection's transport whose close() half-closes, then drops what arrives until the client closes too,
    _LINGER_SECONDS pass or _LINGER_BYTES arrive."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self.lingering = False
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        self.lingering = True
        try:
            self._transport.write_eof()  # after what is buffered: the answer goes out whole, then FIN
        except OSError:  # the client is gone already
            self._transport.close()
            return
        self._transport.resume_reading()
        self._timer = self._loop.call_later(_LINGER_SECONDS, self._transport.close)

    def drop(self, size: int) -> None:
        """Data that arrived while lingering."""
        self._dropped += size
        if self._dropped > _LINGER_BYTES:
            self._transport.close()

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: Any) -> None:
        self._transport.write(data)

    def pause_reading(self) -> None:
        if not self.lingering:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines, a minimum body rate and a connection cap (see the module)."""

    limits: ClassVar[HTTPLimits]
    over_capacity: ClassVar[ASGIApp]  # answers a request that came in above max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app_within_cap = self.app
        self.app = self._capped_app
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase_started = 0.0
        self._body_bytes = 0

    @classmethod
    def with_limits(cls, limits: HTTPLimits, over_capacity: ASGIApp) -> type[LimitedH11Protocol]:
        """A protocol class for one server (uvicorn instantiates the class it is given)."""
        return type(cls.__name__, (cls,), {"limits": limits, "over_capacity": over_capacity})

    async def _capped_app(self, scope: Any, receive: Any, send: Any) -> None:
        app = (
            self.over_capacity
            if len(self.connections) > self.limits.max_connections
            else self._app_within_cap
        )
        await app(scope, receive, send)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringTransport(transport, self.loop)
        super().connection_made(self._lingering)
        # uvicorn arms its keep-alive timeout after a response only: a client that never sends would stay forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            self._lingering.drop(len(data))
            return
        if self._phase is _BODY:
            self._body_bytes += len(data)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        self._lingering.closed()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of the phase the client is in: sending a head, sending a body, or neither."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            phase: str | None = _BODY
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            phase = _HEAD
        else:  # waiting for a request (uvicorn's keep-alive timer), for serve's answer, or closing
            phase = None
        if phase is not self._phase:
            self._enter(phase)

    def _enter(self, phase: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        self._phase_started = time.monotonic()
        self._body_bytes = 0
        if phase is not None:
            seconds = self.limits.header_seconds if phase is _HEAD else self.limits.body_seconds
            self._timer = self.loop.call_later(seconds, self._deadline)

    def _deadline(self) -> None:
        self._timer = None
        if self._phase is _BODY:
            earned = self._body_bytes / self.limits.body_min_rate
            remaining = self._phase_started + self.limits.body_seconds + earned - time.monotonic()
            if remaining > 0:
                self._timer = self.loop.call_later(remaining, self._deadline)
                return
        self._cut()

    def _cut(self) -> None:
        """Close a connection that ran out of time; a body still awaited gets 408 first."""
        phase, self._phase = self._phase, None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if phase is _BODY and cycle is not None and not cycle.response_started:
            cycle.response_started = True  # the application's own answer, if it comes, is dropped
            message = (
                f"request body not received in time: allowed {self.limits.body_seconds:g} s plus 1 s per "
                f"{self.limits.body_min_rate} bytes\n"
            ).encode()
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(message)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                h11.Data(data=message),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() answers http.disconnect
            cycle.message_event.set()
        self.transport.close()
