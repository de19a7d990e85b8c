"""OTLP/HTTP receiver (:4318), plus /health, /metrics and the local query API on the same port.

Follows the OTLP/HTTP specification: POST /v1/traces, /v1/metrics and /v1/logs with protobuf or JSON bodies,
optionally gzip-compressed; 200 with an Export*ServiceResponse (carrying partial_success when invalid items were
dropped); errors as google.rpc.Status in the request's encoding: 400 malformed, 401 missing/wrong token,
413 too large, 415 unsupported type or encoding, 429 overloaded and 503 store down, both with Retry-After.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.rpc import status_pb2
from llmtap.collector.decode import (
    JSON,
    PROTOBUF,
    SIGNALS,
    DecodeError,
    decompress,
    encode_response,
    media_type,
    parse,
)
from llmtap.collector.pipeline import Refused
from llmtap.collector.query_api import QueryAPI, QueryError
from llmtap.collector.receiver import Receiver

log = logging.getLogger("llmtap.serve")

OTLP_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
# google.rpc.Code for the Status body of each HTTP error.
_RPC_CODES = {400: 3, 401: 16, 404: 5, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


class OTLPHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server carrying what the handler needs."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        receiver: Receiver,
        query_api: QueryAPI | None,
        health: Callable[[bool], dict[str, Any]],
        metrics_text: Callable[[], str],
        max_body_bytes: int,
        inflight_body_bytes: int,
    ) -> None:
        self.bodies = ByteBudget(inflight_body_bytes)
        self.receiver = receiver
        self.query_api = query_api
        self.health = health
        self.metrics_text = metrics_text
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _Handler)

    def health_for(self, client_host: str, authorization: str | None) -> dict[str, Any]:
        """/health answers anyone (probes, load balancers); which serve this is (pid, store) only this machine,
        where the port check of another serve asks from, and holders of the token."""
        # authorized() lets every request through when serve has no token: then only loopback is told.
        holds_token = self.receiver.token is not None and self.receiver.authorized(authorization)
        return self.health(_is_loopback(client_host) or holds_token)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its keep-alive connection is normal: no traceback for it on the console.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ByteBudget:
    """Bounds the request bodies held in memory at once across all connections (a thread serves each one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def try_take(self, size: int) -> bool:
        with self._lock:
            if self._used and self._used + size > self.limit:
                return False  # (a lone body may use the whole budget even if larger, up to --max-body-mb)
            self._used += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self._used -= size


class _Handler(BaseHTTPRequestHandler):
    server: OTLPHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse one connection
    server_version = "llmtap-serve"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ---- routing ------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/health", "/healthz", "/"):
            health = self.server.health_for(self.client_address[0], self.headers.get("Authorization"))
            status = 200 if health.get("status") == "ok" else 503
            self._send(status, json.dumps(health).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, self.server.metrics_text().encode(), "text/plain; version=0.0.4")
        elif path in OTLP_PATHS or path == "/api/query":
            self._send(405, b"use POST\n", "text/plain", {"Allow": "POST"})
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        try:
            if path in OTLP_PATHS:
                self._export(OTLP_PATHS[path])
            elif path == "/api/query":
                self._query()
            else:
                self._drain_or_close()
                self._send(404, b"not found\n", "text/plain")
        except Exception:  # one broken request must not take the server down
            log.exception("unexpected error handling %s", path)
            self.close_connection = True
            self._status_error(500, "internal error in llmtap serve (see its log)", PROTOBUF)

    # ---- OTLP ---------------------------------------------------------------------------------------------
    def _export(self, signal_name: str) -> None:
        signal = SIGNALS[signal_name]
        content_type = self.headers.get("Content-Type")
        kind = JSON if "json" in (content_type or "").lower() else PROTOBUF  # encoding of error answers
        receiver = self.server.receiver
        if not receiver.authorized(self.headers.get("Authorization")):
            self._drain_or_close()
            receiver.stats.refused()
            self._status_error(401, "missing or wrong bearer token", kind, {"WWW-Authenticate": "Bearer"})
            return
        reserved = min(self._declared_length(), self.server.max_body_bytes)
        if not self.server.bodies.try_take(reserved):
            self._drain_or_close()
            receiver.stats.refused()
            self._status_error(429, "llmtap serve is overloaded (too many requests in flight); retry later", kind,
                               {"Retry-After": "1"})  # fmt: skip
            return
        try:
            kind = media_type(content_type)
            body = self._read_body()
            body = decompress(body, self.headers.get("Content-Encoding"), self.server.max_body_bytes)
            request = parse(signal, body, kind)
            response = receiver.export(signal, request, body if kind == PROTOBUF else None)
        except DecodeError as exc:
            receiver.stats.refused()
            self._status_error(exc.status, exc.message, kind)
            return
        except Refused as exc:
            receiver.stats.refused()
            status = 503 if exc.store_down else 429
            self._status_error(status, str(exc), kind, {"Retry-After": str(exc.retry_after)})
            return
        finally:
            self.server.bodies.give_back(reserved)
        self._send(200, encode_response(response, kind), kind)

    def _declared_length(self) -> int:
        # Compressed bodies may inflate up to the body limit: reserve for that. Unknown lengths (chunked) too.
        length = self.headers.get("Content-Length", "")
        if (
            self.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
            or not length.isdigit()
        ):
            return self.server.max_body_bytes
        return int(length)

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise DecodeError(411, "Content-Length is required")
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise DecodeError(400, f"invalid Content-Length {length!r}") from None
        if size > limit:
            self.close_connection = True  # do not read a body we refuse
            raise DecodeError(413, f"body of {size} bytes exceeds the {limit} byte limit (--max-body-mb)")
        return self.rfile.read(size)

    def _read_chunked(self, limit: int) -> bytes:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise DecodeError(400, "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                self.close_connection = True
                raise DecodeError(413, f"body exceeds the {limit} byte limit (--max-body-mb)")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _drain_or_close(self) -> None:
        """Consume a small unread body so keep-alive continues; close the connection for big or unknown ones."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= 1 << 20:
            self.rfile.read(int(length))
        elif length != "0":
            self.close_connection = True

    # ---- query API ----------------------------------------------------------------------------------------
    def _query(self) -> None:
        api = self.server.query_api
        receiver = self.server.receiver
        if api is None:
            self._drain_or_close()
            self._send(404, b'{"error": "the query API is disabled"}', "application/json")
            return
        if not receiver.authorized(self.headers.get("Authorization")) or (
            receiver.token is None and not _is_loopback(self.client_address[0])
        ):
            self._drain_or_close()
            self._send(401, b'{"error": "missing or wrong bearer token"}', "application/json",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
            return
        try:
            body = self._read_body()
            output, content_type = api.handle(body)
        except (QueryError, DecodeError) as exc:
            status = exc.status if isinstance(exc, DecodeError) else 400
            self._send(status, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._send(200, output, content_type)

    # ---- answers ------------------------------------------------------------------------------------------
    def _status_error(
        self, status: int, message: str, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        body = encode_response(status_pb2.Status(code=_RPC_CODES.get(status, 2), message=message), kind)
        self._send(status, body, kind, headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
