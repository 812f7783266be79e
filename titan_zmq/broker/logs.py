"""Durable job logs: every line a job printed, in order, in one append-only file per job.

Each record is a msgpack array ``[n, attempt, stream, text, ts]`` where ``n`` numbers the
job's lines from 0 across all its attempts.  The broker keeps only a line counter per job in
memory, so memory stays flat however much a job prints.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import msgpack

from titan_zmq.protocol import pack

MAX_OPEN_FILES = 64  # log files kept open for appending (least recently used closed first)

LogLine = list[Any]  # [n, attempt, stream, text, ts]


class LogStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: OrderedDict[tuple[str, str], IO[bytes]] = OrderedDict()
        self._count: dict[tuple[str, str], int] = {}
        self._last_seq: dict[tuple[str, str, int], int] = {}

    def path(self, run_id: str, job_id: str) -> Path:
        return self.root / run_id / f"{job_id}.log"

    def count(self, run_id: str, job_id: str) -> int:
        key = (run_id, job_id)
        if key not in self._count:
            self._count[key] = sum(1 for _ in self._records(run_id, job_id))
        return self._count[key]

    def append(
        self, run_id: str, job_id: str, attempt: int, seq: int, lines: list[list[Any]], ts: float
    ) -> list[LogLine] | None:
        """Append one worker batch; a batch seen before (same attempt and seq) is dropped (None)."""
        seq_key = (run_id, job_id, attempt)
        if seq <= self._last_seq.get(seq_key, -1):
            return None
        self._last_seq[seq_key] = seq
        n = self.count(run_id, job_id)
        records = [[n + i, attempt, stream, text, ts] for i, (stream, text) in enumerate(lines)]
        f = self._file(run_id, job_id)
        f.write(b"".join(pack(r) for r in records))
        f.flush()
        self._count[(run_id, job_id)] = n + len(records)
        return records

    def read(self, run_id: str, job_id: str, start: int = 0, limit: int | None = None) -> list[LogLine]:
        key = (run_id, job_id)
        if key in self._open:
            self._open[key].flush()
        out: list[LogLine] = []
        for rec in self._records(run_id, job_id):
            if rec[0] < start:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(rec)
        return out

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def _records(self, run_id: str, job_id: str):
        path = self.path(run_id, job_id)
        if not path.exists():
            return
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=64 * 1024 * 1024)
            try:
                yield from unpacker
            except (ValueError, msgpack.exceptions.ExtraData):
                return  # a torn last record after a crash: everything before it is kept

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

    @staticmethod
    def disk_bytes(root: Path) -> int:
        return sum(p.stat().st_size for p in Path(root).rglob("*.log")) if os.path.isdir(root) else 0
