"""Serve's HTTP port: the Starlette application (:mod:`llmtap.collector.http_app`) on uvicorn, in one thread of
serve's process with an event loop of its own.

Serve binds the listening socket itself (its errors are serve's one-line messages, port 0 picks a free port, the
backlog is deep enough for a burst of connects) and hands it to uvicorn. uvicorn brings keep-alive, HTTP/1.1 framing
(h11, which refuses malformed lengths and chunks with 400) and thousands of idle connections without a thread each;
:mod:`llmtap.collector.http_limits` adds the read deadlines and the connection cap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
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


class HTTPServer:
    """A bound HTTP port; ``start()`` serves it from a thread, ``stop()`` closes it."""

    def __init__(self, host: str, port: int, limits: HTTPLimits, **endpoints: Any) -> None:
        """Bind (raising OSError as bind() does); ``endpoints`` are Endpoints' arguments but the executors."""
        self.socket = _bind(host, port, limits.backlog)
        self.port: int = self.socket.getsockname()[1]
        self._work = ThreadPoolExecutor(EXPORT_THREADS, thread_name_prefix="llmtap-http")
        self._queries = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="llmtap-query")
        app = Endpoints(listen_host=host, work=self._work, queries=self._queries, **endpoints)
        self.health_for = app.health_for  # what GET /health answers a client (host, Authorization header)
        config = uvicorn.Config(
            app,
            http=LimitedH11Protocol.with_limits(limits, app.over_capacity),
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
        try:
            loop.run_until_complete(self._server.serve(sockets=[self.socket]))
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop accepting, give requests in progress a moment, then release the port and the threads."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_GRACE_SECONDS + 2)
        self.socket.close()
        self._work.shutdown(wait=True, cancel_futures=True)  # an export in progress finishes its spool write
        self._queries.shutdown(wait=False, cancel_futures=True)


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
