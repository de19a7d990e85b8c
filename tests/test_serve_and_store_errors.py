"""The first errors users meet are one line saying what is wrong and what to do: a port another program holds, a
chDB store another process holds, a ClickHouse server that cannot be reached. Real `llmtap` processes, real chDB,
real sockets on 127.0.0.1 only."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_support import running_collector
from test_collector_durability import Serve, free_port

LLMTAP = [sys.executable, "-m", "llmtap"]
# A serve that fails fast: any free HTTP port, no gRPC, no status line.
QUICK_SERVE = ["serve", "--port", "0", "--grpc-port", "-1", "--no-status"]
# Holds a chDB store the way any Python program can, until its stdin closes.
HOLD_STORE = (
    "import sys; from chdb import session; s = session.Session(sys.argv[1]); "
    "print('held', flush=True); sys.stdin.read()"
)


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


# ---------------------------------------------------------------- a store that is held


@pytest.mark.slow
def test_a_second_serve_on_the_same_store_names_the_first_and_advice_that_works(tmp_path):
    with running_collector(tmp_path) as first:
        store = tmp_path / "chdb"
        # The advice it used to get (its own --spool-dir) must not lead to chDB's lock error either.
        for own_spool in ([], ["--spool-dir", str(tmp_path / "own-spool")]):
            line = error_line(llmtap(*QUICK_SERVE, "--dsn", first.config.dsn, *own_spool))
            assert line == (
                f"Error: the store at {store} is in use by the llmtap serve at pid {os.getpid()} on port "
                f"{first.http_port}: one store can have only one serve; send to that one ({first.http_url}), "
                "stop it, or pass --dsn for another store"
            )
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


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [
        ("127.0.0.1", None, "connection refused"),
        # .invalid never resolves (RFC 2606): the resolver says so without asking any other host.
        ("nonexistent.invalid", 8123, r"the name does not resolve \(.+\)"),
    ],
)
def test_an_unreachable_server_is_one_line_naming_host_port_and_why(host, port, why):
    address = f"{host}:{port or free_port()}"  # a free port: nothing listens there
    for command in (["logs"], ["stats"], ["db", "status"]):
        line = error_line(llmtap(*command, "--dsn", f"http://{address}/", timeout=30))
        assert re.fullmatch(f"Error: cannot reach ClickHouse at {re.escape(address)}: {why}", line), line


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
