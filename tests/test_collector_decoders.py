"""Decoders and the spool under hostile input: hypothesis-fuzzed bodies never crash serve (only DecodeError), any
request that decodes converts to rows, and the spool survives torn and corrupted records."""

from __future__ import annotations

import errno
import gzip
import json
import math
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmtap.collector import rows
from llmtap.collector.decode import (
    JSON,
    LOGS,
    METRICS,
    PROTOBUF,
    SIGNALS,
    TRACES,
    DecodeError,
    decompress,
    parse,
    validate,
)
from llmtap.collector.native import native_string
from llmtap.collector.spool import Record, Spool, SpoolError, SpoolFull
from llmtap.collector.values import (
    as_string,
    attributes_to_map,
    encoded_attributes_to_map,
    encoded_attributes_to_native,
    go_float,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1 import trace_pb2

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_and_convert(signal, body: bytes, kind: str) -> None:
    """What serve does with a body: decode, validate, convert. Only DecodeError may escape."""
    try:
        request = parse(signal, body, kind)
    except DecodeError as exc:
        assert exc.status == 400 and exc.message
        return
    validate(signal, request)
    rows.add_request(rows.Batch(), signal.name, request.SerializeToString())


@FUZZ
@given(signal=st.sampled_from(list(SIGNALS.values())), body=st.binary(max_size=512))
def test_random_protobuf_bytes(signal, body):
    decode_and_convert(signal, body, PROTOBUF)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
otlp_keys = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "attributes", "key", "value", "stringValue",
     "intValue", "kvlistValue", "arrayValue", "values", "startTimeUnixNano", "resourceLogs", "scopeLogs", "logRecords",
     "body", "resourceMetrics", "scopeMetrics", "metrics", "gauge", "dataPoints", "asInt", "kind", "status"]
)  # fmt: skip
otlp_json = st.recursive(
    json_values,
    lambda children: st.dictionaries(otlp_keys, children, max_size=4) | st.lists(children, max_size=3),
    max_leaves=30,
)


@FUZZ
@given(signal=st.sampled_from(list(SIGNALS.values())), document=otlp_json)
def test_random_otlp_shaped_json(signal, document):
    decode_and_convert(signal, json.dumps(document).encode(), JSON)


@FUZZ
@given(body=st.binary(max_size=256))
def test_random_text_as_json(body):
    decode_and_convert(TRACES, body, JSON)


@FUZZ
@given(body=st.binary(max_size=256), encoding=st.sampled_from(["gzip", "deflate"]))
def test_random_compressed_bodies(body, encoding):
    try:
        decompress(body, encoding, 1024)
    except DecodeError as exc:
        assert exc.status in (400, 413)


any_values = st.recursive(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=10))
    | st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1))
    | st.builds(lambda v: AnyValue(double_value=v), st.floats())
    | st.builds(lambda v: AnyValue(bool_value=v), st.booleans())
    | st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=8))
    | st.just(AnyValue()),
    lambda children: (
        st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(children, max_size=3))
        | st.builds(
            lambda kvs: AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])
            ),
            st.lists(st.tuples(st.text(max_size=5), children), max_size=3),
        )
    ),
    max_leaves=12,
)


@FUZZ
@given(value=any_values)
def test_every_value_stringifies_and_composites_are_json(value):
    text = as_string(value)
    assert isinstance(text, str)
    if value.WhichOneof("value") in ("array_value", "kvlist_value") and text:
        json.loads(text)  # Go's encoding/json output is valid JSON


@FUZZ
@given(
    attributes=st.lists(st.tuples(st.sampled_from(["a", "b", "gen_ai.x", "é", ""]), any_values), max_size=8)
)
def test_encoded_attribute_lists_convert_like_messages(attributes):
    # serve converts span attributes from their encoded KeyValues (memoized); the rule is the messages' one,
    # duplicates included (the last wins). Converted twice, so the second pass reads the memos.
    key_values = [KeyValue(key=key, value=value) for key, value in attributes]
    expected = attributes_to_map(key_values)
    encoded = [key_value.SerializeToString() for key_value in key_values]
    for _ in range(2):
        converted = encoded_attributes_to_map(encoded)
        assert converted == expected and list(converted) == list(expected)
        # serve's Native writer gets the same entries, each already encoded as Native strings
        assert encoded_attributes_to_native(encoded) == tuple(
            (key, native_string(key), native_string(text)) for key, text in expected.items()
        )


@FUZZ
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_round_trips(number):
    text = go_float(number)
    assert float(text) == number and "E" not in text
    if number.is_integer() and abs(number) < 2**53 and text != "-0":
        assert text == str(int(number))  # whole numbers print without ".0", like Go


@FUZZ
@given(
    start=st.integers(0, 2**64 - 1),
    end=st.integers(0, 2**64 - 1),
    trace_id=st.binary(max_size=20),
    span_id=st.binary(max_size=10),
)
def test_validation_keeps_only_storable_spans(start, end, trace_id, span_id):
    request = TRACES.request_type(
        resource_spans=[{"scope_spans": [{"spans": [trace_pb2.Span(
            trace_id=trace_id, span_id=span_id, start_time_unix_nano=start, end_time_unix_nano=end)]}]}]
    )  # fmt: skip
    result = validate(TRACES, request)
    storable = len(trace_id) == 16 and len(span_id) == 8 and 0 < start <= end <= 4_294_967_295 * 10**9
    assert (result.accepted, result.rejected) == ((1, 0) if storable else (0, 1))
    batch = rows.Batch()
    rows.add_request(batch, "traces", request.SerializeToString())
    assert batch.rows(rows.TRACES_TABLE) == result.accepted


def test_nan_and_infinite_metric_values_convert():
    request = METRICS.request_type(
        resource_metrics=[{"scope_metrics": [{"metrics": [{"name": "m", "gauge": {"data_points": [
            {"as_double": math.nan}, {"as_double": math.inf}]}}]}]}]
    )  # fmt: skip
    batch = rows.Batch()
    assert rows.add_request(batch, "metrics", request.SerializeToString()) == 2


def test_logs_with_bad_ids_are_rejected_individually():
    request = LOGS.request_type(
        resource_logs=[
            {"scope_logs": [{"log_records": [{"trace_id": b"\x01" * 3}, {"body": {"string_value": "ok"}}]}]}
        ]
    )
    result = validate(LOGS, request)
    assert (result.accepted, result.rejected) == (1, 1)
    assert "trace_id must be 16 bytes" in result.message(LOGS)


def test_gzip_round_trip_and_limit():
    assert decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    with pytest.raises(DecodeError) as info:
        decompress(gzip.compress(b"a" * 100), "gzip", 10)
    assert info.value.status == 413


# ---- spool ----------------------------------------------------------------------------------------------------
def test_spool_replays_after_the_checkpoint_and_ignores_a_torn_tail(tmp_path):
    spool = Spool(tmp_path)
    spool.recover()
    first = spool.append("traces", b"one")
    spool.append("logs", b"two")
    spool.append("metrics", b"three")
    spool.release([first.seq], len(b"one"))
    segment = first.segment
    spool.close()
    with open(segment, "ab") as handle:  # a crash mid-append: half a header
        handle.write(b"\x05\x00\x00")
    reopened = Spool(tmp_path)
    replay = reopened.recover()
    assert [(r.signal, reopened.read(r)) for r in replay] == [("logs", b"two"), ("metrics", b"three")]
    assert reopened.append("traces", b"four").seq == 4
    reopened.close()


def test_spool_skips_a_corrupted_record_and_replays_the_next(tmp_path):
    """A record whose CRC fails is not replayed; the intact records after it still are."""
    spool = Spool(tmp_path)
    spool.recover()
    record = spool.append("traces", b"payload-a")
    after = spool.append("traces", b"payload-b")
    spool.close()
    data = bytearray(record.segment.read_bytes())
    data[record.offset] ^= 0xFF  # flip a payload byte: the CRC no longer matches
    record.segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert [r.seq for r in reopened.recover()] == [after.seq]
    reopened.close()


def _record_bytes(record: Record) -> bytes:
    """The whole record (header and payload) as it sits in its segment."""
    return record.segment.read_bytes()[record.offset - 17 : record.offset + record.length]


def test_spool_replays_past_a_torn_record_and_a_gap_of_seqs(tmp_path, caplog):
    """Before failed appends were cut off, each one used up a seq: in such a spool the record after a torn one
    can be several seqs on. Replay resumes there, and says so at ERROR level."""
    spool = Spool(tmp_path)
    spool.recover()
    records = [spool.append("traces", f"payload-{seq}".encode()) for seq in range(1, 6)]
    spool.close()
    one, two, _, four, five = (_record_bytes(r) for r in records)
    records[0].segment.write_bytes(one + two[:20] + four + five)
    reopened = Spool(tmp_path)
    assert [reopened.read(r) for r in reopened.recover()] == [b"payload-1", b"payload-4", b"payload-5"]
    assert reopened.append("traces", b"six").seq == 6
    reopened.close()
    assert [r.levelname for r in caplog.records if "unreadable" in r.message] == ["ERROR"]


def test_spool_replay_never_takes_a_record_inside_a_payload_for_an_earlier_seq(tmp_path):
    """A payload may hold bytes that look like a whole record: found while skipping a torn record, one whose seq
    does not follow the last one replayed is part of that payload, not a record."""
    spool = Spool(tmp_path)
    spool.recover()
    first = spool.append("traces", b"payload-1")
    inner = spool.append("traces", b"x" + _record_bytes(first))
    last = spool.append("traces", b"payload-3")
    spool.close()
    torn = bytearray(first.segment.read_bytes())
    torn[inner.offset - 17] ^= 0xFF  # its length: the header no longer matches its CRC
    first.segment.write_bytes(bytes(torn))
    reopened = Spool(tmp_path)
    assert [(r.seq, reopened.read(r)) for r in reopened.recover()] == [
        (1, b"payload-1"),
        (last.seq, b"payload-3"),
    ]
    reopened.close()


def test_spool_rotates_and_deletes_written_segments(tmp_path):
    spool = Spool(tmp_path, segment_bytes=50)  # one 57-byte record per segment
    spool.recover()
    records = [spool.append("traces", bytes(40)) for _ in range(5)]
    assert len(list(tmp_path.glob("segment-*.wal"))) == 5
    spool.release([r.seq for r in records[:3]], 120)
    assert len(list(tmp_path.glob("segment-*.wal"))) == 2
    assert spool.pending_bytes == 80
    spool.close()


def test_spool_checkpoint_never_passes_an_unreleased_record(tmp_path):
    # Concurrent requests reach the writer in the order their fsyncs return, so records are released out of seq
    # order; the checkpoint (and segment deletion) must stop at the first one still waiting.
    spool = Spool(tmp_path, segment_bytes=50)  # one record per segment
    spool.recover()
    records = [spool.append("traces", bytes([i]) * 40) for i in range(4)]
    spool.release([records[1].seq, records[2].seq], 80)
    assert spool.written == records[0].seq - 1
    assert all(r.segment.exists() for r in records)
    spool.release([records[0].seq], 40)
    assert spool.written == records[2].seq
    assert [r.segment.exists() for r in records] == [False, False, False, True]
    spool.close()
    reopened = Spool(tmp_path)
    assert [reopened.read(r) for r in reopened.recover()] == [bytes([3]) * 40]
    reopened.close()


def _fail_once(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> None:
    """The next call of ``os.<name>`` fails with ``code``, as the disk would; later calls go through."""
    original = getattr(os, name)

    def failing(*args: object) -> object:
        monkeypatch.setattr(os, name, original)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, name, failing)


def test_spool_keeps_an_acknowledged_record_after_a_failed_append_it_could_not_cut(tmp_path, monkeypatch):
    """An append that fails first in a new segment, and cannot be cut off either, uses up no seq: the next
    append starts a segment with the same name. Releasing an earlier record must not delete that one."""
    spool = Spool(tmp_path, segment_bytes=1)  # one record per segment
    spool.recover()
    first = spool.append("traces", b"one")
    _fail_once(monkeypatch, "write", errno.ENOSPC)
    _fail_once(monkeypatch, "ftruncate", errno.EIO)
    with pytest.raises(SpoolFull):
        spool.append("traces", b"refused")
    kept = spool.append("traces", b"acknowledged")
    spool.release([first.seq], len(b"one"))
    assert kept.segment.exists()
    spool.close()
    reopened = Spool(tmp_path)
    assert [reopened.read(r) for r in reopened.recover()] == [b"acknowledged"]
    reopened.close()


def test_spool_checkpoint_is_on_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    """The checkpoint file is fsynced before it is renamed into place: after a power loss the rename can be on
    disk without the data, an empty checkpoint, and replay would start from the first record again."""
    spool = Spool(tmp_path)
    synced: set[int] = set()
    renamed_synced: list[bool] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        fsync(fd)

    def recording_replace(source: os.PathLike[str], target: os.PathLike[str]) -> None:
        renamed_synced.append(os.stat(source).st_ino in synced)
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    spool.recover()  # creates the checkpoint file, the one rename
    assert renamed_synced == [True]
    spool.close()


def test_spool_is_held_by_one_process_at_a_time(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another"):
        Spool(tmp_path)
    spool.close()


def test_concurrent_appends_share_fsyncs_and_lose_nothing(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4096)
    spool.recover()

    errors = []

    def writer(index: int) -> None:
        try:
            for n in range(50):
                spool.append("traces", f"{index}-{n}".encode())
        except Exception as exc:  # surfaced below: a thread's exception would otherwise only be a warning
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    spool.close()
    reopened = Spool(tmp_path)
    replay = reopened.recover()
    assert sorted(reopened.read(r) for r in replay) == sorted(
        f"{i}-{n}".encode() for i in range(8) for n in range(50)
    )
    assert [r.seq for r in replay] == list(range(1, 401))
    reopened.close()
