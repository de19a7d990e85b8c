"""What serve answers on its HTTP port (:4318): OTLP/HTTP, /health, /metrics and the local query API, as Starlette
routes. Blocking work (decoding, the spool's fsync, ClickHouse queries, serve's state) runs in thread pools, never on
the event loop.

Follows the OTLP/HTTP specification: POST /v1/traces, /v1/metrics and /v1/logs with protobuf or JSON bodies,
optionally gzip-compressed; 200 with an Export*ServiceResponse (carrying partial_success when invalid items were
dropped); errors as google.rpc.Status in the request's encoding: 400 malformed, 401 missing/wrong token,
404 no such route, 405 wrong method (with Allow), 411 no length, 413 too large, 415 unsupported type or encoding,
429 overloaded and 503 store down, too many connections or serve stopping, all three with Retry-After. Other
routes answer errors as ``{"error": ...}`` JSON. Framing errors are h11's (400 and close), read timeouts
:mod:`llmtap.collector.http_limits`'s (408 and close).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar

from google.rpc import status_pb2
from llmtap.collector import cross_origin
from llmtap.collector.decode import (
    JSON,
    PROTOBUF,
    SIGNALS,
    DecodeError,
    Signal,
    decompress,
    encode_response,
    media_type,
    parse,
)
from llmtap.collector.http_limits import ByteBudget
from llmtap.collector.pipeline import Refused
from llmtap.collector.query_api import QueryAPI, QueryBusy, QueryError
from llmtap.collector.receiver import Receiver
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("llmtap.serve")

OTLP_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
# google.rpc.Code for the Status body of each HTTP error.
_RPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
_OVERLOADED = "llmtap serve is overloaded (too many requests in flight); retry later"
_STOPPING = "llmtap serve is stopping; retry later"
_T = TypeVar("_T")


class ServeStopping(Exception):
    """Serve is stopping: the request has not reached its worker, and will not."""


class Endpoints:
    """The ASGI application of serve's HTTP port."""

    def __init__(
        self,
        receiver: Receiver,
        query_api: QueryAPI | None,
        health: Callable[[bool], dict[str, Any]],
        metrics_text: Callable[[], str],
        *,
        listen_host: str,
        max_body_bytes: int,
        inflight_body_bytes: int,
        work: Executor,
        queries: Executor,
        status: Executor,
    ) -> None:
        self.receiver = receiver
        self.query_api = query_api
        self.health = health
        self.metrics_text = metrics_text
        self.listen_host = listen_host
        self.max_body_bytes = max_body_bytes
        self.bodies = ByteBudget(inflight_body_bytes)
        self._work = work
        self._queries = queries
        self._status = status  # /health and /metrics, never behind exports
        self.stopping = False  # set by HTTPServer.stop: what has not reached its worker yet gets 503
        routes = [
            *(Route(path, self._export, methods=["POST"]) for path in OTLP_PATHS),
            Route("/api/query", self._query, methods=["POST"]),
            *(Route(path, self._health, methods=["GET"]) for path in ("/health", "/healthz", "/")),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        self._router = Router(
            [
                *routes,
                # After the routes above: their paths with any other method get 405 with Allow, in the route's
                # error encoding (Starlette's own 405 is plain text).
                *(Route(route.path, _WrongMethod(self.error, route.methods or ())) for route in routes),
            ],
            redirect_slashes=False,  # /v1/traces/ is not found, not redirected to a Location built from Host
            default=self._not_found,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route a request; any answer given before its body was read closes the connection (the rest of the body
        is not worth reading, nor where the next request would start)."""
        headers = Headers(scope=scope)
        complete = _declared_length(headers) in (0, None)  # None: no body (RFC 9112 §6.3)
        started = False

        async def receive_body() -> Message:
            nonlocal complete
            message = await receive()
            complete = complete or (message["type"] == "http.request" and not message.get("more_body"))
            return message

        async def send_answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and (not complete or message["status"] >= 500):
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)  # cancelled while it waits for the client to read: nothing was sent
            started = True

        problem = _ambiguity(headers, scope.get("http_version", "1.1"))
        app = self.error(scope, 400, problem) if problem else self._router
        try:
            await app(scope, receive_body, send_answer)
        except (ServeStopping, asyncio.CancelledError):
            # Stopping: the request was queued (its future cancelled), or uvicorn cancels what still runs when its
            # grace period ends. uvicorn would log the CancelledError's traceback and answer a bare 500, which OTLP
            # exporters do not retry. Not raised again: the task ends here, answered.
            if not self.stopping:
                raise
            if not started:
                await self.error(scope, 503, _STOPPING, {"Retry-After": "1"})(
                    scope, receive_body, send_answer
                )

    def error(
        self, scope: Scope, status: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        """An error answer: google.rpc.Status in the request's encoding on OTLP routes, else ``{"error": ...}``."""
        if scope["path"] not in OTLP_PATHS:
            body = json.dumps({"error": message}).encode()
            return Response(body, status, headers, media_type="application/json")
        if status != 500:
            self.receiver.stats.refused()
        content_type = (Headers(scope=scope).get("content-type") or "").lower()
        kind = JSON if "json" in content_type else PROTOBUF
        body = encode_response(status_pb2.Status(code=_RPC_CODES.get(status, 2), message=message), kind)
        return Response(body, status, headers, media_type=kind)

    async def over_capacity(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The answer to a request on a connection above the cap (http_limits.LimitedH11Protocol)."""
        message = "llmtap serve has too many connections open; retry later"
        await self.error(scope, 503, message, {"Retry-After": "1", "Connection": "close"})(
            scope, receive, send
        )

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.error(scope, 404, f"no such route: {scope['path']}")(scope, receive, send)

    async def _run(self, executor: Executor, function: Callable[..., _T], *args: Any) -> _T:
        if self.stopping:
            raise ServeStopping
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, function, *args)
        except RuntimeError:  # the pool is shut down: serve stopped between the check and here
            raise ServeStopping from None
        return await future

    # ---- OTLP ---------------------------------------------------------------------------------------------
    async def _export(self, request: Request) -> Response:
        scope = request.scope
        signal = SIGNALS[OTLP_PATHS[scope["path"]]]
        if not self.receiver.authorized(request.headers.get("authorization")):
            return self.error(scope, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        body = _Body(self.bodies, self.max_body_bytes)
        try:
            kind = media_type(request.headers.get("content-type"))
            raw = await body.read(request)
            encoding = request.headers.get("content-encoding")
            response = await self._run(self._work, self._decode_and_export, signal, raw, encoding, kind, body)
        except DecodeError as exc:
            return self.error(scope, exc.status, exc.message)
        except Refused as exc:
            status = 503 if exc.store_down else 429
            return self.error(scope, status, str(exc), {"Retry-After": str(exc.retry_after)})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it: the read timed out, or the client left
        except ServeStopping:
            raise  # answered 503 by __call__
        except Exception:  # one broken request must not take the server down
            log.exception("unexpected error handling %s", scope["path"])
            return self.error(scope, 500, "internal error in llmtap serve (see its log)")
        finally:
            body.give_back()
        return Response(encode_response(response, kind), media_type=kind)

    def _decode_and_export(
        self, signal: Signal, raw: bytes, encoding: str | None, kind: str, body: _Body
    ) -> Any:
        # The inflated copy is held too, until the request is answered: counted piece by piece as it inflates.
        data = decompress(raw, encoding, self.max_body_bytes, body.hold)
        request = parse(signal, data, kind)
        return self.receiver.export(signal, request, data if kind == PROTOBUF else None)

    # ---- query API ----------------------------------------------------------------------------------------
    async def _query(self, request: Request) -> Response:
        scope, api, receiver = request.scope, self.query_api, self.receiver
        if api is None:
            return self.error(scope, 404, "the query API is disabled")
        client = request.client.host if request.client else ""
        if not receiver.authorized(request.headers.get("authorization")) or (
            receiver.token is None and not _is_loopback(client)
        ):
            return self.error(scope, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        refused = cross_origin.refusal(request.headers.get, self.listen_host, receiver.token is not None)
        if refused is not None:
            return self.error(scope, *refused)
        body = _Body(self.bodies, self.max_body_bytes)
        try:
            raw = await body.read(request)
            output, content_type = await self._run(self._queries, api.handle, raw)
        except DecodeError as exc:
            return self.error(scope, exc.status, exc.message)
        except QueryError as exc:
            return self.error(scope, 400, str(exc))
        except (QueryBusy, Refused) as exc:
            status = 503 if isinstance(exc, QueryBusy) else 429
            return self.error(scope, status, str(exc), {"Retry-After": str(exc.retry_after)})
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            body.give_back()
        return Response(output, media_type=content_type)

    # ---- health and metrics -------------------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        client = request.client.host if request.client else ""
        health = await self._run(self._status, self.health_for, client, request.headers.get("authorization"))
        status = 200 if health.get("status") == "ok" else 503
        return Response(json.dumps(health).encode(), status, media_type="application/json")

    def health_for(self, client_host: str, authorization: str | None) -> dict[str, Any]:
        """/health answers anyone (probes, load balancers). With a token, those without it learn only whether
        serve is up; without one, which serve this is (pid, store) is told only to this machine, where the port
        check of another serve asks from."""
        if self.receiver.token is None:
            return self.health(_is_loopback(client_host))
        if not self.receiver.authorized(authorization):
            return {"status": self.health(False)["status"]}
        return self.health(True)

    async def _metrics(self, request: Request) -> Response:
        if not self.receiver.authorized(request.headers.get("authorization")):
            return Response(
                b"missing or wrong bearer token\n", 401, {"WWW-Authenticate": "Bearer"}, "text/plain"
            )
        text = await self._run(self._status, self.metrics_text)
        return Response(text.encode(), media_type="text/plain; version=0.0.4")


class _WrongMethod:
    """405 with Allow listing a route's methods. An ASGI application (an instance, not a function or a method) as a
    route's endpoint: Starlette routes every method to it."""

    def __init__(self, error: Callable[..., Response], methods: Iterable[str]) -> None:
        self.error = error
        self.allowed = ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.error(scope, 405, f"use {self.allowed}", {"Allow": self.allowed})(scope, receive, send)


class _Body:
    """One request's body, read as it arrives, each piece taken from the byte budget before it is kept."""

    def __init__(self, budget: ByteBudget, limit: int) -> None:
        self.budget = budget
        self.limit = limit
        self.held = 0

    async def read(self, request: Request) -> bytes:
        declared = _declared_length(request.headers)
        if declared is None:
            raise DecodeError(411, "Content-Length is required")
        if declared > self.limit:  # refused before a byte of it is read
            raise DecodeError(
                413, f"body of {declared} bytes exceeds the {self.limit} byte limit (--max-body-mb)"
            )
        chunks: list[bytes] = []
        size = 0
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > self.limit:  # chunked: the total is known only as it arrives
                    raise DecodeError(413, f"body exceeds the {self.limit} byte limit (--max-body-mb)")
                self.hold(len(chunk))
                chunks.append(chunk)
        return b"".join(chunks)

    def hold(self, size: int) -> None:
        if not self.budget.try_take(size, self.held):
            raise Refused(_OVERLOADED, store_down=False, retry_after=1)
        self.held += size

    def give_back(self) -> None:
        self.budget.give_back(self.held)
        self.held = 0


def _declared_length(headers: Headers) -> int | None:
    """The body length a request declares (h11 has checked it is digits): -1 when chunked, None when neither."""
    if "transfer-encoding" in headers:
        return -1
    length = headers.get("content-length")
    return None if length is None else int(length)


def _ambiguity(headers: Headers, http_version: str) -> str | None:
    """Why hops could read a request differently, or None. h11 refuses malformed lengths and chunks itself, but
    reads a body with both Transfer-Encoding and Content-Length as chunked, and reads chunks in an HTTP/1.0 request
    (which has no Transfer-Encoding); RFC 9112 §6.1 has both treated as faulty framing and the connection closed:
    refused here with 400. Two Authorization fields are malformed, not a list (RFC 9110 §5.3, §11.6.2): which one
    decides would depend on the hop, so a right token could carry a wrong one past a proxy."""
    if "transfer-encoding" in headers and "content-length" in headers:
        return "both Transfer-Encoding and Content-Length given (RFC 9112 §6.1); send one of them"
    if "transfer-encoding" in headers and http_version == "1.0":
        return "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1); send Content-Length"
    count = len(headers.getlist("authorization"))
    return f"Authorization given {count} times; send one bearer token" if count > 1 else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
