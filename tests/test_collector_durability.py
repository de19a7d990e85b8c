"""A 2xx from `llmtap serve` means durable: real `llmtap serve` processes killed with SIGKILL, crashing between the
insert and its checkpoint, and stopped with SIGTERM; after a restart every acknowledged span is stored exactly once.
Also the writer's fallbacks: a damaged spool record, a store down at the first insert, a column type the Native
writer cannot write."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from collector_support import post, query, running_collector, wait_written
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.schema import bring_up_to_date
from llmtap.collector.pipeline import Limits, Pipeline
from llmtap.collector.spool import Spool
from llmtap.collector.stats import Stats
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from test_collector_receivers import START_NS, good_span, span_request

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """One `python -m llmtap serve` process on a chDB store under ``directory``."""

    def __init__(self, directory, *, flush_interval: float = 0.05, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "llmtap", "serve", "--port", str(self.port), "--grpc-port", "-1",
            "--dsn", f"chdb://{directory / 'chdb'}", "--flush-interval", str(flush_interval), "--no-status",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early: {self.process.stderr.read()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("serve did not become ready")

    def send(self, names: list[str], trace_byte: int) -> None:
        spans = [
            trace_pb2.Span(
                trace_id=bytes([trace_byte]) * 16, span_id=index.to_bytes(8, "big"), name=name,
                start_time_unix_nano=START_NS + index, end_time_unix_nano=START_NS + 1_000,
            )
            for index, name in enumerate(names, 1)
        ]  # fmt: skip
        body = trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
        ).SerializeToString()
        status, _, _ = post(self.url + "/v1/traces", body)
        assert status == 200

    def count(self, trace_byte: int, timeout: float = 30.0) -> tuple[int, int]:
        """(rows, distinct span ids) for one trace, once the count is stable."""
        sql = "SELECT count(), uniqExact(SpanId) FROM otel_traces WHERE TraceId = {t:String}"
        body = json.dumps({"query": sql, "parameters": {"t": bytes([trace_byte]).hex() * 16}}).encode()
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            status, _, answer = post(self.url + "/api/query", body, "application/json")
            assert status == 200, answer
            row = json.loads(answer.splitlines()[0])
            current = (int(row["count()"]), int(row["uniqExact(SpanId)"]))
            if current == last and current[0] > 0:
                return current
            last = current
            time.sleep(0.3)
        return last

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        return code, self.process.stderr.read()


def test_kill_minus_9_after_200_loses_nothing(tmp_path):
    serve = Serve(tmp_path, flush_interval=60)  # nothing is written before the kill: only the spool has it
    serve.send([f"span-{i}" for i in range(50)], trace_byte=1)
    serve.kill()
    restarted = Serve(tmp_path)
    try:
        assert restarted.count(1) == (50, 50)
    finally:
        restarted.terminate()


def test_crash_between_insert_and_checkpoint_is_deduplicated(tmp_path):
    serve = Serve(tmp_path, env={"LLMTAP_FAULT_EXIT_AFTER_INSERT": "1"})
    serve.send([f"span-{i}" for i in range(20)], trace_byte=2)
    assert serve.process.wait(30) == 70  # died right after inserting, before marking the batch written
    restarted = Serve(tmp_path)
    try:
        assert restarted.count(2) == (20, 20)  # replayed, but the rows already stored were not inserted twice
    finally:
        restarted.terminate()


def test_sigterm_writes_queued_data_and_exits_cleanly(tmp_path):
    serve = Serve(tmp_path, flush_interval=60)
    serve.send(["a", "b", "c"], trace_byte=3)
    code, stderr = serve.terminate()
    assert code == 0, stderr
    assert "stopped" in stderr and "unwritten" not in stderr
    assert not list((tmp_path / "chdb.spool").glob("segment-*.wal"))  # nothing left to replay
    restarted = Serve(tmp_path)
    try:
        assert restarted.count(3) == (3, 3)
    finally:
        _, stderr = restarted.terminate()
    assert "replayed 0 spooled request(s)" in stderr


def test_a_damaged_spool_record_is_quarantined_once_while_the_store_comes_back(tmp_path):
    """A replayed record that cannot be converted is set aside; when the first insert then finds ClickHouse down,
    the retry carries on with the rest of the batch instead of reading the quarantined record's deleted segment."""
    dsn = f"chdb://{tmp_path / 'chdb'}"
    previous = Spool(tmp_path / "spool", segment_bytes=1)  # one record per segment
    previous.append("traces", b"\x0a\xff not an export request")
    previous.append("traces", span_request(good_span("kept")))
    previous.close()

    attempts = []

    def store_down_once():
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionRefusedError("ClickHouse is restarting")
        return connect(dsn, create_database=True)

    with contextlib.closing(connect(dsn, create_database=True)) as client:
        bring_up_to_date(client)
    spool = Spool(tmp_path / "spool", segment_bytes=1)
    stats = Stats()
    pipeline = Pipeline(store_down_once, spool, stats, Limits(memory_bytes=0, flush_seconds=0.05))
    assert pipeline.start() == 2
    try:
        deadline = time.monotonic() + 30
        while stats.snapshot()["signals"]["traces"]["written"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.closing(connect(dsn, create_database=True)) as client:
            assert client.query("SELECT SpanName FROM otel.otel_traces").result_rows == [("kept",)]
    finally:
        assert pipeline.close()
    assert len(attempts) == 2
    assert sorted(p.suffix for p in (tmp_path / "spool" / "quarantine").iterdir()) == [".pb", ".txt"]
    assert Spool(tmp_path / "spool").recover() == []  # nothing left to replay


def test_a_column_type_changed_by_hand_is_written_on_the_careful_path(tmp_path, caplog):
    """The Native writer handles the exporter's column types; a store whose schema was altered to another type
    gets a warning at start, and serve writes through clickhouse-connect instead of failing every batch."""
    dsn = f"chdb://{tmp_path / 'chdb'}"
    with contextlib.closing(connect(dsn, create_database=True)) as client:
        bring_up_to_date(client)
        client.command("ALTER TABLE otel_traces MODIFY COLUMN TraceState Nullable(String)")
        with running_collector(tmp_path, dsn=dsn) as collector:
            assert post(collector.http_url + "/v1/traces", span_request(good_span("altered")))[0] == 200
            wait_written(collector, "traces", 1)
            assert query(collector, "SELECT SpanName, TraceState FROM otel.otel_traces") == [("altered", "")]
    assert "otel_traces.TraceState Nullable(String)" in caplog.text
