"""The write-ahead spool: every accepted request is on disk, fsynced, before its 2xx/OK is sent.

Layout of the spool directory::

    LOCK                      held (flock) by the one serve process that owns the spool
    segment-<first seq>.wal   append-only records, rotated at ``segment_bytes``
    checkpoint.slots          two slots, each <magic><generation u64><length u32><crc32 u32> + JSON:
                              {"spool": id, "written": N, "released": [[lo, hi], ...], "open": [[[lo, hi], ...], ...]}

Records are released one by one (:meth:`Spool.release`), in whatever order they were written: concurrent requests
reach the writer's queue in the order their fsyncs return, not in seq order. ``written`` only moves up to the
first record not yet released, so the checkpoint never passes a record that is still waiting; the records released
past it are listed in ``released`` (as ranges of seqs), so a restart does not insert them again.

A record is ``<length u32><crc32 u32><seq u64><signal u8>`` followed by the payload (the validated request,
serialized protobuf). Appends from concurrent requests share one fsync (group commit). On start every record
after ``written`` and not released is replayed.

Exactly-once inserts: before a batch is inserted, :meth:`Spool.begin` lists its seqs under ``open`` and gives it
an insert de-duplication token, derived from the spool's random ``id`` (a new spool never reuses an old one's
tokens, though seqs start again) and those seqs. A batch stays open until all its records are released. After a
crash, each open batch is replayed as that very batch with that very token, so every ClickHouse table, raw or fed
by a materialized view, keeps what it had of it and takes what it missed (migration 0017).

An append that fails (a full disk) is cut off again, so later records never land behind a torn one; a torn record
left by a crash is at a segment's tail and ignored, and one found anywhere else is skipped, with an error logged,
and replay goes on after it. Segments whose records are all written are deleted.

A failed fsync is a failed append too: after one, the kernel may have dropped the dirty pages and a later fsync
can succeed without them, so nothing written since the last good fsync counts as durable. Every request appended
since then is refused (:class:`SpoolUnavailable`, a 503 the client retries), including those of other callers who
shared that fsync; they are cut off the segment, released (so ``written`` does not wait for them forever), and
the next append starts a new segment.

The checkpoint needs no new disk blocks. The writer saves it before every insert (the batch goes under ``open``),
so if saving it needed space, a full disk would stop the very draining that frees space. ``checkpoint.slots`` is
created once, at full size, with real bytes written (not a sparse hole: an overwrite of allocated blocks needs
none), as a temporary file fsynced and renamed into place. From then on each checkpoint overwrites one of its
two slots in place, alternately, and is fsynced; the generation count picks the newer slot on start and the CRC
rejects a torn one. A write only ever touches the slot that does not hold the newest checkpoint (a failed write
is tried again in the same slot), so a crash or a failure mid-write leaves the previous checkpoint intact in the
other. Slots are page-aligned, so writing one never rewrites a byte of the other. A checkpoint too big for its
slot (ranges of released seqs, open batches: a few KiB in practice, slots are 64 KiB) makes a file twice its size
the same way, which does need space. On copy-on-write file systems (btrfs, ZFS) every overwrite needs new blocks;
those keep a reserve of their own. Where even this fails, the writer waits and retries, counted against the spool
(/health: spool not writable), never against ClickHouse. A spool from before (``checkpoint.json``) is read once
and its file removed once the slots are in place.

Draining frees space: while the disk is full, a segment is deleted as soon as the checkpoint says all its records
are written, the one being appended to as well (the next append starts a new one). Names are made durable where
a record's durability depends on them: the directory is fsynced after a new segment is created and after the
checkpoint file is renamed into place. Deleting a segment needs no fsync: one that comes back after a power loss
holds only records the checkpoint says are written, which replay skips, and it is deleted again.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import heapq
import json
import logging
import os
import re
import secrets
import shutil
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtap.clickhouse.private_files import (
    create_private_file,
    fsync_directory,
    make_private_directory,
    open_no_follow,
)

_HEADER = struct.Struct("<IIQB")
_SIGNAL_CODES = {"traces": 1, "metrics": 2, "logs": 3}
_SIGNAL_NAMES = {code: name for name, code in _SIGNAL_CODES.items()}
_MAX_RECORD = 1 << 31
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_CHECKPOINT = "checkpoint.slots"
_LEGACY_CHECKPOINT = "checkpoint.json"  # before the slots: rewritten and renamed, needing free space
_SLOT = struct.Struct("<4sQII")  # magic, generation, payload length, crc32 of generation, length and payload
_SLOT_MAGIC = b"LTcp"
_SLOT_BYTES = 64 << 10
_PAGE = 4096

log = logging.getLogger("llmtap.serve")

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one serve per spool is then the user's responsibility
    fcntl = None  # type: ignore[assignment]


class SpoolError(RuntimeError):
    """The spool directory cannot be used (held by another process, unwritable, full)."""


class SpoolUnavailable(SpoolError):
    """The spool cannot make a request durable for now (an fsync failed): what it refused can be sent again."""


class SpoolFull(SpoolUnavailable):
    """The spool's disk is full (or its quota used up): what it refused can be sent again once space returns."""


@dataclass(frozen=True)
class Record:
    """Where one accepted request lives on disk."""

    seq: int
    signal: str
    segment: Path
    offset: int  # of the payload
    length: int


@dataclass(eq=False)  # by identity: two segments can share a path (see _cut_partial_append)
class _Segment:
    path: Path
    first_seq: int
    last_seq: int
    size: int
    fd: int | None = None  # open while it is the segment appended to
    # (size, last_seq) as one value: the fsync path reads it without the append lock, and needs a matching pair.
    tail: tuple[int, int] = (0, 0)
    synced: tuple[int, int] = (0, 0)  # the tail known to be on disk
    failed: OSError | None = None  # an fsync failed: whatever follows `synced` is not durable and is cut off
    cut: bool = False


class Spool:
    """Append-only, fsynced log of accepted requests with a written-up-to checkpoint."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        try:
            make_private_directory(self.directory)
            # Held for the process life, so no `with`.
            self._lock_file = open(self.directory / "LOCK", "a+", opener=open_no_follow)  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(f"cannot use the spool directory {self.directory}: {exc}") from exc
        self._checkpoint_fd: int | None = None
        self._slot_bytes = 0
        self._generation = 0  # of the newest checkpoint on disk
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_failed = False  # the last checkpoint could not be saved
        # The checkpoint file was renamed into place and the directory not fsynced since: until it is, the
        # checkpoint may not survive a power loss, so it counts as not saved (no segment is deleted on its word).
        self._directory_sync_owed = False
        self._legacy_checkpoint = False
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock_file.close()
                raise SpoolError(
                    f"the spool directory {self.directory} is in use by another `llmtap serve`; "
                    "stop it or give this one its own --spool-dir"
                ) from None
        state = self._read_checkpoint()
        self._checkpointed: int = state.get("written", 0)  # `written` as the checkpoint on disk says
        self.id: str = state.get("spool") or secrets.token_hex(8)
        self.written: int = state.get("written", 0)
        # Seqs released past `written`: in ClickHouse (or quarantined) already, so not to be replayed. Kept as the
        # ranges stored, never expanded seq by seq: behind a stuck record they can be millions.
        self._released = _SeqRanges.of_ranges(state.get("released", []))
        self._released.discard_below(self.written + 1)
        # Batches that may be in ClickHouse, in part or whole, and are not released yet: seqs -> None (in order).
        self._open: dict[tuple[int, ...], None] = {
            tuple(_seqs(ranges)): None for ranges in state.get("open", [])
        }
        if state.get("inflight", 0) > self.written:  # a checkpoint of llmtap before de-duplication tokens
            log.warning("the spool's checkpoint is from an earlier llmtap: requests %d to %d, which it was "
                        "inserting when it stopped, may be stored twice", self.written + 1, state["inflight"])  # fmt: skip
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None  # the segment appended to (open)
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._next_seq = self.written + 1
        self._pending_bytes = 0
        self._unreleased: list[int] = []  # heap of the seqs appended (or replayed) and not released yet
        self._full_need = 0  # bytes the last append could not write for a full disk (0: writable)
        # Set by the writer while it waits on the spool for a reason of its own (a payload it cannot read back, a
        # quarantine it cannot write): /health says the spool is not writable, not that the store is down.
        self.writer_stalled = False

    # ---- replay -------------------------------------------------------------------------------------------
    def recover(self) -> list[Record]:
        """Scan existing segments; return records after the checkpoint, in order. Call once, before append."""
        records: list[Record] = []
        for path in sorted(self.directory.glob("segment-*.wal")):
            segment_records, size = self._scan(path)
            if not segment_records:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(_Segment(path, segment_records[0].seq, segment_records[-1].seq, size))
            released = self._released
            records.extend(r for r in segment_records if r.seq > self.written and r.seq not in released)
            self._next_seq = max(self._next_seq, segment_records[-1].seq + 1)
        self._next_seq = max(self._next_seq, self._released.last() + 1)
        self._pending_bytes = sum(r.length for r in records)
        # Only the replayed seqs wait; `written` moves past the released ones up to the first of them.
        self._unreleased = sorted(r.seq for r in records)
        replayed = {r.seq for r in records}
        self._open = {batch: None for batch in self._open if replayed.intersection(batch)}
        with self._append_lock:
            self._pop_released()
        self._advance()
        return records

    def open_batches(self) -> list[tuple[int, ...]]:
        """The batches (their seqs, ascending) that a previous process may have inserted in part, in the order it
        began them. Their records still in the spool must be inserted again as those batches, with the tokens
        :meth:`begin` gives them."""
        return list(self._open)

    def _scan(self, path: Path) -> tuple[list[Record], int]:
        records: list[Record] = []
        offset = 0
        try:
            with open(path, "rb", opener=open_no_follow) as handle:
                data = handle.read()
        except OSError as exc:
            raise SpoolError(f"cannot read the spool segment: {exc}") from exc
        last_seq = _first_seq(path) - 1
        while offset + _HEADER.size <= len(data):
            record = _record_at(data, offset, path)
            if record is None or record.seq <= last_seq:  # seqs only go up: a lower one is not a record
                resumed = _next_intact(data, offset, path, last_seq)
                _report_torn(path, offset, (resumed or len(data)) - offset, resumed is not None)
                if resumed is None:
                    break
                offset = resumed
                continue
            records.append(record)
            last_seq = record.seq
            offset = record.offset + record.length
        return records, offset

    def read(self, record: Record) -> bytes:
        """The payload of a record (for records whose bytes were not kept in memory)."""
        with open(record.segment, "rb", opener=open_no_follow) as handle:
            handle.seek(record.offset)
            return handle.read(record.length)

    # ---- append -------------------------------------------------------------------------------------------
    def append(self, signal: str, payload: bytes) -> Record:
        """Write one record and return once it is durable (fsynced), sharing fsyncs with concurrent callers.

        Raises SpoolFull when the disk is full, the segment then left as it was before the call, and
        SpoolUnavailable when the fsync fails, the record then cut off."""
        if len(payload) >= _MAX_RECORD:
            raise SpoolError("record too large for the spool")
        with self._append_lock:
            for retry in (True, False):
                try:
                    record, segment = self._append_locked(signal, payload)
                    break
                except SpoolFull as exc:
                    # The segment appended to may hold only written records: deleting it frees space.
                    if not (retry and self._delete_written_segments(current_too=True)):
                        self._note_full(_HEADER.size + len(payload), exc)
                        raise
            self._note_writable()
        self._sync(segment, record.offset + record.length)
        return record

    def _append_locked(self, signal: str, payload: bytes) -> tuple[Record, _Segment]:
        current = self._current
        if current is not None and current.failed is not None:
            self._cut_unsynced(current)  # another caller's fsync failed: nothing goes after those records
        if self._current is None or self._current.size >= self.segment_bytes:
            self._rotate()
        segment = self._current
        assert segment is not None and segment.fd is not None
        seq = self._next_seq
        header_tail = struct.pack("<QB", seq, _SIGNAL_CODES[signal])
        crc = zlib.crc32(payload, zlib.crc32(header_tail))
        data = struct.pack("<II", len(payload), crc) + header_tail + payload
        try:
            _write_all(segment.fd, data)
        except OSError as exc:
            self._cut_partial_append(segment)
            raise _spool_error("cannot append to the spool", exc) from exc
        self._next_seq += 1
        heapq.heappush(self._unreleased, seq)
        record = Record(seq, signal, segment.path, segment.size + _HEADER.size, len(payload))
        segment.size += len(data)
        segment.last_seq = seq
        segment.tail = (segment.size, seq)
        self._pending_bytes += len(payload)
        return record, segment

    def _cut_partial_append(self, segment: _Segment) -> None:
        """Truncate a half-written record away: appends after it would land behind bytes replay cannot read
        past. If the cut fails too, the segment ends there (a torn tail, skipped) and the next append starts
        a new one."""
        try:
            os.ftruncate(segment.fd, segment.size)  # type: ignore[arg-type]
        except OSError as exc:
            log.error(
                "cannot cut a half-written record off %s (%s); starting a new segment", segment.path, exc
            )
            with contextlib.suppress(SpoolUnavailable):  # its fsync failed: its unsynced records are cut
                self._close_current()
            if segment.last_seq < segment.first_seq:
                # It holds no record and used up no seq: the next segment gets its name, and releasing the
                # records before it would count this entry written and delete that next segment's file.
                self._segments.remove(segment)

    def _note_full(self, need: int, exc: SpoolFull) -> None:
        if not self._full_need:
            log.error("%s; requests get 503 + Retry-After until space returns", exc)
        self._full_need = need

    def _note_writable(self) -> None:
        if self._full_need:
            log.warning("the spool %s is writable again", self.directory)
        self._full_need = 0

    def writable(self) -> bool:
        """False from an append refused for a full disk until a record that size fits again, while the
        checkpoint cannot be saved, and while the writer waits on the spool (``writer_stalled``). Space is checked
        here too, so /health recovers without traffic (a balancer that stops sending on its 503 would never bring
        any)."""
        need = self._full_need
        if need and shutil.disk_usage(self.directory).free >= need:
            with self._append_lock:
                self._note_writable()
        return not self._full_need and not self._checkpoint_failed and not self.writer_stalled

    def _sync(self, segment: _Segment, needed: int) -> None:
        """Return once the first ``needed`` bytes of ``segment`` are on disk; raise SpoolUnavailable (and cut
        them off) when an fsync covering them failed."""
        with self._sync_lock:
            if segment.synced[0] >= needed:
                return  # another caller's fsync (or the rotation's) already covered this record
            if segment.failed is None and segment.fd is not None:
                target = segment.tail  # every byte before it has been written (appends only grow it)
                try:
                    os.fsync(segment.fd)
                except OSError as exc:
                    segment.failed = exc
                else:
                    segment.synced = target
                    return
        with self._append_lock:
            self._cut_unsynced(segment)
        raise SpoolUnavailable(f"cannot make the request durable in the spool: {segment.failed}")

    def _cut_unsynced(self, segment: _Segment) -> None:
        """After a failed fsync: truncate the segment to what the last good fsync covered, close it, and release
        the records after that (refused to their callers, never to be replayed). Called with the append lock
        held; the first caller does it."""
        with self._sync_lock:
            if segment.cut:
                return
            segment.cut = True
            kept_bytes, kept_seq = segment.synced
            lost = segment.last_seq - kept_seq
            log.error("cannot fsync the spool segment %s (%s): the %d request(s) appended since its last fsync "
                      "are refused (503) and cut off; the next one starts a new segment",
                      segment.path, segment.failed, lost)  # fmt: skip
            if segment.fd is not None:
                try:
                    os.ftruncate(segment.fd, kept_bytes)
                    os.fsync(segment.fd)
                except OSError as exc:  # left on disk but released: not replayed once a checkpoint says so
                    log.error("cannot cut them off %s either: %s", segment.path, exc)
                os.close(segment.fd)
                segment.fd = None
            if segment is self._current:
                self._current = None
            self._pending_bytes -= segment.size - kept_bytes - lost * _HEADER.size
            segment.size, segment.last_seq, segment.tail = kept_bytes, kept_seq, (kept_bytes, kept_seq)
        self._released.update(range(kept_seq + 1, kept_seq + lost + 1))
        self._pop_released()

    def _rotate(self) -> None:
        # Called with the append lock held.
        self._close_current()
        path = self.directory / f"segment-{self._next_seq:020d}.wal"
        try:
            fd = create_private_file(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise _spool_error(f"cannot start the spool segment {path}", exc) from exc
        try:
            fsync_directory(self.directory)  # its name must survive a power loss as its records do
        except OSError as exc:
            os.close(fd)
            raise SpoolUnavailable(f"cannot make the new spool segment {path} durable: {exc}") from exc
        empty = (0, self._next_seq - 1)
        self._current = _Segment(path, self._next_seq, self._next_seq - 1, 0, fd, empty, empty)
        self._segments.append(self._current)

    def _close_current(self) -> None:
        """Fsync and close the segment appended to (called with the append lock held). Callers still waiting to
        fsync its records find them covered, or, when this fsync fails, find them cut off (SpoolUnavailable)."""
        segment = self._current
        if segment is None:
            return
        with self._sync_lock:
            target = segment.tail
            try:
                os.fsync(segment.fd)  # type: ignore[arg-type]
            except OSError as exc:
                segment.failed = exc
            else:
                segment.synced = target
                os.close(segment.fd)  # type: ignore[arg-type]
                segment.fd = None
                self._current = None
                return
        self._cut_unsynced(segment)
        raise SpoolUnavailable(f"cannot fsync the spool segment {segment.path}: {segment.failed}")

    # ---- checkpoint ---------------------------------------------------------------------------------------
    def begin(self, seqs: Iterable[int]) -> str:
        """The records ``seqs`` are about to be inserted as one batch: note it on disk (before the insert, so a
        crash in it finds the batch open) and return its insert de-duplication token. Idempotent: a retry of
        the batch gets the same token without another write."""
        batch = tuple(sorted(seqs))
        if batch not in self._open:
            self._open[batch] = None
            try:
                self._write_checkpoint()
            except OSError as exc:  # not open on disk: a retry must try to save it again
                del self._open[batch]
                raise _spool_error("cannot save the spool checkpoint before an insert", exc) from exc
        digest = hashlib.sha256(json.dumps(_ranges(batch)).encode()).hexdigest()[:24]
        return f"llmtap-{self.id}-{batch[0]}-{batch[-1]}-{digest}"

    def release(self, seqs: Iterable[int], payload_bytes: int = 0) -> None:
        """These records are in ClickHouse (or quarantined): advance the checkpoint past every record released
        so far without a gap, close the batches whose records are all released, and delete segments that hold
        only written records."""
        with self._append_lock:
            self._released.update(seqs)
            self._pending_bytes -= payload_bytes
            self._pop_released()
        self._advance()

    @property
    def checkpoint_failed(self) -> bool:
        """The last checkpoint could not be saved: segments stay and /health says the spool is not writable."""
        return self._checkpoint_failed

    def retry_checkpoint(self) -> bool:
        """Save the checkpoint again after a failed save, and delete the segments it then says are written; the
        writer calls this while idle, since otherwise only new traffic would try again. Whether it is saved."""
        if self._checkpoint_failed:
            self._advance()
        return not self._checkpoint_failed

    def settle(self, payload_bytes: int) -> None:
        """Records written (or quarantined) that stay in the spool, unreleased, no longer count as pending: a split
        batch is kept whole for the next start when one of its requests could not be quarantined."""
        with self._append_lock:
            self._pending_bytes -= payload_bytes

    def _pop_released(self) -> None:
        # Called with the append lock held.
        while self._unreleased and self._unreleased[0] in self._released:
            heapq.heappop(self._unreleased)
        self._released.discard_below(self._unreleased[0] if self._unreleased else self._next_seq)

    def _advance(self) -> None:
        with self._append_lock:
            # Every seq below the first unreleased one is written; with none, every seq appended so far.
            written = self._unreleased[0] - 1 if self._unreleased else self._next_seq - 1
            released = self._released.copy()  # appends may change it meanwhile
        self.written = max(self.written, written)
        self._open = {
            batch: None
            for batch in self._open
            if not all(seq <= self.written or seq in released for seq in batch)
        }
        try:
            self._write_checkpoint()
        except OSError as exc:  # segments stay until a checkpoint on disk says they are written
            log.warning("cannot write the spool checkpoint (%s); trying again at the next write", exc)
            return
        with self._append_lock:
            self._delete_written_segments(current_too=bool(self._full_need))

    def _delete_written_segments(self, *, current_too: bool) -> bool:
        """Delete the segments whose records the checkpoint on disk says are all written; the one appended to as
        well with ``current_too`` (the disk is full: the next append starts a new segment). Called with the
        append lock held. Whether any went."""
        done = [
            s for s in self._segments
            if s.last_seq <= self._checkpointed and (current_too or s is not self._current)
        ]  # fmt: skip
        if self._current in done:
            with self._sync_lock:  # all its records are written: nobody waits for its fsync
                os.close(self._current.fd)  # type: ignore[arg-type,union-attr]
                self._current.fd = None  # type: ignore[union-attr]
                self._current = None
        self._segments = [s for s in self._segments if s not in done]
        for segment in done:
            segment.path.unlink(missing_ok=True)
        return bool(done)

    @property
    def pending_bytes(self) -> int:
        """Payload bytes accepted but not yet written to ClickHouse (what the spool size limit counts)."""
        return self._pending_bytes

    @property
    def disk_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def _read_checkpoint(self) -> dict[str, Any]:
        """The newest intact checkpoint; {} for none (a new spool id too: the tokens of another id can never match
        this spool's batches)."""
        try:
            self._checkpoint_fd = open_no_follow(str(self.directory / _CHECKPOINT), os.O_RDWR)
        except FileNotFoundError:
            self._legacy_checkpoint = (self.directory / _LEGACY_CHECKPOINT).exists()
            try:
                return _checked_state(json.loads((self.directory / _LEGACY_CHECKPOINT).read_text()))
            except (OSError, ValueError, TypeError, AttributeError):
                return {}
        except OSError as exc:
            self._lock_file.close()
            raise SpoolError(f"cannot open the spool checkpoint: {exc}") from exc
        # A kill between the slots' rename and the removal of the checkpoint before them left that one: it goes
        # at the next checkpoint, once the directory is fsynced (the rename then survives a power loss as well).
        stale = any(
            (self.directory / name).exists() for name in (_LEGACY_CHECKPOINT, _LEGACY_CHECKPOINT + ".tmp")
        )
        self._legacy_checkpoint = self._directory_sync_owed = stale
        data = _read_all(self._checkpoint_fd)
        self._slot_bytes = len(data) // 2
        slots = [_slot_at(data, index * self._slot_bytes, self._slot_bytes) for index in (0, 1)]
        newest = max((slot for slot in slots if slot is not None), key=lambda slot: slot[0], default=None)
        if newest is None:
            log.error("the spool checkpoint %s is unreadable: every request in the spool is replayed, and what "
                      "was written of it may be stored twice", self.directory / _CHECKPOINT)  # fmt: skip
            return {}
        self._generation, state = newest
        return state

    def _write_checkpoint(self) -> None:
        """Save the checkpoint in the slot that does not hold the newest one (see the module docstring)."""
        with self._append_lock:
            released = self._released.ranges()
        written = self.written
        state = {"spool": self.id, "written": written, "released": released,
                 "open": [_ranges(batch) for batch in self._open]}  # fmt: skip
        payload = json.dumps(state, separators=(",", ":")).encode()
        with self._checkpoint_lock:
            generation = self._generation + 1
            crc = zlib.crc32(payload, zlib.crc32(struct.pack("<QI", generation, len(payload))))
            slot = _SLOT.pack(_SLOT_MAGIC, generation, len(payload), crc) + payload
            try:
                if self._checkpoint_fd is None or len(slot) > self._slot_bytes:
                    self._new_checkpoint_file(slot, generation)
                else:
                    os.lseek(self._checkpoint_fd, generation % 2 * self._slot_bytes, os.SEEK_SET)
                    _write_all(self._checkpoint_fd, slot)
                    os.fsync(self._checkpoint_fd)
                if self._directory_sync_owed:  # till then the file's name may not survive a power loss
                    fsync_directory(self.directory)
                    self._directory_sync_owed = False
            except OSError:
                self._checkpoint_failed = True
                raise
            self._generation = generation
            self._checkpointed = max(self._checkpointed, written)
            self._checkpoint_failed = False
            if self._legacy_checkpoint:  # read once, replaced by the slots
                for name in (_LEGACY_CHECKPOINT, _LEGACY_CHECKPOINT + ".tmp"):
                    (self.directory / name).unlink(missing_ok=True)
                self._legacy_checkpoint = False

    def _new_checkpoint_file(self, slot: bytes, generation: int) -> None:
        """The slots file with ``slot`` (of ``generation``) in both slots (whichever the next write overwrites, the
        other holds it), written whole, fsynced and renamed into place; the only checkpoint write that needs free
        space. The caller fsyncs the directory next (owed until that succeeds)."""
        slot_bytes = max(_SLOT_BYTES, -(-2 * len(slot) // _PAGE) * _PAGE)
        padded = slot + bytes(slot_bytes - len(slot))
        path = self.directory / _CHECKPOINT
        temporary = path.with_name(path.name + ".tmp")
        fd = create_private_file(temporary, os.O_RDWR)
        try:
            _write_all(fd, padded * 2)
            os.fsync(fd)
            os.replace(temporary, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        if self._checkpoint_fd is not None:
            os.close(self._checkpoint_fd)
        self._checkpoint_fd, self._slot_bytes = fd, slot_bytes
        # Both slots hold this generation now: a retry must write the next one, never a second, different state
        # under this one (on start a tie picks slot 0, which could be the older).
        self._generation = generation
        self._directory_sync_owed = True

    def close(self) -> None:
        with self._append_lock, contextlib.suppress(SpoolUnavailable):
            self._close_current()
        self._advance()  # with no current segment, fully written segments all go
        if self._checkpoint_fd is not None:
            os.close(self._checkpoint_fd)
            self._checkpoint_fd = None
        self._lock_file.close()


class _SeqRanges:
    """A set of seqs as sorted, disjoint ranges of consecutive ones. The seqs released behind an unreleased one
    are a few runs however many they are: the checkpoint lists them, with the append lock held, in time and space
    that does not grow with them (a set, sorted for each checkpoint, did, for as long as a record stayed)."""

    def __init__(self, seqs: Iterable[int] = ()) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        self.update(seqs)

    @classmethod
    def of_ranges(cls, ranges: Iterable[Sequence[int]]) -> _SeqRanges:
        """From [first, last] ranges as a checkpoint stores them (in any order, overlapping or not), in time and
        space that grow with the ranges, not with the seqs they hold."""
        merged = cls()
        firsts, lasts = merged._firsts, merged._lasts
        for first, last in sorted((int(first), int(last)) for first, last in ranges):
            if lasts and first <= lasts[-1] + 1:
                lasts[-1] = max(lasts[-1], last)
            else:
                firsts.append(first)
                lasts.append(last)
        return merged

    def last(self) -> int:
        """The highest seq held (0 for none)."""
        return self._lasts[-1] if self._lasts else 0

    def __contains__(self, seq: int) -> bool:
        index = bisect.bisect_right(self._firsts, seq)
        return index > 0 and self._lasts[index - 1] >= seq

    def update(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.add(seq)

    def add(self, seq: int) -> None:
        firsts, lasts = self._firsts, self._lasts
        index = bisect.bisect_right(firsts, seq)  # the ranges before it start at or below seq
        if index and lasts[index - 1] >= seq:
            return
        joins_before = index > 0 and lasts[index - 1] == seq - 1
        joins_after = index < len(firsts) and firsts[index] == seq + 1
        if joins_before and joins_after:
            lasts[index - 1] = lasts[index]
            del firsts[index], lasts[index]
        elif joins_before:
            lasts[index - 1] = seq
        elif joins_after:
            firsts[index] = seq
        else:
            firsts.insert(index, seq)
            lasts.insert(index, seq)

    def discard_below(self, seq: int) -> None:
        """Forget every seq below ``seq``."""
        index = bisect.bisect_left(self._lasts, seq)  # the ranges before it end below seq
        del self._firsts[:index], self._lasts[:index]
        if self._firsts and self._firsts[0] < seq:
            self._firsts[0] = seq

    def copy(self) -> _SeqRanges:
        other = _SeqRanges()
        other._firsts, other._lasts = list(self._firsts), list(self._lasts)
        return other

    def ranges(self) -> list[list[int]]:
        return [[first, last] for first, last in zip(self._firsts, self._lasts, strict=True)]


def _ranges(seqs: Sequence[int]) -> list[list[int]]:
    """Ascending seqs as [first, last] ranges of consecutive ones (a batch's seqs are mostly consecutive)."""
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def _seqs(ranges: Iterable[Sequence[int]]) -> list[int]:
    return [seq for first, last in ranges for seq in range(first, last + 1)]


def _checked_state(state: Any) -> dict[str, Any]:
    return {
        "spool": str(state.get("spool", "")),
        "written": int(state.get("written", 0)),
        "inflight": int(state.get("inflight", 0)),
        "released": _checked_ranges(state.get("released", [])),
        "open": [_checked_ranges(batch) for batch in state.get("open", [])],
    }


def _slot_at(data: bytes, offset: int, size: int) -> tuple[int, dict[str, Any]] | None:
    """(generation, state) of the checkpoint slot at ``offset``, or None where it holds no intact one."""
    if size < _SLOT.size:
        return None
    magic, generation, length, crc = _SLOT.unpack_from(data, offset)
    payload = data[offset + _SLOT.size : offset + _SLOT.size + length]
    if magic != _SLOT_MAGIC or _SLOT.size + length > size:
        return None
    if zlib.crc32(payload, zlib.crc32(struct.pack("<QI", generation, length))) != crc:
        return None
    try:
        return generation, _checked_state(json.loads(payload))
    except (ValueError, TypeError, AttributeError):
        return None


def _checked_ranges(ranges: Any) -> list[tuple[int, int]]:
    pairs = [(int(first), int(last)) for first, last in ranges]
    if any(last < first for first, last in pairs):
        raise ValueError("not a range of seqs")
    return pairs


def _record_at(data: bytes, offset: int, path: Path) -> Record | None:
    """The record whose header starts at ``offset``, or None where the bytes there are not an intact one."""
    if offset < 0 or offset + _HEADER.size > len(data):
        return None
    length, crc, seq, code = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    end = start + length
    if end > len(data) or code not in _SIGNAL_NAMES or zlib.crc32(data[offset + 8 : end]) != crc:
        return None
    return Record(seq, _SIGNAL_NAMES[code], path, start, length)


def _first_seq(path: Path) -> int:
    digits = path.stem.partition("-")[2]  # segment-<first seq>
    return int(digits) if digits.isdigit() else 0


def _next_intact(data: bytes, offset: int, path: Path, last_seq: int) -> int | None:
    """Where the first intact record after a torn one at ``offset`` starts: one with a seq above ``last_seq``, by
    any gap (a spool from before failed appends were cut off used up a seq on each). A seq within 2**32 of the
    last one has its top four bytes or the next ones, followed by a signal code: that finds candidates fast."""
    top = (last_seq + 1) >> 32
    tops = b"|".join(re.escape(struct.pack("<I", high)) for high in (top, top + 1))
    codes = re.escape(bytes(sorted(_SIGNAL_NAMES)))
    candidates = re.compile(b"(?=(?:" + tops + b")[" + codes + b"])")
    for match in candidates.finditer(data, offset + 13):  # the top bytes sit 12 bytes into a header
        start = match.start() - 12
        seq = struct.unpack_from("<Q", data, start + 8)[0]
        if seq > last_seq and _record_at(data, start, path) is not None:
            return start
    return None


def _report_torn(path: Path, offset: int, size: int, resumed: bool) -> None:
    if resumed:
        log.error("spool segment %s: skipped %d unreadable byte(s) at offset %d (a torn record); replay goes on "
                  "with the intact records after them", path, size, offset)  # fmt: skip
    else:
        log.warning("spool segment %s: ignored %d torn byte(s) at its end (an append cut short, never "
                    "acknowledged)", path, size)  # fmt: skip


def _spool_error(message: str, exc: OSError) -> SpoolError:
    """SpoolFull for a full disk or quota (a client may retry), SpoolError for anything else."""
    kind = SpoolFull if exc.errno in _DISK_FULL else SpoolError
    return kind(f"{message}: {exc}")


def _write_all(fd: int | None, data: bytes) -> None:
    assert fd is not None
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
