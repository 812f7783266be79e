"""Rebuilding the broker's state from the store after a restart.

The journal holds, per run, its meta (``run/``), each job's spec (``spec/``, written before
the submission was acknowledged) and each job's latest state (``job/``).  A spec without a
state is a job accepted just before a crash: it comes back PENDING and is released normally.

Reading is linear in the journal's size and every reply is bounded: each of the three prefixes
is paged through once, in key order (:meth:`StoreClient.pages`), and the records are stitched
together by run id.  Every record is validated; a run with any record that cannot be read
(not msgpack, a wrong type, an unknown state, a spec that no longer parses, a DAG that does not
hold, a value larger than :data:`defaults.JOURNAL_RECORD_MAX`), and any record whose run is
gone, is logged, moved under ``quarantine/`` (:func:`titan_zmq.keys.quarantine_key`, the
original value kept) and left out, so one bad record never stops the broker from starting.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from titan_zmq import defaults, keys
from titan_zmq.broker.records import JOB_STATE_FIELDS, JobRecord, RunRecord
from titan_zmq.errors import TitanError
from titan_zmq.jobspec import JobSpec, parse_job, validate_dag
from titan_zmq.protocol import unpack
from titan_zmq.states import JobState, RunState
from titan_zmq.store.client import Page, Value

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # what new_run_id makes (a slug, the time, a random tail)
QUARANTINE_BATCH_BYTES = 4 * 1024 * 1024  # one store batch of quarantine moves holds about this much


class JournalStore(Protocol):
    """What recovery needs of the store (a :class:`StoreClient`, or a fake in tests)."""

    def pages(self, prefix: str = "", *, values: bool = False, max_value: int | None = None) -> Iterator[Page]: ...

    def get(self, key: str) -> Value | None: ...

    def batch(self, ops: list[list[Any]], journal: bool = False) -> list[Any]: ...


class BadRecord(Exception):
    """A journal record that cannot be taken back (the message says why)."""


@dataclass
class _Run:
    """One run's records as read, before they are checked together."""

    meta: dict[str, Any] | None = None
    specs: dict[str, tuple[int, JobSpec]] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)  # every key of the run, for quarantine
    bad: str | None = None  # why the run cannot be taken back


def load_runs(store: JournalStore) -> list[RunRecord]:
    """Every readable run in the journal, oldest first, with its jobs' specs and states (the
    scheduler re-derives the rest); unreadable ones are quarantined (see the module doc)."""
    runs: dict[str, _Run] = {}
    raw: dict[str, Value] = {}  # values of bad records, to move them without reading them again
    for prefix, parse in ((keys.RUN, _read_meta), (keys.SPEC, _read_spec), (keys.JOB, _read_state)):
        for page in store.pages(prefix, values=True, max_value=defaults.JOURNAL_RECORD_MAX):
            for key, size in page.oversize.items():
                _mark(_run_of(runs, prefix, key)[0], key,
                      f"{size} bytes, over the {defaults.JOURNAL_RECORD_MAX} byte bound")
            for key, value in page.items.items():
                run, job_id = _run_of(runs, prefix, key)
                try:
                    parse(run, job_id, key, value)
                except BadRecord as exc:
                    raw[key] = value
                    _mark(run, key, str(exc))
    out, bad = [], []
    for run_id, run in runs.items():
        record = _stitch(run_id, run) if run.bad is None else None
        if record is None:
            bad.append(run)
        else:
            out.append(record)
    _parse_spec.cache_clear()
    if bad:
        quarantine(store, bad, raw)
    return sorted(out, key=lambda r: r.created_at)


def quarantine(store: JournalStore, bad: list[_Run], raw: dict[str, Value]) -> None:
    """Move every key of the bad runs under ``quarantine/`` (in bounded batches); on failure they stay
    where they are, are skipped again, and the move is tried at the next start."""
    ops: list[list[Any]] = []
    size = moved = 0
    try:
        for run in bad:
            for key in run.records:
                value = raw[key] if key in raw else store.get(key)
                if value is not None:
                    ops += [["set", keys.quarantine_key(key), value, None], ["del", key]]
                    size += len(value)
                    moved += 1
                if size >= QUARANTINE_BATCH_BYTES or len(ops) >= 1000:
                    store.batch(ops, journal=True)
                    ops, size = [], 0
        if ops:
            store.batch(ops, journal=True)
    except TitanError as exc:
        log.error("could not move bad journal records to %s (%s); they are skipped", keys.QUARANTINE, exc)
        return
    log.warning("moved %d journal records of %d unreadable runs under %s", moved, len(bad), keys.QUARANTINE)


def _run_of(runs: dict[str, _Run], prefix: str, key: str) -> tuple[_Run, str]:
    """The run a key belongs to and the key's job id ("" for a run's meta)."""
    run_id, _, job_id = key[len(prefix):].partition("/")
    run = runs.get(run_id)
    if run is None:
        run = runs[run_id] = _Run()
    run.records.append(key)
    return run, job_id


def _mark(run: _Run, key: str, why: str) -> None:
    log.error("journal record %s unreadable (%s): its run is quarantined", key, why)
    run.bad = run.bad or f"{key}: {why}"


def _unpack_map(value: Value) -> dict[str, Any]:
    if not isinstance(value, bytes):
        raise BadRecord("not msgpack bytes")
    try:
        out = unpack(value)
    except Exception as exc:
        raise BadRecord(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(out, dict):
        raise BadRecord(f"expected a map, got {type(out).__name__}")
    return out


def _check(record: dict[str, Any], types: dict[str, tuple[type, ...]]) -> None:
    """The fields of ``record`` named in ``types`` have one of their types (absent fields pass)."""
    for name, value in record.items():
        kinds = types.get(name)
        if kinds is not None and (value.__class__ is bool or not isinstance(value, kinds)):
            raise BadRecord(f"{name}: expected {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")


NUMBER_OR_NONE = (int, float, type(None))
STR_OR_NONE = (str, type(None))
INT_OR_NONE = (int, type(None))
# the journal's job state fields and the types they may have (absent counts as None)
STATE_TYPES: dict[str, tuple[type, ...]] = {
    "attempts": INT_OR_NONE, "failures": INT_OR_NONE, "worker": STR_OR_NONE, "exit_code": INT_OR_NONE,
    "error": STR_OR_NONE, "dispatched_at": NUMBER_OR_NONE, "started_at": NUMBER_OR_NONE,
    "finished_at": NUMBER_OR_NONE, "due_at": NUMBER_OR_NONE, "history": (list,),
    "decided_by": STR_OR_NONE, "comment": STR_OR_NONE, "service": (dict, type(None)), "restarts": INT_OR_NONE,
}
STATE_FIELDS = frozenset(JOB_STATE_FIELDS)
META_TYPES: dict[str, tuple[type, ...]] = {
    "name": STR_OR_NONE, "agent_run_id": STR_OR_NONE, "created_at": NUMBER_OR_NONE,
    "finished_at": NUMBER_OR_NONE, "state": STR_OR_NONE, "schedule": STR_OR_NONE, "tick": NUMBER_OR_NONE,
}


def _read_meta(run: _Run, job_id: str, key: str, value: Value) -> None:
    if job_id:
        raise BadRecord("a run id has no '/'")
    meta = _unpack_map(value)
    _check(meta, META_TYPES)
    if meta.get("state", "RUNNING") not in RunState.__members__:
        raise BadRecord(f"unknown run state {meta.get('state')!r:.40}")
    run.meta = meta


def _read_spec(run: _Run, job_id: str, key: str, value: Value) -> None:
    if not isinstance(value, bytes):
        raise BadRecord("not msgpack bytes")
    order, spec = _parse_spec(value)
    if spec.id != job_id:
        raise BadRecord(f"the spec is of job {spec.id!r:.40}")
    run.specs[job_id] = (order, spec)


@functools.lru_cache(maxsize=4096)
def _parse_spec(value: bytes) -> tuple[int, JobSpec]:
    """A journaled spec and its order in the run.  Cached by its bytes: a history of runs of the same
    pipelines repeats the same specs, which then are parsed once and share one (frozen) JobSpec."""
    record = _unpack_map(value)
    order = record.pop("_order", 0)
    if isinstance(order, bool) or not isinstance(order, int):
        raise BadRecord(f"_order: expected int, got {type(order).__name__}")
    try:
        return order, parse_job(record, "journal spec")
    except TitanError as exc:
        raise BadRecord(str(exc)) from None


def _read_state(run: _Run, job_id: str, key: str, value: Value) -> None:
    state = _unpack_map(value)
    _check(state, STATE_TYPES)
    if state.get("state", "PENDING") not in JobState.__members__:
        raise BadRecord(f"unknown job state {state.get('state')!r:.40}")
    run.states[job_id] = state


def _stitch(run_id: str, run: _Run) -> RunRecord | None:
    """The run's record, or None (the run is marked bad) when its records do not hold together."""
    meta = run.meta
    if not RUN_ID.fullmatch(run_id):
        run.bad = "not a run id the broker makes"  # it names the run's log directory: no path tricks
    elif meta is None:
        run.bad = "no run meta (run/ record)"
    elif set(run.states) - set(run.specs):
        run.bad = f"job state without a spec: {sorted(set(run.states) - set(run.specs))[0]!r:.60}"
    else:
        ordered = sorted(run.specs.values(), key=lambda order_spec: order_spec[0])
        try:
            if any(spec.depends_on for _, spec in ordered):  # without edges there is nothing to check
                validate_dag([spec for _, spec in ordered])
        except TitanError as exc:
            run.bad = str(exc)
    if run.bad is not None or meta is None:
        log.error("run %s cannot be restored (%s): quarantined", run_id, run.bad)
        return None
    record = RunRecord(run_id=run_id, name=meta.get("name") or run_id, created_at=meta.get("created_at") or 0.0,
                       agent_run_id=meta.get("agent_run_id"), state=RunState(meta.get("state") or "RUNNING"),
                       finished_at=meta.get("finished_at"), schedule=meta.get("schedule"), tick=meta.get("tick"))
    for seq, (_, spec) in enumerate(ordered):
        rec = JobRecord(run_id=run_id, spec=spec, seq=seq)
        state = run.states.get(spec.id)
        if state:
            for name, value in state.items():
                if name in STATE_FIELDS:
                    setattr(rec, name, value)
            rec.state = JobState(state.get("state") or "PENDING")
            rec.attempts, rec.failures, rec.restarts = rec.attempts or 0, rec.failures or 0, rec.restarts or 0
        record.jobs[spec.id] = rec
    return record
