"""Rebuilding the broker's state from the store after a restart.

The journal holds, per run, its meta (``run/``), each job's spec (``spec/``, written before
the submission was acknowledged) and each job's latest state (``job/``).  A spec without a
state is a job accepted just before a crash: it comes back PENDING and is released normally.
"""

from __future__ import annotations

import logging
from typing import Any

from titan_zmq.broker import journal
from titan_zmq.broker.records import JOB_STATE_FIELDS, JobRecord, RunRecord
from titan_zmq.jobspec import parse_job
from titan_zmq.protocol import unpack
from titan_zmq.states import JobState, RunState
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)


def load_runs(store: StoreClient) -> list[RunRecord]:
    """Every run in the journal, with its jobs' specs and states (the scheduler re-derives the rest).

    Read run by run, so no single reply holds the whole journal.
    """
    runs = []
    for key, raw in store.items(journal.RUN).items():
        meta = unpack(raw) if isinstance(raw, bytes) else {}
        run_id = key[len(journal.RUN):]
        specs = _by_job(store.items(f"{journal.SPEC}{run_id}/"), journal.SPEC)
        states = _by_job(store.items(f"{journal.JOB}{run_id}/"), journal.JOB)
        run = RunRecord(run_id=run_id, name=meta.get("name", run_id), created_at=meta.get("created_at") or 0.0,
                        agent_run_id=meta.get("agent_run_id"), state=RunState(meta.get("state", "RUNNING")),
                        finished_at=meta.get("finished_at"))
        for seq, (job_id, spec) in enumerate(sorted(specs.items(), key=lambda kv: kv[1][0])):
            rec = JobRecord(run_id=run_id, spec=spec[1], seq=seq)
            _apply_state(rec, states.get(job_id))
            run.jobs[job_id] = rec
        runs.append(run)
    return sorted(runs, key=lambda r: r.created_at)


def _by_job(items: dict[str, Any], prefix: str) -> dict[str, Any]:
    """One run's records by job id; a spec comes as (order in the run, JobSpec)."""
    out: dict[str, Any] = {}
    for key, raw in items.items():
        job_id = key[len(prefix):].rpartition("/")[2]
        try:
            value = unpack(raw)
            if prefix == journal.SPEC:
                value = (value.pop("_order", 0), parse_job(value, f"journal {key}"))
        except Exception as exc:  # a record we cannot read: say so, keep the rest
            log.error("journal record %s unreadable (%s): skipped", key, exc)
            continue
        out[job_id] = value
    return out


def _apply_state(rec: JobRecord, state: dict[str, Any] | None) -> None:
    if not state:
        return
    for name in JOB_STATE_FIELDS:
        if name in state:
            setattr(rec, name, state[name])
    rec.state = JobState(state.get("state", "PENDING"))

