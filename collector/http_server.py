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
import re
import sys
import threading
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.rpc import status_pb2
from llmtap.collector import cross_origin
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
from llmtap.collector.query_api import QueryAPI, QueryBusy, QueryError
from llmtap.collector.receiver import Receiver

log = logging.getLogger("llmtap.serve")

OTLP_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
# google.rpc.Code for the Status body of each HTTP error.
_RPC_CODES = {400: 3, 401: 16, 404: 5, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
# RFC 9110 §8.6: Content-Length = 1*DIGIT. 18 digits fit in 64 bits: a longer number can only overflow some hop.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_OWS = " \t"  # optional whitespace around a field value (RFC 9110 §5.6.3)
# RFC 9112 §7.1: chunk-size = 1*HEXDIG, then optional extensions (BWS ";" ...) and CRLF. 15 digits fit in 64 bits.
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[^\r\n]*)?\r\n")


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
        """/health answers anyone (probes, load balancers). With a token, those without it learn only whether
        serve is up; without one, which serve this is (pid, store) is told only to this machine, where the port
        check of another serve asks from."""
        if self.receiver.token is None:
            return self.health(_is_loopback(client_host))
        if not self.receiver.authorized(authorization):
            return {"status": self.health(False)["status"]}
        return self.health(True)

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
        if self._refused_as_ambiguous(path):
            return
        if path in ("/health", "/healthz", "/"):
            health = self.server.health_for(self.client_address[0], self.headers.get("Authorization"))
            status = 200 if health.get("status") == "ok" else 503
            self._send(status, json.dumps(health).encode(), "application/json")
        elif path == "/metrics" and not self.server.receiver.authorized(self.headers.get("Authorization")):
            self._send(401, b"missing or wrong bearer token\n", "text/plain", {"WWW-Authenticate": "Bearer"})
        elif path == "/metrics":
            self._send(200, self.server.metrics_text().encode(), "text/plain; version=0.0.4")
        elif path in OTLP_PATHS or path == "/api/query":
            self._send(405, b"use POST\n", "text/plain", {"Allow": "POST"})
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        try:
            if self._refused_as_ambiguous(path):
                return
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

    def _refused_as_ambiguous(self, path: str) -> bool:
        """Answer 400 and close when hops could read the request differently: where its body ends (so where the
        next request starts), or which of two tokens is the client's. Checked before any body is read."""
        problem = _framing_problem(self.headers) or _authorization_problem(self.headers)
        if problem is None:
            return False
        self.close_connection = True
        if path in OTLP_PATHS:
            self.server.receiver.stats.refused()
            self._status_error(400, problem, self._error_kind())
        else:
            self._send(400, json.dumps({"error": problem}).encode(), "application/json")
        return True

    # ---- OTLP ---------------------------------------------------------------------------------------------
    def _export(self, signal_name: str) -> None:
        signal = SIGNALS[signal_name]
        content_type = self.headers.get("Content-Type")
        kind = self._error_kind()
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

    def _error_kind(self) -> str:
        """The encoding of OTLP error answers: the request's when it is JSON, else protobuf."""
        return JSON if "json" in (self.headers.get("Content-Type") or "").lower() else PROTOBUF

    def _content_length(self) -> int | None:
        """The declared body length (already checked by _framing_problem), None when chunked or absent."""
        length = self.headers.get("Content-Length")
        return None if length is None else int(length)

    def _declared_length(self) -> int:
        # Compressed bodies may inflate up to the body limit: reserve for that. Unknown lengths (chunked) too.
        size = self._content_length()
        if self.headers.get("Content-Encoding", "identity").lower() not in ("", "identity") or size is None:
            return self.server.max_body_bytes
        return size

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "Transfer-Encoding" in self.headers:  # chunked: _framing_problem refused any other
            return self._read_chunked(limit)
        size = self._content_length()
        if size is None:
            self.close_connection = True
            raise DecodeError(411, "Content-Length is required")
        if size > limit:
            self.close_connection = True  # do not read a body we refuse
            raise DecodeError(413, f"body of {size} bytes exceeds the {limit} byte limit (--max-body-mb)")
        return self.rfile.read(size)

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body of at most ``limit`` bytes in all, each chunk's size checked before its data is read."""
        chunks: list[bytes] = []
        total = 0
        while (size := self._chunk_size()) > 0:
            total += size
            if total > limit:
                self.close_connection = True
                raise DecodeError(413, f"body exceeds the {limit} byte limit (--max-body-mb)")
            chunks.append(self.rfile.read(size))
            if self.rfile.read(2) != b"\r\n":  # else the chunk's end is where another hop may not see it
                self.close_connection = True
                raise DecodeError(400, "chunk data is not followed by CRLF (malformed chunked body)")
        while self.rfile.readline(1024).strip():  # trailers
            pass
        return b"".join(chunks)

    def _chunk_size(self) -> int:
        """The next chunk's size, from plain hex digits only: int(..., 16) took "-1" (then read(-1) ran to EOF past
        --max-body-mb) and "+5", "0x10" or "1_0", which another hop reads differently or refuses (smuggling)."""
        line = self.rfile.readline(1024)
        match = _CHUNK_SIZE_LINE.fullmatch(line)
        if match is None:
            self.close_connection = True
            raise DecodeError(400, f"chunk size {line[:40]!r} is not 1 to 15 hex digits [;extensions] CRLF")
        return int(match[1], 16)

    def _drain_or_close(self) -> None:
        """Consume a small unread body so keep-alive continues; close the connection for big or unknown ones."""
        size = self._content_length()
        if size is not None and size <= 1 << 20:
            self.rfile.read(size)
        else:
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
        refused = cross_origin.refusal(
            self.headers.get, self.server.server_address[0], receiver.token is not None
        )
        if refused is not None:
            self.close_connection = True
            self._send(refused[0], json.dumps({"error": refused[1]}).encode(), "application/json")
            return
        try:
            body = self._read_body()
            output, content_type = api.handle(body)
        except (QueryError, DecodeError) as exc:
            status = exc.status if isinstance(exc, DecodeError) else 400
            self._send(status, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        except QueryBusy as exc:
            self._send(503, json.dumps({"error": str(exc)}).encode(), "application/json",
                       {"Retry-After": str(exc.retry_after)})  # fmt: skip
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


def _framing_problem(headers: Message) -> str | None:
    """Why the body's end is ambiguous, or None. int() reads "-1" (then read(-1) ran to EOF past --max-body-mb),
    "+5" or "5_0" where another hop sees no number; two lengths, or one with Transfer-Encoding, let a proxy and
    serve split requests differently (smuggling): RFC 9112 §6.3 has them refused with 400."""
    lengths = headers.get_all("Content-Length", [])
    codings = headers.get_all("Transfer-Encoding", [])
    if lengths and codings:
        return "both Transfer-Encoding and Content-Length given (RFC 9112 §6.3); send one of them"
    if len(lengths) > 1:
        return f"Content-Length given {len(lengths)} times; send it once"
    if lengths and not _CONTENT_LENGTH.fullmatch(lengths[0].strip(_OWS)):
        return f"Content-Length {lengths[0]!r} is not a decimal number of at most 18 digits"
    if codings and [coding.strip(_OWS).lower() for coding in codings] != ["chunked"]:
        return f"Transfer-Encoding {', '.join(codings)!r} is not supported; send chunked or a Content-Length"
    return None


def _authorization_problem(headers: Message) -> str | None:
    """Two Authorization fields are malformed, not a list (RFC 9110 §5.3, §11.6.2): which one decides would
    depend on the hop, and serve took the first, so a right token could carry a wrong one past a proxy."""
    count = len(headers.get_all("Authorization", []))
    return f"Authorization given {count} times; send one bearer token" if count > 1 else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
