"""Following a whole run's output live: every job's lines, gap-free, until the run ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from client.api import TERMINAL_JOB, TERMINAL_RUN, TitanClient
from titan_zmq import events
from titan_zmq.errors import BrokerUnavailable
from titan_zmq.protocol import decode


def follow_run(client: TitanClient, run_id: str, timeout: float | None = None) -> Iterator[tuple[str, list[Any]]]:
    """Yield ``(job_id, [n, attempt, stream, text, ts])`` for every line of every job, in order per job."""
    deadline = None if timeout is None else time.monotonic() + timeout
    sub = client.conn.subscribe(events.log_topic(run_id), events.run_topic(run_id))
    nxt: dict[str, int] = {}
    complete: set[str] = set()  # finished jobs whose every line was yielded: never asked again

    def catch_up(job_id: str, finished: bool = False) -> Iterator[tuple[str, list[Any]]]:
        if job_id in complete:
            return
        for rec in client.log_records(run_id, job_id, nxt.get(job_id, 0)):
            if rec[0] >= nxt.get(job_id, 0):
                nxt[job_id] = rec[0] + 1
                yield job_id, rec
        if finished:
            complete.add(job_id)

    try:
        while True:
            try:
                st = client.status(run_id)
            except BrokerUnavailable:
                st = None
            if st is not None:
                for job_id, job in st["jobs"].items():
                    yield from catch_up(job_id, finished=job["state"] in TERMINAL_JOB)
                if st["state"] in TERMINAL_RUN:
                    return
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                if deadline is not None and time.monotonic() > deadline:
                    return
                if not sub.poll(500):
                    continue
                topic, frame = sub.recv_multipart()
                if events.is_topic(topic, events.RUN):
                    if decode(frame).body.get("state") in TERMINAL_RUN:
                        break
                    continue
                body = decode(frame).body
                job_id, lines = body["job_id"], body["lines"]
                if lines and lines[0][0] > nxt.get(job_id, 0):
                    yield from catch_up(job_id)
                for rec in lines:
                    if rec[0] == nxt.get(job_id, 0):
                        nxt[job_id] = rec[0] + 1
                        yield job_id, rec
    finally:
        sub.close(0)
