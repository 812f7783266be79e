"""How broker state maps onto store keys, so the broker can be rebuilt from the store.

Keys (all values msgpack):
    run/<run_id>              run meta (name, agent run, state, times)
    spec/<run_id>/<job_id>    the job spec, written once when the job is accepted
    job/<run_id>/<job_id>     the job's changing state (state, attempts, worker, times...)
    blob/<sha256>             a project archive
    asset/<name>              an uploaded file or artifact
"""

from __future__ import annotations

from typing import Any

from titan_zmq.broker.records import RunRecord
from titan_zmq.jobspec import JobSpec
from titan_zmq.protocol import pack

RUN = "run/"
SPEC = "spec/"
JOB = "job/"
BLOB = "blob/"
ASSET = "asset/"
RESERVED = (RUN, SPEC, JOB, BLOB)  # the journal's prefixes: clients may read them, never write


def run_key(run_id: str) -> str:
    return f"{RUN}{run_id}"


def job_key(run_id: str, job_id: str) -> str:
    return f"{JOB}{run_id}/{job_id}"


def spec_key(run_id: str, job_id: str) -> str:
    return f"{SPEC}{run_id}/{job_id}"


def spec_ops(run_id: str, jobs: list[JobSpec], first: int = 0) -> list[list[Any]]:
    """Store ops that persist the specs of newly accepted jobs (before anything else happens).

    Each spec carries its order in the run (``_order``), so FIFO order survives a restart.
    """
    return [["set", spec_key(run_id, j.id), pack({**j.to_wire(), "_order": first + i}), None]
            for i, j in enumerate(jobs)]


def state_ops(runs: dict[str, RunRecord], dirty: set[tuple[str, str | None]]) -> list[list[Any]]:
    """Store ops for every dirty run (job None) or job record."""
    ops: list[list[Any]] = []
    for run_id, job_id in dirty:
        run = runs.get(run_id)
        if run is None:
            continue
        if job_id is None:
            ops.append(["set", run_key(run_id), pack(run.meta()), None])
        else:
            rec = run.jobs.get(job_id)
            if rec is not None:
                ops.append(["set", job_key(run_id, job_id), pack(rec.state_dict()), None])
    return ops
