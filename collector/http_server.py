"""Serve's HTTP port: the Starlette application (:mod:`llmtap.collector.http_app`) on uvicorn, in one thread of
serve's process with an event loop of its own.

Serve binds the listening socket itself (its errors are serve's one-line messages, port 0 picks a free port, the
backlog is deep enough for a burst of connects) and hands it to uvicorn. uvicorn brings keep-alive, HTTP/1.1 framing
(h11, which refuses malformed lengths and chunks with 400) and thousands of idle connections without a thread each;
:mod:`llmtap.collector.http_limits` adds the read and write deadlines and the connection cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from llmtap.collector.http_app import Endpoints
from llmtap.collector.http_limits import HTTPLimits, LimitedH11Protocol

# Threads for requests' blocking work. Exports share the spool's fsyncs, so a few in parallel keep the disk busy;
# waiting requests queue with their bodies counted by the byte budget. Queries get their own, so a long query
# never holds up ingest (the query API itself runs two at once and answers 503 when both are busy).
EXPORT_THREADS = 8
QUERY_THREADS = 4
_GRACE_SECONDS = 3  # for requests in progress when serve stops
# For exports in a worker at stop: as long as serve waits for its writer to drain.
_EXPORTS_FINISH_SECONDS = 30
# Open files serve keeps for itself besides its HTTP connections: spool segments, chDB's parts and logs, gRPC,
# threads' pipes. The connection cap is sized below the open-file limit minus these.
_RESERVED_FILES = 256
_ACCEPT_FAILED = "socket.accept() out of system resource"
_ACCEPT_WARN_SECONDS = 60.0

log = logging.getLogger("llmtap.serve")


class HTTPServer:
    """A bound HTTP port; ``start()`` serves it from a thread, ``stop()`` closes it."""

    def __init__(self, host: str, port: int, limits: HTTPLimits, **endpoints: Any) -> None:
        """Bind (raising OSError as bind() does); ``endpoints`` are Endpoints' arguments but the executors."""
        self.socket = _bind(host, port, limits.backlog)
        self.port: int = self.socket.getsockname()[1]
        # Connections beyond the cap take files too until they are answered 503: past ``open_files`` they are
        # dropped at once, so that the spool and the store always find a file descriptor.
        self._file_limit = open_file_limit()  # raises the soft limit: once, here
        open_files = max(16, self._file_limit - _RESERVED_FILES)
        self.limits = dataclasses.replace(
            limits, max_connections=min(limits.max_connections, open_files * 3 // 4)
        )
        self._work = ThreadPoolExecutor(EXPORT_THREADS, thread_name_prefix="llmtap-http")
        self._queries = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="llmtap-query")
        # /health and /metrics: never queued behind exports waiting on a stalled disk.
        self._status = ThreadPoolExecutor(1, thread_name_prefix="llmtap-status")
        self.app = app = Endpoints(
            listen_host=host, work=self._work, queries=self._queries, status=self._status, **endpoints
        )
        self.health_for = app.health_for  # what GET /health answers a client (host, Authorization header)
        self._accept_warned = -_ACCEPT_WARN_SECONDS
        config = uvicorn.Config(
            app,
            http=LimitedH11Protocol.with_limits(self.limits, app.over_capacity, open_files),
            interface="asgi3",
            lifespan="off",
            ws="none",
            proxy_headers=False,  # the peer's address decides loopback-only answers: never a header's claim
            server_header=False,
            headers=[("server", "llmtap-serve")],
            timeout_keep_alive=limits.idle_seconds,  # type: ignore[arg-type]  # a float works, the hint says int
            timeout_graceful_shutdown=_GRACE_SECONDS,
            backlog=limits.backlog,
            log_config=None,  # serve's logging stays as serve set it up
            log_level=logging.ERROR,  # not a warning per malformed request an attacker sends
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="llmtap-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self.socket]))
            # What uvicorn cancelled after its grace period may wait to write to a client that does not read:
            # cut those connections, and let the requests end (answered, or their client gone) before the loop.
            state = self._server.server_state
            for connection in list(state.connections):
                connection.transport.abort()
            if state.tasks:
                loop.run_until_complete(asyncio.wait(list(state.tasks), timeout=1))
        finally:
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio logs a traceback for every failed accept (up to the backlog's worth per wake-up) when serve
        runs out of file descriptors: one line a minute instead."""
        if context.get("message") != _ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._accept_warned >= _ACCEPT_WARN_SECONDS:
            self._accept_warned = now
            log.warning(
                "cannot accept HTTP connections: %s (open-file limit %d); retrying each second",
                context.get("exception"), self._file_limit,
            )  # fmt: skip

    def stop(self) -> None:
        """Stop taking requests, finish the exports in progress, then release the port and the threads.

        Requests that have not reached a worker (their body still arriving, or queued for one) are answered 503
        with Retry-After at once. Exports a worker runs are finished and answered (200 when stored) before the
        port closes: they may be in the spool already, and an exporter told anything else would send them again.
        (Serve waited for them before too, only after the port had closed.) Then uvicorn closes the port and gives
        what is left (answers going out, queries) its grace period; a query still running after it gets 503."""
        self.app.stopping = True
        self._queries.shutdown(wait=False, cancel_futures=True)
        # An export stuck in an fsync on a dead disk must not hang serve's stop: wait for them a bounded time.
        finishing = threading.Thread(
            target=self._work.shutdown, kwargs={"wait": True, "cancel_futures": True}, daemon=True
        )
        finishing.start()
        finishing.join(_EXPORTS_FINISH_SECONDS)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_GRACE_SECONDS + 2)
        self.socket.close()
        self._status.shutdown(wait=False)


def open_file_limit() -> int:
    """The soft open-file limit, raised to the hard limit first where allowed (connections each take a file; a
    soft limit of 1024 is common). Without the resource module (Windows) or a limit: a number large enough."""
    try:
        import resource
    except ImportError:
        return 1 << 20
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            target = hard if hard != resource.RLIM_INFINITY else 1 << 20
            with contextlib.suppress(OSError, ValueError):  # e.g. macOS refuses more than OPEN_MAX
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 1 << 20
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
