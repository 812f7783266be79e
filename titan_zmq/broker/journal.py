"""The broker's journal writes: its records as store operations, so it can be rebuilt from the store.

The key names are the shared contract in :mod:`titan_zmq.keys`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from titan_zmq.broker.records import RunRecord
from titan_zmq.jobspec import JobSpec
from titan_zmq.keys import job_key, run_key, spec_key
from titan_zmq.protocol import pack


def spec_ops(run_id: str, jobs: list[JobSpec], first: int = 0) -> list[list[Any]]:
    """Store ops that persist the specs of newly accepted jobs (before anything else happens).

    Each spec carries its order in the run (``_order``), so FIFO order survives a restart.
    """
    return [["set", spec_key(run_id, j.id), pack({**j.to_wire(), "_order": first + i}), None]
            for i, j in enumerate(jobs)]


def state_ops(find_run: Callable[[str], RunRecord | None],
              dirty: set[tuple[str, str | None]]) -> list[list[Any]]:
    """Store ops for every dirty run (job None) or job record (runs looked up with ``find_run``)."""
    ops: list[list[Any]] = []
    for run_id, job_id in dirty:
        run = find_run(run_id)
        if run is None:
            continue
        if job_id is None:
            ops.append(["set", run_key(run_id), pack(run.meta()), None])
        else:
            rec = run.jobs.get(job_id)
            if rec is not None:
                ops.append(["set", job_key(run_id, job_id), pack(rec.state_dict()), None])
    return ops


def delete_ops(run_id: str, job_ids: Iterable[str]) -> list[list[Any]]:
    """Store ops that delete every journal key of a run (a refused submission, a run leaving)."""
    return [["del", run_key(run_id)]] + [["del", key(run_id, j)] for j in job_ids for key in (spec_key, job_key)]
