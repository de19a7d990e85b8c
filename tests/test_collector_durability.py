"""A 2xx from `llmtap serve` means durable: real `llmtap serve` processes killed with SIGKILL, crashing between the
insert and its checkpoint, and stopped with SIGTERM; after a restart every acknowledged span is stored exactly once.
A full spool disk and a failing fsync answer 503 and acknowledge nothing that is not durable; the writer drains a
full disk. Also the writer's fallbacks: a damaged spool record, a store down at the first insert, a column type the
Native writer cannot write."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import grpc
import pytest
from collector_support import fill_leaving, mounted_tmpfs, post, query, running_collector, wait_written
from google.rpc import error_details_pb2
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.schema import bring_up_to_date
from llmtap.collector import rows
from llmtap.collector.pipeline import Limits, Pipeline
from llmtap.collector.spool import Spool, SpoolError
from llmtap.collector.stats import Stats
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
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
                raise AssertionError(f"serve exited early: {self.process.communicate()[1]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.kill()  # else it outlives the test, holding the store and its port
        raise AssertionError("serve did not become ready")

    def send(self, names: list[str], trace_byte: int) -> None:
        assert self.export(names, trace_byte)[0] == 200

    def export(self, names: list[str], trace_byte: int, first: int = 1) -> tuple[int, dict[str, str]]:
        """POST one span per name (span ids counting from ``first``); the answer's status and headers."""
        spans = [
            trace_pb2.Span(
                trace_id=bytes([trace_byte]) * 16, span_id=index.to_bytes(8, "big"), name=name,
                start_time_unix_nano=START_NS + index, end_time_unix_nano=START_NS + index + 1_000,
            )
            for index, name in enumerate(names, first)
        ]  # fmt: skip
        body = trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
        ).SerializeToString()
        status, headers, _ = post(self.url + "/v1/traces", body)
        return status, headers

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

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
        self.process.communicate(timeout=30)  # closes the stderr pipe too

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr


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


def test_a_full_spool_disk_answers_503_and_every_acknowledged_span_survives(tmp_path):
    """The spool's disk fills up while spans arrive: what got 200 is on disk, the rest gets 503 + Retry-After
    (exporters retry that), /health says the spool is not writable, and once space returns serve takes requests
    again by itself. After a crash, the restarted serve stores exactly the acknowledged spans."""
    spool, names = tmp_path / "spool", [f"span-{i}" for i in range(20)]
    acknowledged, refusals = 0, []
    with mounted_tmpfs(spool, "2m"):
        serve = Serve(tmp_path, flush_interval=60, env={"LLMTAP_SPOOL_DIR": str(spool)})  # held in the spool
        try:
            fill_leaving(spool / "filler", 256 << 10)
            deadline = time.monotonic() + 60
            for batch in range(2_000):  # about 256 KiB / 1 KiB requests fill it
                if len(refusals) >= 3 or time.monotonic() > deadline:
                    break
                status, headers = serve.export(names, trace_byte=9, first=batch * len(names) + 1)
                if status == 200:
                    acknowledged += len(names)
                else:
                    refusals.append((status, headers.get("Retry-After")))
            full_health = serve.health()
            (spool / "filler").unlink()
            taken_again = [
                serve.export(names, 9, first=batch * len(names) + 1)[0] for batch in range(2_000, 2_050)
            ]
            acknowledged += taken_again.count(200) * len(names)
            freed_health = serve.health()
        finally:
            serve.kill()
        restarted = Serve(tmp_path, env={"LLMTAP_SPOOL_DIR": str(spool)})
        try:
            stored = restarted.count(9)
        finally:
            restarted.terminate()
    print(f"acknowledged {acknowledged} spans, refused {refusals}, stored {stored}")
    assert stored == (acknowledged, acknowledged)
    assert refusals == [(503, "5")] * 3
    assert full_health[0] == 503 and full_health[1]["spool"]["writable"] is False
    assert full_health[1]["status"].startswith("spool not writable") and full_health[1]["store_up"] is True
    assert freed_health[0] == 200 and freed_health[1]["spool"]["writable"] is True
    assert taken_again == [200] * 50


def test_the_writer_drains_a_full_spool_disk_while_grpc_rides_it_out(tmp_path, monkeypatch):
    """The spool's disk (a tmpfs; the store is on another disk) fills while the writer is held back: gRPC answers
    UNAVAILABLE with a RetryInfo and /health says the spool, not the store, is the trouble. Let go, the writer
    drains the full disk (the checkpoint it saves before each insert needs no new blocks) without counting the
    store down, and the drained segment's space is free again: requests are taken with the filler still there."""
    held, begin = threading.Event(), Spool.begin
    monkeypatch.setattr(Spool, "begin", lambda spool, seqs: held.wait(30) and begin(spool, seqs))
    spool, sent = tmp_path / "spool", 0
    with mounted_tmpfs(spool, "1m"), running_collector(tmp_path, spool_dir=spool) as collector:
        fill_leaving(spool / "filler", 64 << 10)
        url = collector.http_url + "/v1/traces"
        for index in range(1_000):  # about 64 KiB / 150 bytes fill it
            if post(url, span_request(good_span(f"span-{index}")))[0] != 200:
                break
            sent += 1
        with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(
                    trace_service_pb2.ExportTraceServiceRequest.FromString(span_request(good_span("g")))
                )
        full_health = get_health(collector.http_url)
        held.set()
        wait_written(collector, "traces", sent, timeout=20)  # the disk still full
        drained_health = get_health(collector.http_url)
        assert post(url, span_request(good_span("after")))[0] == 200  # the filler still there
        (spool / "filler").unlink()
        assert post(url, span_request(good_span("freed")))[0] == 200
        wait_written(collector, "traces", sent + 2)
    assert 50 < sent < 1_000
    assert full_health[0] == 503 and full_health[1]["status"].startswith("spool not writable")
    assert full_health[1]["store_up"] is True
    assert drained_health[0] == 200, drained_health
    assert drained_health[1]["store_up"] is True and drained_health[1]["write_errors"] == 0
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    retry = dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"]
    assert error_details_pb2.RetryInfo.FromString(retry).retry_delay.seconds == 5


def get_health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_replay_goes_on_past_a_torn_record_in_the_middle_of_a_segment(tmp_path, caplog):
    """A spool left by a serve that did not cut failed appends off: intact records after a torn one replay."""
    spool = Spool(tmp_path / "spool")
    spool.append("traces", b"before")
    torn = spool.append("traces", b"torn" * 100)
    spool.append("traces", b"after")
    spool.close()
    data = torn.segment.read_bytes()
    torn.segment.write_bytes(data[: torn.offset + 10] + data[torn.offset + torn.length :])
    spool = Spool(tmp_path / "spool")
    assert [spool.read(record) for record in spool.recover()] == [b"before", b"after"]
    spool.close()
    assert "skipped 27 unreadable byte(s)" in caplog.text  # its 17-byte header and 10 payload bytes


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


def _refusing_pipeline(tmp_path):
    """A pipeline whose store refuses the request b"rejected" as data, with its quarantine unwritable (a file where
    its directory goes: an OSError, as on a full disk); the payloads inserted."""
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / "quarantine").write_bytes(b"")
    pipeline = Pipeline(lambda: None, spool, Stats(), Limits(flush_seconds=0.5))  # both in one batch
    inserted: list[bytes] = []

    def insert(entries, token, landed):
        if any(entry.payload == b"rejected" for entry in entries):
            raise ValueError("ClickHouse refuses this data")
        inserted.extend(entry.payload for entry in entries)
        pipeline._release(entries)

    pipeline._insert = insert
    pipeline._sleep = lambda seconds: time.sleep(0.01)
    pipeline.start()
    pipeline.accept("traces", b"rejected", 1)
    pipeline.accept("traces", b"after", 1)
    return pipeline, inserted


def test_a_request_refused_as_data_waits_for_its_quarantine_and_drains_once_space_returns(tmp_path, caplog):
    """The quarantine of a request ClickHouse refuses cannot be written (a full disk): the writer holds its batch,
    with /health's spool not writable, and tries again, so it drains once space returns. It used to go on without
    it: `written` stuck at its seq, no later segment ever deleted nor counted pending, the disk filling until every
    request got 503, with nobody trying the quarantine again."""
    pipeline, inserted = _refusing_pipeline(tmp_path)
    spool = pipeline.spool
    try:
        assert wait_for(lambda: "cannot quarantine traces request 1" in caplog.text)
        time.sleep(0.2)  # it keeps waiting
        assert inserted == [] and not spool.writable()
        assert spool.pending_bytes == len(b"rejected") + len(b"after")
        (tmp_path / "spool" / "quarantine").unlink()  # space is back
        assert wait_for(lambda: spool.written == 2 and spool.writable())
        assert inserted == [b"after"] and spool.pending_bytes == 0
    finally:
        assert pipeline.close()
    assert sorted(path.suffix for path in (tmp_path / "spool" / "quarantine").iterdir()) == [".pb", ".txt"]
    assert Spool(tmp_path / "spool").recover() == []


def test_a_request_that_cannot_be_quarantined_stays_in_the_spool_when_serve_stops(tmp_path, caplog):
    """Serve stops while the writer waits to quarantine a rejected request: the request stays in the spool for the
    next start instead of being lost, and its batch, split to find it, stays open."""
    pipeline, _ = _refusing_pipeline(tmp_path)
    assert wait_for(lambda: "cannot quarantine traces request 1" in caplog.text)
    assert pipeline.close()
    (tmp_path / "spool" / "quarantine").unlink()
    reopened = Spool(tmp_path / "spool")
    # Replayed whole, with the token it had, so what was written of it is de-duplicated.
    assert [reopened.read(record) for record in reopened.recover()] == [b"rejected", b"after"]
    assert reopened.open_batches() == [(1, 2)]
    reopened.close()


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


def test_released_records_are_not_replayed_and_an_open_batch_keeps_its_token(tmp_path):
    """Records released past the first waiting one are not inserted again after a restart; a batch begun and not
    released is replayed with the token it had, which no spool made anew (a lost checkpoint) ever gives."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    first, second, third, fourth = (spool.append("traces", bytes([i])) for i in range(4))
    token = spool.begin([third.seq, second.seq])
    assert spool.begin([second.seq, third.seq]) == token  # a retry of the batch
    spool.release([fourth.seq])  # written while the first still waits
    spool.close()
    reopened = Spool(tmp_path / "spool")
    assert [record.seq for record in reopened.recover()] == [first.seq, second.seq, third.seq]
    assert reopened.open_batches() == [(second.seq, third.seq)]
    assert reopened.begin([second.seq, third.seq]) == token
    reopened.release([first.seq, second.seq, third.seq])
    assert reopened.open_batches() == [] and reopened.written == fourth.seq
    reopened.close()
    (tmp_path / "spool" / "checkpoint.slots").unlink()
    anew = Spool(tmp_path / "spool")
    anew.recover()
    assert anew.begin([second.seq, third.seq]) != token
    anew.close()


def _name_of(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a descriptor's file in /proc")
def test_a_checkpoint_that_cannot_be_saved_is_the_spools_failure_not_the_stores(tmp_path, monkeypatch):
    """The checkpoint saved before an insert fails (ENOSPC from its fsync): the writer waits without counting
    the store down, /health's spool is not writable meanwhile, and the batch is written once it can be saved."""
    spool = Spool(tmp_path / "spool")
    stats = Stats()
    pipeline = Pipeline(lambda: None, spool, stats, Limits(flush_seconds=0.01))
    inserted: list[bytes | None] = []

    def insert(entries, token, landed):
        inserted.extend(entry.payload for entry in entries)
        pipeline._release(entries)

    pipeline._insert = insert
    pipeline._sleep = lambda seconds: time.sleep(0.01)
    pipeline.start()
    failing, fsync = threading.Event(), os.fsync

    def fsync_failing_for_the_checkpoint(fd: int) -> None:
        if failing.is_set() and _name_of(fd).startswith("checkpoint"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_for_the_checkpoint)
    failing.set()
    pipeline.accept("traces", b"one", 1)
    deadline = time.monotonic() + 10
    while spool.writable() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert not spool.writable() and not inserted
        assert stats.store_up and stats.write_errors == 0
    finally:
        failing.clear()
    while not inserted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inserted == [b"one"] and spool.writable()
    assert pipeline.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a descriptor's file in /proc")
def test_a_failed_fsync_refuses_every_record_it_covered_and_cuts_them_off(tmp_path, monkeypatch):
    """Two appends share one fsync, which fails: both are refused (a later fsync could succeed without their
    pages, which the kernel may have dropped), both are cut off the segment, and they do not hold the checkpoint
    back."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    kept = spool.append("traces", b"kept")
    entered, go, fsync, failed = threading.Event(), threading.Event(), os.fsync, []

    def fsync_failing_once(fd: int) -> None:
        if _name_of(fd).endswith(".wal") and not failed:
            failed.append(fd)
            entered.set()
            assert go.wait(10)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    errors: list[BaseException | None] = []

    def append(payload: bytes) -> None:
        try:
            spool.append("traces", payload)
            errors.append(None)
        except BaseException as exc:
            errors.append(exc)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    first = threading.Thread(target=append, args=(b"refused-1",))
    first.start()
    assert entered.wait(10)
    size = kept.segment.stat().st_size
    second = threading.Thread(target=append, args=(b"refused-2",))
    second.start()  # written, then waits for the fsync in progress
    deadline = time.monotonic() + 10
    while kept.segment.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.01)
    go.set()
    first.join(10)
    second.join(10)
    assert len(errors) == 2 and all(isinstance(error, SpoolError) for error in errors), errors
    after = spool.append("traces", b"after")
    data = b"".join(path.read_bytes() for path in sorted((tmp_path / "spool").glob("segment-*.wal")))
    assert b"kept" in data and b"after" in data and b"refused" not in data
    spool.release([kept.seq, after.seq])
    assert spool.written == after.seq  # past the refused records
    spool.close()


def test_a_failed_fsync_answers_503_with_retry_after_and_unavailable_with_retry_info(tmp_path, monkeypatch):
    """The spool's fsync fails (EIO) for one HTTP and one gRPC export: each is refused as retryable, nothing of
    them is stored, and the next export is taken."""
    fail, fsync = [], os.fsync

    def fsync_failing_on_demand(fd: int) -> None:
        if fail and _name_of(fd).endswith(".wal"):
            fail.clear()
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_on_demand)
    with running_collector(tmp_path) as collector:
        url = collector.http_url + "/v1/traces"
        assert post(url, span_request(good_span("before")))[0] == 200
        fail.append(True)
        status, headers, _ = post(url, span_request(good_span("refused")))
        fail.append(True)
        with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(
                    trace_service_pb2.ExportTraceServiceRequest.FromString(span_request(good_span("g")))
                )
        assert post(url, span_request(good_span("after")))[0] == 200
        wait_written(collector, "traces", 2)
        names = query(collector, "SELECT SpanName FROM otel.otel_traces ORDER BY SpanName")
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    retry = dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"]
    assert error_details_pb2.RetryInfo.FromString(retry).retry_delay.seconds == 5
    assert names == [("after",), ("before",)]


def test_every_name_the_spool_relies_on_is_fsynced_in_its_directory_at_once(tmp_path, monkeypatch):
    """A file renamed into the spool directory (the checkpoint) is followed at once by an fsync of the directory:
    after a power loss the rename could otherwise be gone while what follows relies on it."""
    events: list[tuple[str, int]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(source, target) -> None:
        replace(source, target)
        events.append(("rename", os.stat(os.path.dirname(target)).st_ino))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    spool = Spool(tmp_path / "spool")
    spool.recover()
    spool.close()  # another checkpoint
    renames = [index for index, (kind, _) in enumerate(events) if kind == "rename"]
    assert renames
    assert all(events[index + 1 : index + 2] == [("fsync", events[index][1])] for index in renames), events


def test_a_torn_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A checkpoint write that tears (half its bytes, then the process dies) leaves the one before it."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    first, second = spool.append("traces", b"1"), spool.append("traces", b"2")
    spool.release([first.seq])
    write = os.write

    def torn_checkpoint_write(fd: int, data) -> int:
        if _name_of(fd).startswith("checkpoint"):
            write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return write(fd, data)

    monkeypatch.setattr(os, "write", torn_checkpoint_write)
    spool.release([second.seq])  # its checkpoint fails, logged
    monkeypatch.undo()
    spool._lock_file.close()  # the process dies: no close()
    reopened = Spool(tmp_path / "spool")
    assert reopened.written == first.seq
    assert [reopened.read(record) for record in reopened.recover()] == [b"2"]
    reopened.close()


def test_a_checkpoint_of_an_earlier_llmtap_is_read_and_replaced(tmp_path):
    """checkpoint.json, rewritten and renamed whole before the slots, carries over: its spool id (so the tokens
    of its open batches) and what it says is written; it is removed once the slots hold the checkpoint."""
    spool = Spool(tmp_path / "spool")
    records = [spool.append("traces", bytes([i])) for i in range(4)]
    spool.close()
    (tmp_path / "spool" / "checkpoint.slots").unlink()
    legacy = {"spool": "0123456789abcdef", "written": 1, "released": [[4, 4]], "open": [[[2, 3]]]}
    (tmp_path / "spool" / "checkpoint.json").write_text(json.dumps(legacy))
    reopened = Spool(tmp_path / "spool")
    assert [record.seq for record in reopened.recover()] == [records[1].seq, records[2].seq]
    assert reopened.id == legacy["spool"] and reopened.open_batches() == [(2, 3)]
    assert not (tmp_path / "spool" / "checkpoint.json").exists()
    reopened.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a descriptor's file in /proc")
def test_a_batch_whose_checkpoint_failed_is_noted_open_by_the_retry(tmp_path, monkeypatch):
    """begin() fails to save the checkpoint once; its retry must save it, not hand out the token as if the batch
    were open on disk: an insert after it, cut short by a crash, would be replayed as another batch."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    record = spool.append("traces", b"one")
    fsync, failed = os.fsync, []

    def fsync_failing_once_for_the_checkpoint(fd: int) -> None:
        if not failed and _name_of(fd).startswith("checkpoint"):
            failed.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once_for_the_checkpoint)
    with pytest.raises((OSError, SpoolError)):
        spool.begin([record.seq])
    token = spool.begin([record.seq])  # the retry; then the insert, and a crash
    monkeypatch.undo()
    spool._lock_file.close()
    reopened = Spool(tmp_path / "spool")
    reopened.recover()
    assert reopened.open_batches() == [(record.seq,)]
    assert reopened.begin([record.seq]) == token
    reopened.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a descriptor's file in /proc")
def test_a_checkpoint_that_failed_after_an_insert_is_saved_again_without_traffic(tmp_path, monkeypatch):
    """The checkpoint saved as a batch is released fails once (EIO from its fsync) and no request follows: the
    writer tries it again on its own, so /health's spool becomes writable again and the checkpoint on disk says the
    batch is written (it waited for the next request, for ever behind a balancer that stops sending on a 503)."""
    spool = Spool(tmp_path / "spool")
    pipeline = Pipeline(lambda: None, spool, Stats(), Limits(flush_seconds=0.01))
    fsync, failing = os.fsync, []

    def fsync_failing_once_for_the_checkpoint(fd: int) -> None:
        if failing and _name_of(fd).startswith("checkpoint"):
            failing.pop()
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    def insert(entries, token, landed):
        failing.append(True)  # the checkpoint of the release
        pipeline._release(entries)

    monkeypatch.setattr(os, "fsync", fsync_failing_once_for_the_checkpoint)
    pipeline._insert = insert
    pipeline.start()
    pipeline.accept("traces", b"one", 1)
    try:
        assert wait_for(lambda: spool.written == 1)
        assert wait_for(spool.writable, timeout=5) and spool._checkpointed == 1
    finally:
        assert pipeline.close()


def test_a_restart_does_not_expand_the_seqs_released_behind_a_stuck_one(tmp_path):
    """A million seqs released behind one that stays are one range in the checkpoint; a restart must keep them as
    that range (it expanded them into a set, a sorted list and a heap: 10 million took 5 s and 789 MB)."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    stuck = spool.append("traces", b"stuck")
    spool.release(range(stuck.seq + 1, 1_000_001))  # as if appended and written
    spool._next_seq = 1_000_001
    spool.close()
    reopened = Spool(tmp_path / "spool")
    assert [reopened.read(record) for record in reopened.recover()] == [b"stuck"]
    assert reopened._unreleased == [stuck.seq] and reopened._released.ranges() == [[2, 1_000_000]]
    assert reopened.append("traces", b"next").seq == 1_000_001
    reopened.release([stuck.seq])
    assert reopened.written == 1_000_000
    reopened.close()


def test_the_stored_ranges_of_released_seqs_are_read_in_any_order():
    """A checkpoint's ranges (an earlier llmtap's too) are merged as they are read, never expanded."""
    from llmtap.collector.spool import _SeqRanges

    ranges = _SeqRanges.of_ranges([(5, 6), (1, 2), (3, 4), (9, 10), (8, 9), (20, 10**12)])
    assert ranges.ranges() == [[1, 6], [8, 10], [20, 10**12]] and ranges.last() == 10**12
    assert 4 in ranges and 7 not in ranges and 10**9 in ranges


def test_a_checkpoint_whose_directory_fsync_failed_keeps_its_generations_apart_and_fsyncs_it_again(
    tmp_path, monkeypatch
):
    """The checkpoint file is renamed into place and the directory fsync after it fails. The retry must write the
    next generation (it wrote the same one again, in one slot, the other slot holding another state under it,
    and a restart's tie took slot 0, possibly the older), and fsync the directory again before the checkpoint
    counts as saved (it never did, and segments were deleted on its word)."""
    from llmtap.collector import spool as spool_module

    fsync_directory, failing, calls = spool_module.fsync_directory, [True], []

    def fsync_directory_failing(path) -> None:
        calls.append(path)
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync_directory(path)

    monkeypatch.setattr(spool_module, "fsync_directory", fsync_directory_failing)
    spool = Spool(tmp_path / "spool")
    spool.recover()  # its first checkpoint makes the file
    assert calls and not spool.writable()
    failing[0] = False
    first = spool.append("traces", b"1")
    failing[0] = True
    calls.clear()
    spool.release([first.seq])  # written in its slot, but the directory still fails
    assert calls and spool._checkpointed == 0 and not spool.writable()
    failing[0] = False
    assert spool.retry_checkpoint() and spool._checkpointed == first.seq and spool.writable()
    spool._lock_file.close()  # the process dies: no close()
    reopened = Spool(tmp_path / "spool")
    assert reopened.written == first.seq and reopened.recover() == []
    reopened.close()


def test_a_checkpoint_of_an_earlier_llmtap_left_beside_the_slots_is_removed(tmp_path):
    """A kill between the slots' rename and the removal of checkpoint.json left both: the slots are read, and the
    stale file goes at the next checkpoint (it stayed for ever)."""
    spool = Spool(tmp_path / "spool")
    spool.recover()
    record = spool.append("traces", b"1")
    spool.release([record.seq])
    spool.close()
    (tmp_path / "spool" / "checkpoint.json").write_text(
        json.dumps({"spool": "0123456789abcdef", "written": 0})
    )
    reopened = Spool(tmp_path / "spool")
    assert reopened.recover() == [] and reopened.id != "0123456789abcdef"
    assert not (tmp_path / "spool" / "checkpoint.json").exists()
    reopened.close()


class FakeStore:
    """ClickHouse as the writer sees it, for its failure paths: one block per insert and table, a block whose token
    the table holds among its last ``window`` dropped (migration 0017's non_replicated_deduplication_window), a
    span named ``bad`` refused as data, and an outage for good (a kill) from the insert ``down_when`` picks."""

    def __init__(self, window: int = 1_000) -> None:
        self.window = window
        self.tokens: dict[str, collections.deque[str]] = {}
        self.names: list[str] = []  # the SpanName of every row stored
        self.blocks = 0  # blocks stored
        self.down = False
        self.down_when = lambda names: False

    def connect(self):
        return _FakeClient(self)


class _FakeClient:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def create_insert_context(self, table, names, column_oriented, settings):
        return types.SimpleNamespace(table=table, names=names, token=settings["insert_deduplication_token"])

    def insert(self, data, context) -> None:
        store = self.store
        names = list(data[context.names.index("SpanName")])
        if store.down or store.down_when(names):
            store.down = True
            raise ConnectionRefusedError("ClickHouse is down")
        if "bad" in names:
            raise ValueError("Code: 53. Type mismatch")
        seen = store.tokens.setdefault(context.table, collections.deque(maxlen=store.window))
        if context.token not in seen:
            seen.append(context.token)
            store.names.extend(names)
            store.blocks += 1

    def close(self) -> None:
        pass


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_payload_the_spool_cannot_read_back_is_retried_not_quarantined(tmp_path):
    """Reading a request kept on disk back fails (EIO, twice): the spool's trouble, not the request's. The batch
    waits, with /health's spool not writable and the store not counted down, and is then written whole; nothing is
    quarantined (it used to be, or, where the quarantine could not read it either, left behind while the rest of
    its batch went in under the batch's token)."""
    store, spool, stats = FakeStore(), Spool(tmp_path / "spool"), Stats()
    one, two = span_request(good_span("one")), span_request(good_span("two"))
    # "one" kept in memory, "two" only on disk; a batch takes requests up to that many bytes: both.
    pipeline = Pipeline(store.connect, spool, stats, Limits(memory_bytes=len(one) + 1, flush_seconds=0.3))
    pipeline._sleep = lambda seconds: time.sleep(0.01)
    read, failed, writable = spool.read, [], []

    def read_failing_twice(record):
        if record.seq == 2 and len(failed) < 2:
            failed.append(record.seq)
            writable.append(spool.writable())
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return read(record)

    spool.read = read_failing_twice
    pipeline.start()
    pipeline.accept("traces", one, 1)
    pipeline.accept("traces", two, 1)
    assert wait_for(lambda: len(store.names) == 2)
    assert sorted(store.names) == ["one", "two"] and store.blocks == 1  # one batch, one token
    assert writable == [True, False] and wait_for(spool.writable)  # cleared once the insert returns
    assert stats.store_up and stats.write_errors == 0
    assert pipeline.close()
    assert not (tmp_path / "spool" / "quarantine").exists()


def test_a_request_neither_converted_nor_quarantined_holds_its_batch_back(tmp_path, monkeypatch):
    """A request fails conversion (a converter bug, fixed by the next release) and its quarantine cannot be
    written: the rest of its batch must not go in under the batch's token, since the next start replays that
    request alone, as its batch, with that token, and the store would drop its rows as already stored. The batch
    waits (spool not writable) and, after a restart with the bug fixed, is written whole."""
    store = FakeStore()
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "quarantine").write_bytes(b"")  # the directory cannot be made: an OSError
    add_request = rows.add_request

    def converter_with_a_bug(batch, signal, payload):
        if b"two" in payload:
            raise ValueError("a converter bug")
        return add_request(batch, signal, payload)

    monkeypatch.setattr(rows, "add_request", converter_with_a_bug)
    spool = Spool(tmp_path / "spool")
    pipeline = Pipeline(store.connect, spool, Stats(), Limits(flush_seconds=0.3))
    pipeline._sleep = lambda seconds: time.sleep(0.01)
    pipeline.start()
    pipeline.accept("traces", span_request(good_span("one")), 1)
    pipeline.accept("traces", span_request(good_span("two")), 1)
    assert wait_for(lambda: store.names or not spool.writable())
    time.sleep(0.3)  # it keeps waiting
    assert store.names == [] and not spool.writable()
    pipeline.close()
    monkeypatch.undo()  # the next release
    restarted = Pipeline(store.connect, Spool(tmp_path / "spool"), Stats(), Limits(flush_seconds=0.05))
    assert restarted.start() == 2
    assert restarted.close()
    assert sorted(store.names) == ["one", "two"]


def test_a_split_killed_before_it_finds_the_culprit_is_replayed_within_the_deduplication_window(tmp_path):
    """A batch of 40 requests with one ClickHouse refuses as data (the last) is split to find it, and serve is
    killed just before it tries that request alone. The next start replays the batch and splits it the same way;
    every part inserted before the kill must still be among the block ids the table keeps (here 10, in ClickHouse
    non_replicated_deduplication_window = 1000). Inserting request by request made 39 blocks, and the replay's
    own pushed the last ones out as it went: every request was stored twice. Halving makes a handful."""
    names = [f"span-{index}" for index in range(1, 40)] + ["bad"]
    previous = Spool(tmp_path / "spool")
    for name in names:
        previous.append("traces", span_request(good_span(name)))
    previous.close()
    store = FakeStore(window=10)
    store.down_when = lambda inserted: inserted == ["bad"]  # the kill
    for _ in range(2):  # the killed process, and the next start
        pipeline = Pipeline(store.connect, Spool(tmp_path / "spool"), Stats(), Limits(flush_seconds=0.05))
        pipeline._sleep = lambda seconds: time.sleep(0.01)
        assert pipeline.start() == 40
        assert wait_for(lambda: store.down or len(store.names) == 39)
        pipeline.close()
        store.down, store.down_when = False, lambda inserted: False
    assert sorted(store.names) == sorted(names[:-1])  # each once
    assert store.blocks <= 7
    quarantined = [path.name for path in (tmp_path / "spool" / "quarantine").glob("*.pb")]
    assert quarantined == [f"{40:020d}-traces.pb"]
    assert Spool(tmp_path / "spool").recover() == []


def test_a_checkpoint_behind_a_stuck_record_lists_ranges_not_seqs(tmp_path, monkeypatch):
    """A record stays unreleased (a stuck batch) while 100,000 later ones are released: every checkpoint lists
    them, and every append waits for the append lock meanwhile. Listing them must not cost a walk over each seq
    (it sorted them all, under the lock, twice per batch, more with each batch for the life of the process)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # 100,000 appends
    spool = Spool(tmp_path / "spool")
    spool.recover()
    spool.append("traces", b"stuck")
    later = [spool.append("traces", b"x").seq for _ in range(100_000)]
    spool.release(later[1::2])
    spool.release(later[::2])
    assert spool.written == 0
    # What a checkpoint lists, under the lock, is the ranges, not the seqs: one, however many were released.
    assert spool._released.ranges() == [[later[0], later[-1]]]
    spool.close()
    reopened = Spool(tmp_path / "spool")
    assert [reopened.read(record) for record in reopened.recover()] == [b"stuck"]
    reopened.close()
