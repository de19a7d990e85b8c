"""Slow and many clients against serve's HTTP port, over real sockets on 127.0.0.1 (issue 18, item 5).

Before: no read or idle timeout, the body budget reserved from the declared length before a byte arrived, a thread
per connection and a listen backlog of 5. Each test here reproduces one attack; the limits are small so that
each runs in seconds.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import resource
import selectors
import socket
import threading
import time
import urllib.request

import pytest
from collector_support import post, running_collector
from google.rpc import status_pb2
from llmtap.collector import http_server
from llmtap.collector.decode import decompress
from llmtap.collector.http_limits import HTTPLimits
from llmtap.collector.pipeline import Refused
from test_collector_receivers import good_span, span_request

LIMITS = HTTPLimits(
    header_seconds=1.0, body_seconds=1.0, body_min_rate=4096, idle_seconds=1, write_seconds=1.0
)
SLACK = 3.0  # seconds a cut may come after its deadline on a busy machine
PROTOBUF = "Content-Type: application/x-protobuf"


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("timeouts"), http=LIMITS) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    """Hundreds of connections hold two descriptors each in this process (client and serve)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard > 0 else 4096, hard))


def connect(serve, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", serve.http_port), timeout=timeout)


def head(path: str, *fields: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *fields, "", ""]).encode()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until serve closed the connection (EOF or reset), or None if it stayed open that long."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - started


def answer(sock: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response


def export(serve, compress: bool = False) -> int:
    return post(serve.http_url + "/v1/traces", span_request(good_span("normal")), compress=compress)[0]


def test_above_the_connection_cap_new_connections_get_503_and_open_ones_are_still_served(tmp_path):
    """First in this file: it needs a serve of its own, and chDB opens one store per process. Before: every
    request on every connection got 503 while the count was above the cap, keep-alive connections opened long
    before included."""
    with running_collector(tmp_path, http=HTTPLimits(max_connections=8)) as capped:
        kept = http.client.HTTPConnection("127.0.0.1", capped.http_port, timeout=10)
        kept.request("GET", "/health")
        assert kept.getresponse().read() and kept.sock is not None
        idle = [connect(capped) for _ in range(8)]  # the cap reached, and one above it (refused within 1 s)
        try:
            time.sleep(0.2)  # serve has accepted them
            status, headers, body = post(capped.http_url + "/v1/traces", span_request(good_span("ninth")))
            assert status == 503 and headers["Retry-After"] == "1"
            assert "too many connections" in status_pb2.Status.FromString(body).message
            kept.request("GET", "/health")
            assert kept.getresponse().status == 200
        finally:
            kept.close()
            for sock in idle:
                sock.close()
        time.sleep(0.2)  # serve has seen them close
        assert export(capped) == 200


def test_stop_answers_503_to_what_has_no_worker_and_finishes_the_exports_in_progress(tmp_path, caplog):
    """Before: stop() cancelled the queued exports (never stored) and, after uvicorn's grace period, answered
    what still ran with a bare text 500 (exporters do not retry it), logging each CancelledError's traceback."""
    with running_collector(tmp_path, http=LIMITS) as stopping:
        app = stopping._http.app
        exports_go, query_goes = threading.Event(), threading.Event()
        entered = threading.Semaphore(0)
        real_export, real_query = app.receiver.export, app.query_api.handle

        def stuck_export(*args):
            entered.release()
            exports_go.wait(30)
            return real_export(*args)

        def stuck_query(*args):
            query_goes.wait(30)
            return real_query(*args)

        app.receiver.export = stuck_export  # the stopped serve is thrown away: nothing to restore
        app.query_api.handle = stuck_query
        answers: list[tuple[int, dict, bytes]] = []
        query_answer: list[tuple[int, dict, bytes]] = []

        def send() -> None:
            status, headers, body = post(stopping.http_url + "/v1/traces", span_request(good_span("stop")))
            answers.append((status, dict(headers), body))

        def ask() -> None:
            query = json.dumps({"query": "SELECT 1"}).encode()
            status, headers, body = post(stopping.http_url + "/api/query", query, "application/json")
            query_answer.append((status, dict(headers), body))

        clients = [threading.Thread(target=send) for _ in range(http_server.EXPORT_THREADS + 4)]
        clients.append(threading.Thread(target=ask))
        stopper = threading.Thread(target=stopping._http.stop)
        caplog.set_level(logging.ERROR)
        try:
            for client in clients:
                client.start()
            for _ in range(http_server.EXPORT_THREADS):
                assert entered.acquire(timeout=10)
            time.sleep(0.3)  # the other four are queued for a worker, the query runs
            stopper.start()
            deadline = time.monotonic() + 3
            while len(answers) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(answers) == 4, "the exports queued for a worker were not answered at once"
            for status, headers, body in answers:
                assert status == 503 and headers["retry-after"] == "1"
                assert "stopping" in status_pb2.Status.FromString(body).message
            exports_go.set()  # those in a worker finish, and are answered before the port closes
            stopper.join(15)  # the query still runs after uvicorn's grace period
        finally:
            exports_go.set()
            query_goes.set()
        for client in clients:
            client.join(15)
    assert sorted(status for status, _, _ in answers) == [200] * http_server.EXPORT_THREADS + [503] * 4
    [(status, headers, body)] = query_answer
    assert status == 503 and headers["retry-after"] == "1" and "stopping" in json.loads(body)["error"]
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


def test_heads_alone_declaring_big_bodies_reserve_nothing(serve):
    """Before: 4 sockets sending only headers that declared 20 MiB made every other export get 429."""
    idle = [connect(serve) for _ in range(4)]
    try:
        for sock in idle:
            sock.sendall(head("/v1/traces", PROTOBUF, f"Content-Length: {20 << 20}"))
        time.sleep(0.2)  # serve has read the heads
        assert export(serve, compress=True) == 200  # gzip, as the Collector's exporter sends by default
        assert export(serve) == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_head_that_stops_is_closed_after_the_header_timeout(serve):
    with connect(serve) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        after = closed_within(sock, LIMITS.header_seconds + SLACK)
    assert after is not None, "serve still waits for the rest of the head"
    assert after > LIMITS.header_seconds / 2


def test_a_body_that_stops_gets_408_and_is_closed(serve):
    with connect(serve) as sock:
        sock.sendall(head("/v1/traces", PROTOBUF, "Content-Length: 1000") + b"\0" * 10)
        sock.settimeout(LIMITS.body_seconds + SLACK)
        try:
            response = answer(sock)
        except TimeoutError:
            pytest.fail("serve still waits for the rest of the body")
        assert response.status == 408 and response.headers["Connection"] == "close"
        assert closed_within(sock, SLACK) is not None


def trickle(sock: socket.socket, data: bytes, bytes_per_second: int, stop: threading.Event) -> None:
    """Send ``data`` at about ``bytes_per_second``, a tenth of a second's worth at a time, until cut off or
    stopped."""
    step = bytes_per_second // 10
    try:
        for start in range(0, len(data), step):
            if stop.is_set():
                return
            sock.sendall(data[start : start + step])
            time.sleep(0.1)
    except OSError:
        pass


def test_a_body_trickling_below_the_minimum_rate_is_cut_with_408(serve):
    stop = threading.Event()
    with connect(serve) as sock:
        sock.sendall(head("/v1/traces", PROTOBUF, f"Content-Length: {1 << 20}"))
        slow = LIMITS.body_min_rate // 4
        sender = threading.Thread(target=trickle, args=(sock, b"\0" * (1 << 20), slow, stop), daemon=True)
        started = time.monotonic()
        sender.start()
        # Each byte earns 1/min_rate s: at a quarter of the rate the deadline comes at body_seconds / (1 - 1/4).
        sock.settimeout(LIMITS.body_seconds / 0.75 + SLACK)
        try:
            response = answer(sock)
        except TimeoutError:
            pytest.fail("serve still reads a body arriving at a quarter of the minimum rate")
        finally:
            stop.set()
        assert response.status == 408
        assert time.monotonic() - started > LIMITS.body_seconds  # the rate cut it, not a fixed timeout
        sender.join(SLACK)


def test_a_slow_body_above_the_minimum_rate_is_read_past_the_body_timeout(serve):
    body = span_request(good_span("slow but steady"), good_span("x" * 12000))
    rate = LIMITS.body_min_rate * 2
    assert len(body) / rate > LIMITS.body_seconds  # takes longer than the base timeout
    with connect(serve) as sock:
        sock.sendall(head("/v1/traces", PROTOBUF, f"Content-Length: {len(body)}"))
        sender = threading.Thread(target=trickle, args=(sock, body, rate, threading.Event()), daemon=True)
        sender.start()
        sender.join(30)
        sock.settimeout(SLACK)
        assert answer(sock).status == 200


def test_idle_connections_cost_no_thread_each_and_are_closed_after_the_idle_timeout(serve):
    """Before: 500 idle sockets cost 500 threads, and stayed open."""
    threads = threading.active_count()
    idle = [connect(serve) for _ in range(500)]
    try:
        time.sleep(0.3)  # serve has accepted them
        assert threading.active_count() - threads < 50
        open_ones = set(idle)
        deadline = time.monotonic() + LIMITS.idle_seconds + SLACK
        with selectors.DefaultSelector() as selector:
            for sock in idle:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while open_ones and time.monotonic() < deadline:
                for key, _ in selector.select(0.2):
                    sock = key.fileobj
                    try:
                        if sock.recv(1024):
                            continue
                    except (BlockingIOError, ConnectionResetError):
                        pass
                    selector.unregister(sock)
                    open_ones.discard(sock)
        assert not open_ones, f"{len(open_ones)} of 500 idle connections still open"
    finally:
        for sock in idle:
            sock.close()


def test_300_simultaneous_connects_are_all_answered_without_a_syn_retry(serve):
    """Before: a listen backlog of 5, and 132 of 300 simultaneous connects timed out. A dropped SYN is sent again
    after a second, so every connect must complete well within one."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    clients = []
    started = time.monotonic()
    for _ in range(300):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", serve.http_port))
        clients.append(sock)
    answers: dict[socket.socket, bytes] = {}
    connected_after: list[float] = []
    done = 0
    try:
        with selectors.DefaultSelector() as selector:
            for sock in clients:
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + 20
            while done < len(clients) and time.monotonic() < deadline:
                for key, events in selector.select(0.2):
                    sock = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        connected_after.append(time.monotonic() - started)
                        sock.sendall(request)
                        selector.modify(sock, selectors.EVENT_READ)
                        answers[sock] = b""
                        continue
                    data = sock.recv(65536)
                    answers[sock] += data
                    if not data:
                        selector.unregister(sock)
                        done += 1
        finished = [sock for sock, data in answers.items() if data.startswith(b"HTTP/1.1 200 ")]
        assert len(finished) == 300, f"{len(finished)} of 300 answered"
        assert max(connected_after) < 0.9, f"the slowest connect took {max(connected_after):.1f} s"
    finally:
        for sock in clients:
            sock.close()


def test_gzip_bodies_are_still_bounded_after_inflating(serve):
    bomb = gzip.compress(b"\0" * (25 << 20))  # inflates past --max-body-mb (20 MiB)
    with connect(serve) as sock:
        sock.sendall(
            head("/v1/traces", PROTOBUF, "Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb
        )
        assert answer(sock).status == 413


def test_a_client_that_never_reads_its_answers_is_cut_after_the_write_timeout(serve):
    """Before: no deadline covered writes. A client pipelining requests without reading the answers kept its
    connection (and its place under the cap) for ever: 20 of them held every place at max_connections=20."""
    requests = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 100
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", serve.http_port))
        sock.settimeout(LIMITS.write_seconds * 2 + 10)
        started = time.monotonic()
        try:
            while time.monotonic() - started < 30:
                sock.sendall(requests)  # blocks once serve stops reading: it waits for its answers to go out
        except TimeoutError:
            pytest.fail("serve still holds a connection whose answers are not read")
        except OSError:  # reset: serve aborted it
            pass
        else:
            pytest.fail("serve still reads from a client that does not read its answers")
    assert export(serve) == 200


def test_a_client_that_half_closes_after_its_request_gets_the_answer(serve):
    """Before: uvicorn closed the connection on the client's FIN, after storing the spans but before answering:
    the client, answered nothing, sent them again."""
    body = span_request(good_span("half-closed"))
    with connect(serve) as sock:
        sock.sendall(head("/v1/traces", PROTOBUF, f"Content-Length: {len(body)}") + body)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(SLACK)
        response = answer(sock)
        assert response.status == 200
        assert closed_within(sock, SLACK) is not None


def test_health_and_metrics_answer_at_once_while_every_export_worker_is_stuck(serve, monkeypatch):
    """Before: /health ran on the export workers, behind exports waiting on a stalled disk (3.5 s)."""
    receiver = serve._http.app.receiver
    release = threading.Event()
    real = receiver.export

    def stuck(*args):
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(receiver, "export", stuck)
    statuses: list[int] = []
    senders = [
        threading.Thread(target=lambda: statuses.append(export(serve)))
        for _ in range(http_server.EXPORT_THREADS + 2)
    ]
    try:
        for sender in senders:
            sender.start()
        time.sleep(0.5)  # every worker waits, two exports are queued
        for path in ("/health", "/metrics"):
            started = time.monotonic()
            with urllib.request.urlopen(serve.http_url + path, timeout=SLACK) as response:
                assert response.status == 200
            assert time.monotonic() - started < 1.0, f"{path} waited for the export workers"
    finally:
        release.set()
        for sender in senders:
            sender.join(30)
    assert statuses == [200] * len(senders)


def test_an_inflating_body_is_counted_piece_by_piece_before_it_is_kept():
    """Before: a gzip body was inflated whole (up to --max-body-mb) in a worker, then counted."""
    held: list[int] = []

    def hold(size: int) -> None:
        if sum(held) + size > 2 << 20:
            raise Refused("over budget", store_down=False, retry_after=1)
        held.append(size)

    with pytest.raises(Refused):
        decompress(gzip.compress(b"\0" * (16 << 20)), "gzip", 20 << 20, hold)
    assert 0 < sum(held) <= 2 << 20


def test_the_connection_cap_fits_the_open_file_limit(monkeypatch):
    """Before: with the usual limit of 1024 open files the cap of 1000 was never reached; accepts failed instead
    (a traceback each) and exports timed out rather than getting 503."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert http_server.open_file_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 1024  # raised toward the hard limit
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), hard)
    )
    monkeypatch.setattr(http_server, "open_file_limit", lambda: 1024)
    server = http_server.HTTPServer(
        "127.0.0.1", 0, HTTPLimits(), receiver=None, query_api=None, health=lambda identify: {},
        metrics_text=str, max_body_bytes=1, inflight_body_bytes=1,
    )  # fmt: skip
    try:
        assert server.limits.max_connections < 1024 - 256
    finally:
        server.stop()


def test_failed_accepts_are_logged_once_a_minute_without_a_traceback(caplog, monkeypatch):
    monkeypatch.setattr(http_server, "open_file_limit", lambda: 1024)
    server = http_server.HTTPServer(
        "127.0.0.1", 0, HTTPLimits(), receiver=None, query_api=None, health=lambda identify: {},
        metrics_text=str, max_body_bytes=1, inflight_body_bytes=1,
    )  # fmt: skip
    caplog.set_level(logging.WARNING)
    failed = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many")}
    try:
        for _ in range(100):
            server._loop_error(None, failed)  # type: ignore[arg-type]
    finally:
        server.stop()
    assert len(caplog.records) == 1 and not caplog.records[0].exc_info
