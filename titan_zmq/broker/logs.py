"""Durable job logs: every line a job printed, in order, in one append-only file per job.

Each record is a msgpack array ``[n, attempt, stream, text, ts]`` where ``n`` numbers the
job's lines from 0 across all its attempts.  In memory the broker keeps, per job, only the
line count, the file size and a sparse index (the byte offset of every INDEX_STEP-th line),
so memory stays flat however much a job prints and reading a page never rescans the file.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgpack

from titan_zmq.protocol import pack

MAX_OPEN_FILES = 64  # log files kept open for appending (least recently used closed first)
INDEX_STEP = 1000  # one index entry per this many lines
PAGE_BYTES = 4 * 1024 * 1024  # a page of GET_LOGS stops after about this many bytes

LogLine = list[Any]  # [n, attempt, stream, text, ts]


@dataclass
class _JobLog:
    count: int = 0  # lines so far
    size: int = 0  # bytes in the file
    index: list[int] = field(default_factory=list)  # byte offset of line k * INDEX_STEP
    last_seq: dict[int, int] = field(default_factory=dict)  # attempt -> last batch sequence number


class LogStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: OrderedDict[tuple[str, str], IO[bytes]] = OrderedDict()
        self._jobs: dict[tuple[str, str], _JobLog] = {}

    def path(self, run_id: str, job_id: str) -> Path:
        return self.root / run_id / f"{job_id}.log"

    def count(self, run_id: str, job_id: str) -> int:
        return self._job(run_id, job_id).count

    def append(
        self, run_id: str, job_id: str, attempt: int, seq: int, lines: list[list[Any]], ts: float
    ) -> list[LogLine] | None:
        """Append one worker batch; a batch seen before (same attempt and seq) is dropped (None)."""
        job = self._job(run_id, job_id)
        if seq <= job.last_seq.get(attempt, -1):
            return None
        job.last_seq[attempt] = seq
        records = []
        chunks = []
        for stream, text in lines:
            n = job.count
            record = [n, attempt, stream, text, ts]
            packed = pack(record)
            if n % INDEX_STEP == 0:
                job.index.append(job.size)
            job.count += 1
            job.size += len(packed)
            records.append(record)
            chunks.append(packed)
        f = self._file(run_id, job_id)
        f.write(b"".join(chunks))
        f.flush()
        return records

    def read(self, run_id: str, job_id: str, start: int = 0, limit: int | None = None,
             max_bytes: int = PAGE_BYTES) -> list[LogLine]:
        """Lines from number ``start``: at most ``limit`` lines and about ``max_bytes`` bytes."""
        job = self._job(run_id, job_id)
        key = (run_id, job_id)
        if key in self._open:
            self._open[key].flush()
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
                        for _ in unpacker:
                            if job.count % INDEX_STEP == 0:
                                job.index.append(job.size)
                            job.count += 1
                            job.size = unpacker.tell()
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


def _records(f: IO[bytes]) -> Iterator[Any]:
    """The msgpack records of a log file, up to a torn tail."""
    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=64 * 1024 * 1024)
    try:
        yield from unpacker
    except (ValueError, msgpack.exceptions.ExtraData):
        return
