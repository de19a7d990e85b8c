"""The first errors users meet are one line saying what is wrong and what to do: a port another program holds, a
chDB store another process holds, a ClickHouse server that cannot be reached; what a program on the port says
does not get into them, and /health names its serve only to this machine and token holders. Real `llmtap`
processes, real chDB, real sockets on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from collector_support import running_collector
from llmtap.collector.app import Collector
from test_collector_durability import Serve, free_port

LLMTAP = [sys.executable, "-m", "llmtap"]
# A serve that fails fast: any free HTTP port, no gRPC, no status line.
QUICK_SERVE = ["serve", "--port", "0", "--grpc-port", "-1", "--no-status"]
# Holds a chDB store the way any Python program can, until its stdin closes.
HOLD_STORE = (
    "import sys; from chdb import session; s = session.Session(sys.argv[1]); "
    "print('held', flush=True); sys.stdin.read()"
)
TOKEN = "s3cret-token"
# A client address that is not this machine (TEST-NET-1, RFC 5737): only handed to serve's decision as where a
# request came from; no socket ever uses it.
ELSEWHERE = "192.0.2.1"


def llmtap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMTAP, *args], capture_output=True, text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit code 1 and said why in exactly one line on stderr."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------- a port that is taken


def test_a_taken_http_port_names_the_serve_holding_it(tmp_path):
    with running_collector(tmp_path / "first") as first:
        port = first.http_port
        line = error_line(llmtap(*QUICK_SERVE, "--port", str(port), "--dsn", f"chdb://{tmp_path / 'second'}"))
    assert line == (
        f"Error: cannot listen for OTLP/HTTP on 127.0.0.1:{port}: port {port} is in use by another llmtap serve "
        f"(pid {os.getpid()}, store {first.config.dsn}); pass --port to choose another (0 picks a free one)"
    )


@contextlib.contextmanager
def answering_health(body: bytes) -> Iterator[int]:
    """A program that is not llmtap on a port of 127.0.0.1, answering every GET with ``body``: the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with HTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


TERMINAL_TRICKS = "/x\nError: all is well\r\x1b[2J\x1b]0;title\x07\u202eevil\tend\u2028!"
NAMED = "in use by another llmtap serve"
# What a program that is not llmtap may answer on /health, and what the port check makes of it.
HOSTILE_HEALTH = [
    # Newlines, terminal escapes, a bidi override, a tab, a line separator: the text stays, the rest goes.
    pytest.param(
        {"pid": 4242, "store": TERMINAL_TRICKS},
        f"{NAMED} (pid 4242, store /xError: all is well[2J]0;titleevilend!)",
        id="control-characters",
    ),
    pytest.param(
        {"pid": 4242, "store": "A" * 10_000}, f"{NAMED} (pid 4242, store {'A' * 199}…)", id="huge-store"
    ),
    pytest.param({"pid": "4242\nError: injected", "store": "s"}, "already in use", id="text-pid"),
    pytest.param({"pid": 1e300, "store": "s"}, "already in use", id="huge-pid"),
    pytest.param({"pid": True, "store": "s"}, "already in use", id="bool-pid"),
    pytest.param({"pid": 4242, "store": {"path": "s"}}, "already in use", id="dict-store"),
    pytest.param({"pid": 4242, "store": "\n\x1b"}, "already in use", id="empty-store"),
    # No serve says that much about itself.
    pytest.param({"pid": 4242, "store": "s", "padding": "x" * 100_000}, "already in use", id="huge-answer"),
]


@pytest.mark.parametrize(("health", "holder"), HOSTILE_HEALTH)
def test_a_port_held_by_another_program_cannot_put_its_text_into_the_error(tmp_path, health, holder):
    with answering_health(json.dumps(health).encode()) as port:
        line = error_line(llmtap(*QUICK_SERVE, "--port", str(port), "--dsn", f"chdb://{tmp_path / 'chdb'}"))
    assert line == (
        f"Error: cannot listen for OTLP/HTTP on 127.0.0.1:{port}: port {port} is {holder}; "
        "pass --port to choose another (0 picks a free one)"
    )


@pytest.mark.parametrize(
    ("option", "protocol", "hint"),
    [
        ("--port", "OTLP/HTTP", "0 picks a free one"),
        ("--grpc-port", "OTLP/gRPC", "0 picks a free one, -1 turns gRPC off"),
    ],
)
def test_a_port_taken_by_another_program_says_which_port_and_flag(tmp_path, option, protocol, hint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--grpc-port" if option == "--port" else "--port"
        args = ["serve", "--no-status", "--dsn", f"chdb://{tmp_path / 'chdb'}", option, str(port), other, "0"]
        line = error_line(llmtap(*args, timeout=60))
    assert line == (
        f"Error: cannot listen for {protocol} on 127.0.0.1:{port}: port {port} is already in use; "
        f"pass {option} to choose another ({hint})"
    )


# ---------------------------------------------------------------- what /health tells whom


# Who asks /health (client address, Authorization header) and what it is told: which serve this is ("named"), the
# counters alone ("counters"), or only whether serve is up ("up").
ASKING_WITH_TOKEN = [
    ("127.0.0.1", None, "up"),
    ("::1", None, "up"),
    ("127.0.0.1", "Bearer wrong", "up"),
    ("127.0.0.1", f"Bearer {TOKEN}", "named"),
    (ELSEWHERE, f"Bearer {TOKEN}", "named"),
    (ELSEWHERE, None, "up"),
    (ELSEWHERE, "Bearer wrong", "up"),
    (ELSEWHERE, TOKEN, "up"),  # not a bearer credential
]
# Without a token (--allow-remote alone) every request is authorized, yet nobody elsewhere holds the token.
ASKING_WITHOUT_TOKEN = [
    ("127.0.0.1", None, "named"),
    ("::1", "Bearer x", "named"),
    (ELSEWHERE, None, "counters"),
    (ELSEWHERE, "Bearer x", "counters"),
]


STORE_ERROR = "cannot reach ClickHouse at ch.internal.example:8123: connection refused"


def told(health: dict) -> str:
    """What a /health answer tells (see ASKING_WITH_TOKEN), checking that it tells nothing more."""
    assert health["status"] == "ok"
    if set(health) == {"status"}:
        return "up"
    assert "spool" in health
    if "pid" in health or "store" in health:
        assert (health["pid"], health["last_error"]) == (os.getpid(), STORE_ERROR)
        return "named"
    assert health["last_error"] and "ch.internal" not in health["last_error"], health["last_error"]
    return "counters"


@pytest.mark.parametrize(
    ("token", "asking"), [(TOKEN, ASKING_WITH_TOKEN), (None, ASKING_WITHOUT_TOKEN)], ids=["token", "no-token"]
)
def test_health_tells_who_asks_only_what_they_may_know(tmp_path, token, asking):
    """The store names a ClickHouse host and user, or a path in a home directory, and the counters what flows
    through serve; /health answers anyone."""
    with running_collector(tmp_path, token=token) as serve:
        serve.stats.write_failed(STORE_ERROR, store_down=False)  # errors name the store too
        health_for = serve._http.health_for  # what serve's HTTP server answers a GET /health from a client
        seen = [told(health_for(client, authorization)) for client, authorization, _ in asking]
    assert seen == [expected for *_, expected in asking]


def test_with_a_token_health_and_metrics_give_details_only_for_it(tmp_path):
    """Over the socket: without the token, /health says only that serve is up and /metrics is refused."""

    def get(path: str, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(serve.http_url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read()

    with running_collector(tmp_path, token=TOKEN) as serve:
        assert get("/health") == (200, b'{"status": "ok"}')
        status, body = get("/health", TOKEN)
        assert status == 200 and json.loads(body)["pid"] == os.getpid()
        assert get("/metrics")[0] == 401
        status, body = get("/metrics", TOKEN)
        assert status == 200 and b"llmtap_serve" in body


# ---------------------------------------------------------------- a store that is held


def store_held_by(serve: Collector) -> str:
    """The error a second serve on the store of ``serve`` (running in this process) prints."""
    return (
        f"Error: the store at {serve.config.dsn.removeprefix('chdb://')} is in use by the llmtap serve at pid "
        f"{os.getpid()} on port {serve.http_port}: one store can have only one serve; send to that one "
        f"({serve.http_url}), stop it, or pass --dsn for another store"
    )


@pytest.mark.slow
def test_a_second_serve_on_the_same_store_names_the_first_and_advice_that_works(tmp_path):
    with running_collector(tmp_path) as first:
        # The advice it used to get (its own --spool-dir) must not lead to chDB's lock error either.
        for own_spool in ([], ["--spool-dir", str(tmp_path / "own-spool")]):
            line = error_line(llmtap(*QUICK_SERVE, "--dsn", first.config.dsn, *own_spool))
            assert line == store_held_by(first)
        # Another store works; sharing the first one's spool does not, and says to give it its own.
        line = error_line(
            llmtap(
                *QUICK_SERVE,
                "--dsn",
                f"chdb://{tmp_path / 'b'}",
                "--spool-dir",
                str(first.config.resolved_spool_dir()),
            )
        )
        assert "give this one its own --spool-dir" in line
        other = Serve(tmp_path / "other")
        assert other.terminate()[0] == 0


def test_a_second_serve_on_the_same_store_and_ports_is_told_about_the_store_not_the_ports(tmp_path):
    # Two `llmtap serve` with the same defaults: other ports would only lead to the store being in use.
    with running_collector(tmp_path) as first:
        ports = ["--port", str(first.http_port), "--grpc-port", str(first.grpc_port)]
        line = error_line(llmtap("serve", "--no-status", "--dsn", first.config.dsn, *ports))
        assert line == store_held_by(first)


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A chDB store held by a plain Python process (not serve): its pid and path."""
    path = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid, path
    finally:
        holder.stdin.close()
        holder.wait(60)


def test_a_store_held_by_another_process_is_one_line_for_every_command(held_store):
    pid, path = held_store
    for command in (["logs"], ["stats"], ["db", "status"], ["db", "migrate"], QUICK_SERVE):
        line = error_line(llmtap(*command, "--dsn", f"chdb://{path}"))
        assert line == (
            f"Error: the store at {path} is in use by another process (pid {pid}): chDB lets one process open a "
            "store at a time; stop that process, or pass --dsn for another store"
        ), command


# ---------------------------------------------------------------- a server that cannot be reached


def test_an_unreachable_server_is_one_line_naming_host_port_and_why():
    address = f"127.0.0.1:{free_port()}"  # a free port: nothing listens there
    for command in (["logs"], ["stats"], ["db", "status"]):
        line = error_line(llmtap(*command, "--dsn", f"http://{address}/", timeout=30))
        assert line == f"Error: cannot reach ClickHouse at {address}: connection refused"


def test_serve_on_an_unreachable_server_says_so_in_its_start_line_only(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [*LLMTAP, *QUICK_SERVE, "--dsn", f"http://{address}/", "--spool-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = process.stderr.readline()
    finally:
        process.terminate()
        rest = process.communicate(timeout=60)[1]
    assert started.startswith("llmtap serve: OTLP/HTTP on"), started + rest
    assert (
        f"store unreachable, will retry (cannot reach ClickHouse at {address}: connection refused)" in started
    )
    assert rest.splitlines() == ["llmtap serve: stopping, writing queued data…", "llmtap serve: stopped"]
