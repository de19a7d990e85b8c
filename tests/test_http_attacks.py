"""Attacks on serve's HTTP framing and auth headers, sent byte for byte over a real socket on 127.0.0.1.

Black-box on purpose: only the bytes on the wire and serve's answer count, whatever HTTP server sits behind. Where
the HTTP stack itself (h11 under uvicorn) refuses bad framing, its own answer is the one checked: 400 and the
connection closed; serve's messages are checked where serve refuses.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from collector_support import running_collector
from google.rpc import status_pb2
from test_collector_receivers import TOKEN, good_span, span_request

WAIT = 10.0  # seconds an answer may take; a serve stuck reading a body never answers
AUTH = f"Authorization: Bearer {TOKEN}"
POST_ROUTES = ["/v1/traces", "/api/query"]
JSON = "Content-Type: application/json"  # errors come back as JSON on every route then
BODIES = {"/v1/traces": b'{"resourceSpans": []}', "/api/query": b'{"query": "SELECT 1"}'}


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    with running_collector(
        tmp_path_factory.mktemp("attacks"), token=TOKEN, max_body_bytes=256 << 10
    ) as running:
        yield running


def connect(serve) -> socket.socket:
    return socket.create_connection(("127.0.0.1", serve.http_port), timeout=WAIT)


def request_head(method: str, path: str, *fields: str) -> bytes:
    """A request line and header fields exactly as given, no field added but Host."""
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *fields, "", ""]).encode("latin-1")


def read_answer(sock: socket.socket) -> tuple[int, http.client.HTTPMessage, str]:
    """Status, headers and the message of a JSON answer (an OTLP google.rpc.Status or a query API error), or the
    text of a plain one (the HTTP stack's own)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    try:
        answer = json.loads(body)
    except ValueError:
        return response.status, response.headers, body.decode(errors="replace")
    return (
        response.status,
        response.headers,
        answer.get("message") or answer.get("error") or json.dumps(answer),
    )


def closed_by_serve(sock: socket.socket) -> bool:
    """True when serve closed the connection (EOF or reset) within a second rather than keeping it alive."""
    sock.settimeout(1.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def exchange(serve, head: bytes, body: bytes = b"") -> tuple[int, http.client.HTTPMessage, str, bool]:
    """Send one request; serve's status, headers and body, and whether it then closed the connection."""
    with connect(serve) as sock:
        sock.sendall(head + body)
        status, headers, text = read_answer(sock)
        return status, headers, text, closed_by_serve(sock)


def send_until_cut_off(sock: socket.socket, data: bytes, sent: list[int]) -> None:
    """Stream ``data`` the way an attacker would, counting what got out before serve cut the connection."""
    chunk = 64 << 10
    try:
        for start in range(0, len(data), chunk):
            sock.sendall(data[start : start + chunk])
            sent[0] = start + chunk
    except OSError:
        pass


@pytest.mark.timeout(60)
def answer_while_flooding(serve, head: bytes, flood: bytes) -> tuple[int, dict, str, int]:
    """Send ``head``, then ``flood`` from a thread until serve cuts it off; serve's answer, and the bytes sent.

    The answer must come in WAIT / 2 and serve must close the connection: it read no further than it should."""
    sent = [0]
    with connect(serve) as sock:
        sock.sendall(head)
        sender = threading.Thread(target=send_until_cut_off, args=(sock, flood, sent), daemon=True)
        started = time.monotonic()
        sender.start()
        try:
            status, headers, text = read_answer(sock)
        except TimeoutError:
            pytest.fail(f"no answer in {WAIT}s: serve is reading the body until the client closes")
        assert time.monotonic() - started < WAIT / 2
        assert closed_by_serve(sock)
        sender.join(WAIT)
    assert headers["Connection"] == "close"
    return status, headers, text, sent[0]


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_negative_content_length_is_refused_before_the_body_is_read(serve, path):
    flood = b"\0" * (32 << 20)  # far more than loopback buffers hold while serve does not read
    head = request_head("POST", path, JSON, AUTH, "Content-Length: -1")
    status, _, _, sent = answer_while_flooding(serve, head, flood)
    assert status == 400
    assert sent < len(flood), "serve read the whole flood"


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_content_length_past_max_body_mb_is_refused_before_the_body_is_read(serve, path):
    flood = b"\0" * (32 << 20)
    head = request_head("POST", path, JSON, AUTH, f"Content-Length: {len(flood)}")  # serve here takes 256 KiB
    status, _, text, sent = answer_while_flooding(serve, head, flood)
    assert status == 413 and "--max-body-mb" in text, text
    assert sent < len(flood), "serve read the whole flood"


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (["Content-Length: +5"], ""),  # "": the HTTP stack's own answer
        (["Content-Length: 5_0"], ""),
        (["Content-Length: \x0b5"], ""),
        (["Content-Length: 5x"], ""),
        (["Content-Length: 0x10"], ""),
        (["Content-Length: \xb2"], ""),  # a digit to str.isdigit, not to int()
        (["Content-Length: 1" + "0" * 30], ""),
        (["Content-Length: 5", "Content-Length: 6"], ""),
        (["Content-Length: 5, 6"], ""),
        (["Transfer-Encoding: chunked", "Content-Length: 5"], "both Transfer-Encoding and Content-Length"),
        (["Content-Length: 5", "Transfer-Encoding: chunked"], "both Transfer-Encoding and Content-Length"),
        (["Transfer-Encoding: gzip, chunked"], ""),
    ],
    ids=["plus", "underscore", "vtab", "suffix", "hex", "superscript", "huge", "two-different", "list",
         "te-then-cl", "cl-then-te", "te-not-chunked"],
)  # fmt: skip
def test_an_ambiguous_body_length_is_refused_with_400_and_the_connection_closed(serve, path, fields, says):
    body = BODIES[path]
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = request_head("POST", path, JSON, AUTH, *fields)
    status, headers, text, closed = exchange(serve, head, chunked)
    assert status == 400 and says in text, text
    assert headers["Connection"] == "close" and closed


@pytest.mark.parametrize("path", POST_ROUTES)
def test_content_length_with_surrounding_whitespace_is_the_number_rfc_9112_says(serve, path):
    body = BODIES[path]
    head = request_head("POST", path, JSON, AUTH, f"Content-Length:\t {len(body)} \t")
    status, _, text, _ = exchange(serve, head, body)
    assert status == 200, text


@pytest.mark.parametrize("path", POST_ROUTES)
def test_the_same_content_length_twice_is_that_length_as_rfc_9110_allows(serve, path):
    body = BODIES[path]
    head = request_head("POST", path, JSON, AUTH, *[f"Content-Length: {len(body)}"] * 2)
    status, _, text, _ = exchange(serve, head, body)
    assert status == 200, text


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/traces"), ("POST", "/api/query"), ("GET", "/health")]
)
@pytest.mark.parametrize(
    "authorizations",
    [[TOKEN, "wrong"], ["wrong", TOKEN], [TOKEN, TOKEN]],
    ids=["right-wrong", "wrong-right", "same"],
)
def test_two_authorization_headers_are_refused_with_400(serve, method, path, authorizations):
    body = BODIES.get(path, b"") if method == "POST" else b""
    fields = [f"Authorization: Bearer {token}" for token in authorizations]
    head = request_head(method, path, JSON, *fields, f"Content-Length: {len(body)}")
    status, _, text, _ = exchange(serve, head, body)
    assert status == 400 and "Authorization given 2 times" in text, text


def test_one_lower_case_bearer_authorization_is_accepted(serve):
    body = BODIES["/v1/traces"]
    head = request_head("POST", "/v1/traces", JSON, f"Authorization: bearer {TOKEN}",
                        f"Content-Length: {len(body)}")  # fmt: skip
    assert exchange(serve, head, body)[0] == 200


def chunked_head(path: str, *fields: str) -> bytes:
    return request_head("POST", path, JSON, AUTH, "Transfer-Encoding: chunked", *fields)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_negative_chunk_size_is_refused_before_the_rest_is_read(serve, path):
    flood = b"\0" * (4 << 20)  # more than loopback buffers hold while serve does not read
    status, _, _, _ = answer_while_flooding(serve, chunked_head(path) + b"-1\r\n", flood)
    assert status == 400


# Chunk-size spellings int(..., 16) took for the length that a stricter hop reads differently or not at all.
BAD_CHUNK_SIZES = {
    "plus": lambda size: f"+{size:x}",
    "hex-prefix": lambda size: f"0x{size:x}",
    "underscore": lambda size: f"{size >> 4:x}_{size & 15:x}",
    "leading-space": lambda size: f" {size:x}",
    "vtab": lambda size: f"{size:x}\x0b",
}


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("spell", BAD_CHUNK_SIZES.values(), ids=list(BAD_CHUNK_SIZES))
def test_a_chunk_size_that_is_not_plain_hex_is_refused_with_400(serve, path, spell):
    body = BODIES[path]
    chunked = spell(len(body)).encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"
    status, headers, _, closed = exchange(serve, chunked_head(path), chunked)
    assert status == 400
    assert headers["Connection"] == "close" and closed


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_zero_padded_chunk_size_is_the_same_number(serve, path):
    """16 hex digits: a 64-bit hop reads them as the same number that serve reads."""
    body = BODIES[path]
    chunked = f"{len(body):016x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    status, _, text, _ = exchange(serve, chunked_head(path), chunked)
    assert status == 200, text


@pytest.mark.parametrize("path", POST_ROUTES)
def test_chunk_data_not_followed_by_crlf_is_refused_with_400(serve, path):
    body = BODIES[path]
    chunked = f"{len(body) - 2:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"  # two data bytes where CRLF belongs
    status, headers, _, closed = exchange(serve, chunked_head(path), chunked)
    assert status == 400
    assert headers["Connection"] == "close" and closed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", POST_ROUTES)
def test_chunks_adding_up_past_max_body_mb_get_413_as_they_arrive(serve, path):
    piece = b"x" * (100 << 10)  # serve here takes 256 KiB
    flood = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(320))  # 32 MiB
    status, _, text, sent = answer_while_flooding(serve, chunked_head(path), flood)
    assert status == 413 and "--max-body-mb" in text, text
    assert sent < len(flood), "serve read the whole flood"


def test_a_chunked_otlp_request_with_extensions_and_trailers_is_stored(serve):
    body = span_request(good_span("chunked"))
    half = len(body) // 2
    chunked = (
        f"{half:X};name=value\r\n".encode() + body[:half] + b"\r\n"
        + f"{len(body) - half:x}\r\n".encode() + body[half:] + b"\r\n"
        + b"0\r\nX-Trailer: yes\r\n\r\n"
    )  # fmt: skip
    head = request_head("POST", "/v1/traces", "Content-Type: application/x-protobuf", AUTH,
                        "Transfer-Encoding: chunked")  # fmt: skip
    with connect(serve) as sock:
        sock.sendall(head + chunked)
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = response.read()
    assert response.status == 200, answer


@pytest.mark.parametrize("path", POST_ROUTES)
def test_transfer_encoding_in_an_http_1_0_request_is_refused_with_400(serve, path):
    """RFC 9112 §6.1: faulty framing. Before: h11 read the chunks and the request was served."""
    body = BODIES[path]
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = request_head("POST", path, JSON, AUTH, "Transfer-Encoding: chunked").replace(
        b"HTTP/1.1", b"HTTP/1.0"
    )
    status, headers, text, closed = exchange(serve, head, chunked)
    assert status == 400 and "HTTP/1.0" in text, text
    assert headers["Connection"] == "close" and closed


@pytest.mark.parametrize("path", ["/v1/traces/", "/api/query/", "/v1/trace", "/nothing"])
def test_an_unknown_path_is_404_in_json_without_a_redirect(serve, path):
    """Before: a trailing slash got 307 with a Location built from the Host header, others a text 404."""
    body = BODIES["/v1/traces"]
    head = request_head("POST", path, JSON, AUTH, f"Content-Length: {len(body)}", "Host: evil.example")
    status, headers, text, _ = exchange(serve, head.replace(b"Host: 127.0.0.1\r\n", b""), body)
    assert status == 404 and "Location" not in headers, (status, text)
    assert headers["Content-Type"] == "application/json" and "no such route" in text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/v1/traces", "POST"), ("PUT", "/api/query", "POST"), ("POST", "/health", "GET, HEAD")],
)
def test_a_wrong_method_is_405_with_allow_in_the_route_s_encoding(serve, method, path, allowed):
    """OTLP routes answer google.rpc.Status (here in JSON, the request's encoding), others {"error": ...}. Before:
    Starlette's plain-text "Method Not Allowed"."""
    head = request_head(method, path, JSON, AUTH, "Content-Length: 0")
    status, headers, text, _ = exchange(serve, head)
    assert status == 405 and headers["Allow"] == allowed
    assert headers["Content-Type"] == "application/json" and text == f"use {allowed}"
    if path == "/v1/traces":
        protobuf = request_head(method, path, AUTH, "Content-Length: 0")
        with connect(serve) as sock:
            sock.sendall(protobuf)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert status_pb2.Status.FromString(response.read()).code == 12  # UNIMPLEMENTED
