"""Durable job logs: every line a job printed, in order, in one append-only file per job.

Each record is a msgpack array ``[n, attempt, stream, text, ts]`` where ``n`` numbers the
job's lines from 0 across all its attempts.  In memory the broker keeps, per job, only the
line count, the file size and a sparse index (the byte offset of every INDEX_STEP-th line),
so memory stays flat however much a job prints and reading a page never rescans the file.

What goes in is checked and bounded: batches of one attempt must come in sequence (a jump from the
connection that sent the previous batch is refused; one from a new connection, a worker that
reconnected, is taken with a marker saying how many batches were lost); a job's file stops growing
at ``max_bytes`` with one truncation marker; a failed write (a full disk) never raises: the lines are
dropped, the file is cut back to its last whole record, the job is marked incomplete, the condition
is logged once and reported by :meth:`LogStore.health`, and the next write that works ends it.
Markers are ordinary lines on ``stderr`` whose text starts with ``[titan]``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgpack

from titan_zmq import defaults
from titan_zmq.protocol import pack

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 64  # log files kept open for appending (least recently used closed first)
INDEX_STEP = 1000  # one index entry per this many lines
PAGE_BYTES = 4 * 1024 * 1024  # a page of GET_LOGS stops after about this many bytes

LogLine = list[Any]  # [n, attempt, stream, text, ts]
TRUNCATED = "[titan] log truncated"  # how the truncation marker starts (found again after a restart)
LOG_TRUNCATED, LOG_INCOMPLETE = "log_truncated", "log_incomplete"  # the flags a job's status shows


@dataclass
class _JobLog:
    count: int = 0  # lines so far
    size: int = 0  # bytes in the file
    index: list[int] = field(default_factory=list)  # byte offset of line k * INDEX_STEP
    last_seq: dict[int, int] = field(default_factory=dict)  # attempt -> last batch sequence number
    source: dict[int, bytes] = field(default_factory=dict)  # attempt -> connection of its last batch
    truncated: bool = False  # the job passed max_bytes: later lines are dropped
    lost: int = 0  # lines dropped by failed writes, told by a marker at the next write that works
    torn: bool = False  # a failed write may have left part of a record: cut the file before appending


@dataclass
class Appended:
    """What became of one batch: the lines written (to publish), why it was refused, flags newly set."""

    records: list[LogLine] = field(default_factory=list)
    refused: str | None = None  # a sequence jump from the same connection
    flags: list[str] = field(default_factory=list)  # LOG_TRUNCATED / LOG_INCOMPLETE, the first time only


class LogStore:
    def __init__(self, root: Path, max_bytes: int = defaults.MAX_LOG_BYTES):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._open: OrderedDict[tuple[str, str], IO[bytes]] = OrderedDict()
        self._jobs: dict[tuple[str, str], _JobLog] = {}
        self.error: str | None = None  # the write error in force (a full disk), until a write works again
        self.stats = {"log_write_errors": 0, "log_lines_lost": 0, "log_lines_truncated": 0}

    def health(self) -> dict[str, Any]:
        """For ``titan stats``: whether logs can be written, and what was lost or cut."""
        return {"logs_ok": self.error is None, "logs_error": self.error, **self.stats}

    def path(self, run_id: str, job_id: str) -> Path:
        return self.root / run_id / f"{job_id}.log"

    def count(self, run_id: str, job_id: str) -> int:
        return self._job(run_id, job_id).count

    def append(
        self, run_id: str, job_id: str, attempt: int, seq: int, lines: list[list[Any]], ts: float,
        source: bytes = b"",
    ) -> Appended:
        """Append one worker batch sent by connection ``source`` (see the module doc for the checks).

        A batch seen before (same attempt, seq not above the last) is dropped without a word.
        """
        job = self._job(run_id, job_id)
        last = job.last_seq.get(attempt)
        if last is not None and seq <= last:
            return Appended()
        markers = []
        if last is not None and seq > last + 1:
            if job.source.get(attempt) == source:
                return Appended(refused=f"batch {seq} of attempt {attempt} after batch {last}: a sequence jump")
            markers.append(f"[titan] {seq - last - 1} log batches of attempt {attempt} lost (the worker reconnected)")
        job.last_seq[attempt] = seq
        job.source[attempt] = source
        return self._write(run_id, job_id, job, attempt, markers, lines, ts)

    def _write(self, run_id: str, job_id: str, job: _JobLog, attempt: int, markers: list[str],
               lines: list[list[Any]], ts: float) -> Appended:
        """Pack what fits under the cap and write it in one go; on an OSError nothing counts as written."""
        out = Appended()
        if job.lost:
            markers.insert(0, f"[titan] {job.lost} lines lost: the broker could not write this log")
        todo = [["stderr", m] for m in markers] + lines
        records: list[LogLine] = []
        chunks: list[bytes] = []
        index: list[int] = []
        size = job.size
        for stream, text in todo:
            if job.truncated or size >= self.max_bytes:
                if not job.truncated:
                    job.truncated = True
                    out.flags.append(LOG_TRUNCATED)
                    stream, text = "stderr", f"{TRUNCATED}: more than {self.max_bytes} bytes; later lines dropped"
                else:
                    self.stats["log_lines_truncated"] += 1
                    continue
            n = job.count + len(records)
            record = [n, attempt, stream, text, ts]
            packed = pack(record)
            if n % INDEX_STEP == 0:
                index.append(size)
            size += len(packed)
            records.append(record)
            chunks.append(packed)
        if not records:
            return out
        try:
            self._put(run_id, job_id, job, b"".join(chunks))
        except OSError as exc:
            return self._failed(run_id, job_id, job, len(records) - len(markers), exc, out)
        job.count += len(records)
        job.size = size
        job.index += index
        job.lost = 0
        out.records = records
        if self.error is not None:
            log.warning("job logs can be written again (%s had stopped them)", self.error)
            self.error = None
        return out

    def _put(self, run_id: str, job_id: str, job: _JobLog, data: bytes) -> None:
        if job.torn:
            try:
                os.truncate(self.path(run_id, job_id), job.size)
            except FileNotFoundError:  # the failed write never created it
                pass
            job.torn = False
        f = self._file(run_id, job_id)
        f.write(data)
        f.flush()

    def _failed(self, run_id: str, job_id: str, job: _JobLog, lines: int, exc: OSError, out: Appended) -> Appended:
        """A write failed: drop the file object (its buffer holds part of the batch) and remember to cut
        the file back to its last whole record; the lines are lost and the job's log is incomplete."""
        f = self._open.pop((run_id, job_id), None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        job.torn = True
        if not job.lost and LOG_INCOMPLETE not in out.flags:
            out.flags.append(LOG_INCOMPLETE)
        job.lost += max(lines, 0)
        self.stats["log_write_errors"] += 1
        self.stats["log_lines_lost"] += max(lines, 0)
        if self.error is None:  # once per episode, not once per batch
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot write job logs (%s): lines are dropped and their logs marked incomplete until "
                      "writes work again", self.error)
        return out

    def read(self, run_id: str, job_id: str, start: int = 0, limit: int | None = None,
             max_bytes: int = PAGE_BYTES) -> list[LogLine]:
        """Lines from number ``start``: at most ``limit`` lines and about ``max_bytes`` bytes."""
        job = self._job(run_id, job_id)
        if start >= job.count:
            return []
        slot = min(start // INDEX_STEP, len(job.index) - 1)
        out: list[LogLine] = []
        size = 0
        with open(self.path(run_id, job_id), "rb") as f:
            f.seek(job.index[slot])
            for rec in _records(f):
                if rec[0] < start:
                    continue
                if (limit is not None and len(out) >= limit) or (out and size >= max_bytes):
                    break
                out.append(rec)
                size += len(rec[3]) + 32
        return out

    def remove_run(self, run_id: str, job_ids: Iterable[str]) -> None:
        """Forget a run's logs and delete its directory (the run left under retention)."""
        for job_id in job_ids:
            f = self._open.pop((run_id, job_id), None)
            if f is not None:
                f.close()
            self._jobs.pop((run_id, job_id), None)
        folder = self.root / run_id
        if folder.parent == self.root and run_id not in ("", ".", ".."):  # never anything outside the root
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def _job(self, run_id: str, job_id: str) -> _JobLog:
        """The job's counters; after a restart they are rebuilt by one scan of its file."""
        key = (run_id, job_id)
        job = self._jobs.get(key)
        if job is None:
            job = _JobLog()
            path = self.path(run_id, job_id)
            if path.exists():
                with open(path, "rb") as f:
                    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=64 * 1024 * 1024)
                    try:
                        for rec in unpacker:
                            if job.count % INDEX_STEP == 0:
                                job.index.append(job.size)
                            job.count += 1
                            job.size = unpacker.tell()
                            job.truncated = _is_truncation(rec)
                    except (ValueError, msgpack.exceptions.ExtraData):
                        pass  # a torn last record after a crash: it is overwritten by the next append
                if path.stat().st_size != job.size:
                    with open(path, "r+b") as f:
                        f.truncate(job.size)
            self._jobs[key] = job
        return job

    def _file(self, run_id: str, job_id: str) -> IO[bytes]:
        key = (run_id, job_id)
        f = self._open.get(key)
        if f is None:
            path = self.path(run_id, job_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "ab")
            self._open[key] = f
            if len(self._open) > MAX_OPEN_FILES:
                _, old = self._open.popitem(last=False)
                old.close()
        else:
            self._open.move_to_end(key)
        return f


def _is_truncation(rec: Any) -> bool:
    return isinstance(rec, list) and len(rec) > 3 and isinstance(rec[3], str) and rec[3].startswith(TRUNCATED)


def _records(f: IO[bytes]) -> Iterator[Any]:
    """The msgpack records of a log file, up to a torn tail."""
    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=64 * 1024 * 1024)
    try:
        yield from unpacker
    except (ValueError, msgpack.exceptions.ExtraData):
        return
