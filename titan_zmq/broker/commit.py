"""Group commit: the broker's journal writes and everything that must wait for them.

Order of effects for anything that changes state: the scheduler decides; the records it changed
are marked dirty; once per loop iteration (or at once for a client's change, which is replied to
only after it) every dirty record goes to the store in one batch; only then are the dispatches,
kills and completion acknowledgements that depended on it sent, and the change published.  While
the store is down nothing that depends on the journal is sent: it all waits for the next commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from titan_zmq import defaults, events
from titan_zmq.attempt import AttemptKey
from titan_zmq.broker import journal
from titan_zmq.broker.actions import Action, Dispatch, Journal, Kill, RunFinished
from titan_zmq.broker.gates import Notice
from titan_zmq.broker.publisher import EventPublisher
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import StoreUnavailable
from titan_zmq.protocol import Flag, Op, encode
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], bool]  # (peer identity, frame) -> sent
Held = Dispatch | Kill | RunFinished | Notice  # what waits for the commit


class GroupCommit:
    """Collects the scheduler's actions, journals the changed records in one store batch per commit,
    then carries out what waited for it."""

    def __init__(self, store: StoreClient, sched: Scheduler, publisher: EventPublisher,
                 counters: dict[str, int], send: Send, deliver: Callable[[Held], None],
                 finished: Callable[[str], None] = lambda run_id: None):
        self.store = store
        self.sched = sched
        self.publisher = publisher
        self.counters = counters
        self.send = send  # ACK frames to workers
        self.deliver = deliver  # dispatches, kills and ends of runs (the worker link), notices (the hook)
        self.finished = finished  # told of every run that finished (retention counts from then)
        self.dirty: set[tuple[str, str | None]] = set()  # records changed since the last commit
        self.tombstones: list[list[Any]] = []  # deletions of a refused submission's keys, sent first
        self.held: list[Held] = []  # sends (and notices) that wait for the commit
        self.held_acks: dict[bytes, list[AttemptKey]] = {}  # worker identity -> outcomes journaled by it
        self.store_ok = True
        self._next_probe = 0.0

    def apply(self, actions: list[Action]) -> None:
        """Take the scheduler's actions: journal entries now, sends after the next commit."""
        for action in actions:
            if isinstance(action, Journal):
                self.dirty.add((action.run_id, action.job_id))
            else:
                if isinstance(action, RunFinished):
                    log.info("run %s %s", action.run_id, action.state.value)
                    self.finished(action.run_id)
                self.held.append(action)

    def ack_after_commit(self, identity: bytes, key: AttemptKey) -> None:
        """Acknowledge a worker's outcome once it is journaled; the outcomes of one commit go to
        each worker in one ACK."""
        self.held_acks.setdefault(identity, []).append(key)

    @property
    def pending(self) -> bool:
        """Whether anything waits for a commit (the loop then wakes up soon to retry it)."""
        return bool(self.dirty or self.held or self.held_acks)

    def store_available(self) -> bool:
        """Whether the store can take writes; while it is down, probe it at most once a second."""
        if self.store_ok:
            return True
        now = time.time()
        if now < self._next_probe:
            return False
        self._next_probe = now + defaults.STORE_RETRY_INTERVAL
        try:
            self.store.ping(timeout=defaults.STORE_PROBE_TIMEOUT)
        except StoreUnavailable:
            return False
        log.info("store is back: catching up %d records", len(self.dirty))
        self.store_ok = True
        return True

    def store_down(self) -> None:
        self.store_ok = False
        self._next_probe = time.time() + defaults.STORE_RETRY_INTERVAL
        self.counters["store_errors"] += 1

    def write(self, ops: list[list[Any]], what: str) -> None:
        """One journal batch for a client's change, now; StoreUnavailable says ``what`` was not accepted."""
        if not self.store_available():
            raise StoreUnavailable(f"store unavailable: {what} not accepted (nothing of it will run); retry later")
        try:
            self.store.batch(ops, journal=True)
        except StoreUnavailable as exc:
            self.store_down()
            raise StoreUnavailable(f"store unavailable: {what} not accepted (nothing of it will run); "
                                   f"retry later ({exc})") from None

    def commit(self, extra_ops: list[list[Any]] | None = None) -> bool:
        """Journal every dirty record (and ``extra_ops``) in one store batch, then publish and send
        what waited. False when the store did not take it (everything stays held)."""
        if self.dirty or extra_ops or self.tombstones:
            if not self.store_available():
                return False
            dirty, self.dirty = self.dirty, set()
            ops = self.tombstones + (extra_ops or []) + journal.state_ops(self.sched.find_run, dirty)
            try:
                if ops:
                    self.store.batch(ops, journal=True)
                    self.counters["journal_batches"] += 1
                    self.counters["journal_records"] += len(ops)
            except StoreUnavailable:
                self.dirty |= dirty
                log.error("store unavailable: holding %d records and %d sends", len(self.dirty), len(self.held))
                self.store_down()
                return False
            self.tombstones = []
            self._publish_changes(dirty)
        held, self.held = self.held, []
        for item in held:
            self.deliver(item)
        acks, self.held_acks = self.held_acks, {}
        for identity, done in acks.items():
            self.send(identity, encode(Op.ACK, {"acks": [list(k) for k in done]}, Flag.REPLY))
        return True

    def delete(self, ops: list[list[Any]]) -> None:
        """Deletions for the next commit's batch, before any record it writes (runs leaving under retention)."""
        self.tombstones += ops

    def forget_run(self, run_id: str) -> None:
        """Undo a submission the store did not take: no trace of it stays, nothing of it is sent.

        The store may have applied the batch after all (a reply lost to a timeout), so deletions of
        every key it could have written go first in the next batch.
        """
        run = self.sched.find_run(run_id)
        self.tombstones += journal.delete_ops(run_id, list(run.jobs) if run else [])
        self.sched.discard_run(run_id)
        self.dirty = {d for d in self.dirty if d[0] != run_id}
        self.held = [h for h in self.held if h.run_id != run_id]

    def _publish_changes(self, dirty: set[tuple[str, str | None]]) -> None:
        if not self.publisher.prefixes:
            return
        for run_id, job_id in dirty:
            run = self.sched.find_run(run_id)
            if run is None:
                continue
            if job_id is None:
                self.publisher.publish(events.run_topic(run_id), run.meta())
            elif job_id in run.jobs and self.publisher.wanted(events.job_topic(run_id)):
                rec = run.jobs[job_id]
                job_event: events.JobEvent = {
                    "run_id": run_id, "job_id": job_id, "state": rec.state.value, "attempts": rec.attempts,
                    "worker": rec.worker, "dispatched_at": rec.dispatched_at, "started_at": rec.started_at,
                    "finished_at": rec.finished_at, "exit_code": rec.exit_code}
                self.publisher.publish(events.job_topic(run_id), dict(job_event))
