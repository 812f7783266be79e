"""The broker's event stream: topics and event bodies, shared by the broker and every subscriber.

Events go out on the broker's PUB socket as two frames, ``[topic, encode(Op.DATA, body)]``.
Subscribers (``titan logs -f``, ``wait``, the UI) subscribe by topic prefix; a prefix is also how
the broker knows whether anybody listens (see :mod:`titan_zmq.broker.publisher`).

    hb/                      HeartbeatEvent, once per heartbeat interval
    run/<run_id>/            RunEvent, when a run's record changes (submitted, finished)
    job/<run_id>/            JobEvent, when a job's state changes
    log/<run_id>/<job_id>/   LogEvent, a batch of output lines
"""

from __future__ import annotations

from typing import TypedDict

HEARTBEAT = "hb/"
RUN = "run/"
JOB = "job/"
LOG = "log/"


def run_topic(run_id: str) -> str:
    return f"{RUN}{run_id}/"


def job_topic(run_id: str) -> str:
    return f"{JOB}{run_id}/"


def log_topic(run_id: str, job_id: str | None = None) -> str:
    """The topic of one job's output, or (``job_id`` None) the prefix of every job's in the run."""
    return f"{LOG}{run_id}/" if job_id is None else f"{LOG}{run_id}/{job_id}/"


def is_topic(topic: bytes, kind: str) -> bool:
    """Whether a received topic frame is of ``kind`` (:data:`RUN`, :data:`JOB`, :data:`LOG`...)."""
    return topic.startswith(kind.encode())


class HeartbeatEvent(TypedDict):
    time: float  # the broker's clock
    workers: int  # connected workers


class RunEvent(TypedDict):
    run_id: str
    name: str
    agent_run_id: str | None
    state: str  # a RunState value
    created_at: float
    finished_at: float | None


class JobEvent(TypedDict):
    run_id: str
    job_id: str
    state: str  # a JobState value
    attempts: int  # the current (or last) attempt's number
    worker: str | None  # its worker
    dispatched_at: float | None  # when it was sent to its worker
    started_at: float | None  # when its process started (None until the attempt's next transition)
    finished_at: float | None  # when it ended (None while it runs)
    exit_code: int | None  # how it ended (None while it runs)


class LogEvent(TypedDict):
    run_id: str
    job_id: str
    lines: list[list[object]]  # [n, attempt, stream, text, time] records, as the log store keeps them
