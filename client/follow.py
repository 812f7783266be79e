"""Following a whole run's output live: every job's lines, gap-free, until the run ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

from client.api import TERMINAL_JOB, TERMINAL_RUN, TitanClient
from client.logcursor import LogCursor, LogLine
from titan_zmq import events
from titan_zmq.errors import BrokerUnavailable
from titan_zmq.protocol import decode


def follow_run(client: TitanClient, run_id: str, timeout: float | None = None) -> Iterator[tuple[str, LogLine]]:
    """Yield ``(job_id, [n, attempt, stream, text, ts])`` for every line of every job, in order per job."""
    follower = _RunFollower(client, run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                st = client.status(run_id)
            except BrokerUnavailable:
                st = None
            if st is not None:
                for job_id, job in st["jobs"].items():
                    yield from follower.catch_up(job_id, finished=job["state"] in TERMINAL_JOB)
                if st["state"] in TERMINAL_RUN:
                    return
            if deadline is not None and time.monotonic() > deadline:
                return
            yield from follower.live(min(2.0, 2.0 if deadline is None else deadline - time.monotonic()))
    finally:
        follower.close()


class _RunFollower:
    """The subscription and the per-job cursor of one :func:`follow_run`."""

    def __init__(self, client: TitanClient, run_id: str):
        self.client, self.run_id = client, run_id
        self.sub = client.conn.subscribe(events.log_topic(run_id), events.run_topic(run_id))
        self.cursor = LogCursor()
        self.complete: set[str] = set()  # finished jobs whose every line was yielded: never asked again

    def catch_up(self, job_id: str, finished: bool = False) -> Iterator[tuple[str, LogLine]]:
        """The lines of ``job_id`` not yet yielded, fetched from the broker."""
        if job_id in self.complete:
            return
        lines = self.client.log_records(self.run_id, job_id, self.cursor.at(job_id))
        for rec in self.cursor.fetched(job_id, lines):
            yield job_id, rec
        if finished:
            self.complete.add(job_id)

    def live(self, seconds: float) -> Iterator[tuple[str, LogLine]]:
        """Live lines for up to ``seconds`` or until the run ends; a gap is fetched at once."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.sub.poll(500):
                continue
            topic, frame = self.sub.recv_multipart()
            body = decode(frame).body
            if events.is_topic(topic, events.RUN):
                if body.get("state") in TERMINAL_RUN:
                    return
                continue
            job_id = body["job_id"]
            lines, gap = self.cursor.live(job_id, body["lines"])
            if gap:
                yield from self.catch_up(job_id)
                lines, _ = self.cursor.live(job_id, body["lines"])
            for rec in lines:
                yield job_id, rec

    def close(self) -> None:
        self.sub.close(0)
