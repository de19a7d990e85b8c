"""The read and write limits of serve's HTTP port that uvicorn lacks, on its own h11 protocol, plus the body byte
budget.

uvicorn closes idle keep-alive connections, but only after a first response, and it has no header, body or write
timeout. This protocol subclass adds, per connection, limits like those of Apache's mod_reqtimeout:

- idle (connected or between requests, no byte of a request yet): uvicorn's keep-alive timeout, from the connect on;
- request head: complete within ``header_seconds`` of its first byte, else the connection is closed;
- body: complete within ``body_seconds`` plus one second per ``body_min_rate`` bytes received, else 408 and close
  (a trickle below the minimum rate runs out of time, however long it has been going);
- writes: a connection with an answer waiting to go out that makes no progress for ``write_seconds`` (checked
  every ``write_seconds``, so cut between one and two of them after the client stopped reading) is aborted;
- connections accepted while more than ``max_connections`` are open are refused: each request on them gets 503
  with Retry-After and the connection is closed (connections already open keep being served);
- serve's own closes are lingering closes (RFC 9112 §9.6): the write side first, then what the client still sends
  is read and dropped for a moment, so that its TCP stack does not discard serve's answer on a reset (a request
  refused before its body was read is answered while the body is still arriving);
- a client that half-closes after sending its request (SHUT_WR) still gets the answer, then the connection closes.

Why a subclass: uvicorn's own ``limit_concurrency`` answers 503 without Retry-After (OTLP exporters retry only with
it), and uvicorn offers no hook for these deadlines; the h11 connection state (``their_state``) says exactly which
phase a request is in, so each timer follows it. It relies on uvicorn internals (``cycle``, ``connections``,
``timeout_keep_alive_task``, ``eof_received``, ``conn.trailing_data``), hence the upper version bounds in pyproject.toml. Everything
runs on the server's event loop: no thread per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
    write_seconds: float = 10.0  # an answer the client does not read: aborted after this without progress
    max_connections: int = 1000  # open at once; more get 503 + Retry-After (lowered to fit open-file limit)
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
_UNSENT_BYTES = 128 << 10
_REFUSED_WAIT_SECONDS = 1.0  # for the request on a connection above the cap, to be answered 503
_LINGER_BYTES = 1 << 20  # then the connection is reset: an answer this far back has been read


class _LingeringTransport(asyncio.Transport):
    """A connection's transport whose close() half-closes, then drops what arrives until the client closes too,
    _LINGER_SECONDS pass or _LINGER_BYTES arrive; and whose writes must make progress (``write_seconds``)."""

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, write_seconds: float
    ) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self.lingering = False
        self.eof_received = False  # the client half-closed: nothing more to read, nothing to linger for
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._write_seconds = write_seconds
        self._written = 0
        self._flushed_at_check = 0
        self._write_timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        self.lingering = True
        if self.eof_received:  # the client sends nothing more: close once the answer is out (or aborted)
            self._transport.close()
            return
        try:
            self._transport.write_eof()  # after what is buffered: the answer goes out whole, then FIN
        except OSError:  # the client is gone already
            self._transport.close()
            return
        self._transport.resume_reading()
        self._timer = self._loop.call_later(_LINGER_SECONDS, self._linger_over)

    def close_now(self) -> None:
        """Close without lingering: nothing was answered that the client could lose to a reset."""
        self.lingering = True
        self._transport.close()

    def _linger_over(self) -> None:
        """The client has had its moment. close() would wait for the write buffer to empty, and a client that does
        not read would keep it for ever: with the buffer empty the socket goes now, else the write deadline (still
        armed) aborts it unless the client reads."""
        if not self._transport.get_write_buffer_size():
            self._transport.abort()
        else:
            self._transport.close()

    def drop(self, size: int) -> None:
        """Data that arrived while lingering."""
        self._dropped += size
        if self._dropped > _LINGER_BYTES:
            self._transport.close()

    def closed(self) -> None:
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: Any) -> None:
        self._transport.write(data)
        self._written += len(data)
        self._watch_writes()

    def _flushed(self) -> int:
        """Bytes handed to the kernel so far (what asyncio no longer buffers)."""
        return self._written - self._transport.get_write_buffer_size()

    def _watch_writes(self) -> None:
        if self._write_timer is None and self._transport.get_write_buffer_size():
            self._flushed_at_check = self._flushed()
            self._write_timer = self._loop.call_later(self._write_seconds, self._check_writes)

    def _check_writes(self) -> None:
        """Abort a connection whose buffered answer made no progress for a whole ``write_seconds``: uvicorn's
        send() waits for the buffer to drain without a timeout, and close() waits for it to empty."""
        self._write_timer = None
        if not self._transport.get_write_buffer_size():
            return
        if self._flushed() == self._flushed_at_check:
            self._transport.abort()
            return
        self._watch_writes()

    def abort(self) -> None:
        self._transport.abort()

    def pause_reading(self) -> None:
        if not self.lingering:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


def _bound_unsent(transport: asyncio.Transport) -> None:
    """Let the kernel hold at most _UNSENT_BYTES of answers the client has not taken (Linux, macOS), instead of
    the megabytes of its send buffer: past them asyncio buffers, and the write deadline sees a client that does
    not read within seconds, however slowly serve answers it. What is in flight is not limited (throughput
    stays)."""
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    sock = transport.get_extra_info("socket")
    if option is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, _UNSENT_BYTES)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines, a minimum body rate and a connection cap (see the module)."""

    limits: ClassVar[HTTPLimits]
    over_capacity: ClassVar[ASGIApp]  # answers each request on a connection accepted above max_connections
    open_files: ClassVar[int] = 1 << 20  # connections beyond it are reset at once

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app_within_cap = self.app
        self.app = self._capped_app
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase_started = 0.0
        self._body_bytes = 0
        self._over_cap = False

    @classmethod
    def with_limits(
        cls, limits: HTTPLimits, over_capacity: ASGIApp, open_files: int = 1 << 20
    ) -> type[LimitedH11Protocol]:
        """A protocol class for one server (uvicorn instantiates the class it is given). Connections beyond
        ``open_files`` are dropped without an answer: the rest of the process's file descriptors are not theirs."""
        attributes = {"limits": limits, "over_capacity": over_capacity, "open_files": open_files}
        return type(cls.__name__, (cls,), attributes)

    async def _capped_app(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.over_capacity if self._over_cap else self._app_within_cap
        await app(scope, receive, send)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringTransport(transport, self.loop, self.limits.write_seconds)
        _bound_unsent(transport)
        super().connection_made(self._lingering)
        # Decided once, on the connect: the connections already open keep being served, this one is refused.
        self._over_cap = len(self.connections) > self.limits.max_connections
        if len(self.connections) > self.open_files:
            self._lingering.abort()
            return
        # uvicorn arms its keep-alive timeout after a response only: a client that never sends would stay forever.
        # A refused connection holds a file descriptor that others need: its request must come at once.
        wait = self.timeout_keep_alive
        if self._over_cap:
            wait = min(wait, self.limits.header_seconds, _REFUSED_WAIT_SECONDS)
        self.timeout_keep_alive_task = self.loop.call_later(wait, self.timeout_keep_alive_handler)

    def eof_received(self) -> bool | None:
        """The client half-closed (shutdown(SHUT_WR) after its request, as some clients do). uvicorn returns None,
        so asyncio closes the transport and the answer to a request read whole is lost (the client, answered
        nothing, sends it again: stored twice). That request is answered, then the connection closed; in any
        other phase (a request incomplete, none at all) the connection closes as before."""
        self._lingering.eof_received = True
        cycle = self.cycle
        if (
            not self._lingering.lingering
            and cycle is not None
            and not cycle.response_complete
            and not cycle.more_body
        ):
            cycle.keep_alive = False  # uvicorn closes after the answer
            return True
        return None

    def timeout_keep_alive_handler(self) -> None:
        """An idle connection is owed no answer: closed at once, not lingering, so its file descriptor is free
        (an attacker's idle connections above the cap would otherwise hold theirs a moment longer)."""
        if not self.transport.is_closing():
            self.conn.send(h11.ConnectionClosed())
            self._lingering.close_now()

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
