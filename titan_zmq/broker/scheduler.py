"""The scheduler: a state machine with no I/O.

Events come in as method calls (a submission, a worker that registered or vanished, an
attempt that started or finished, a cancel, the clock moving on); each returns the list of
actions the broker must carry out: journal a record, send a job to a worker, kill an
attempt, announce a finished run.  The broker loop journals first, then sends, then replies,
so nothing is acknowledged before it is durable.  Time is always passed in (``now``), which
keeps every rule testable without sockets or sleeps.

The rule: **state changes only through the event methods** (``submit``, ``add_jobs``,
``register_worker``, ``job_started``, ``job_finished``, ``cancel``, ``tick``...).  The broker and
its handlers read through the query methods (``run``, ``job``, ``recent_runs``, ``running_on``...)
and never write a record or read ``runs`` directly; each check the scheduler makes lives here once
(``check_new_jobs`` is the one DAG check for added jobs, called before their specs are stored).
Around it, each concept in its own module: the actions it returns (:mod:`.actions`), its read side
(:mod:`.queries`), ready queues and the dispatch choice (:mod:`.dispatch`), approval gates
(:mod:`.gates`), the agent-run index (:mod:`.agents`) and the rules of services (:mod:`.services`).
Cron schedules live outside it (:mod:`.schedules`, :mod:`.timetable`): they submit runs like a client.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from titan_zmq import defaults
from titan_zmq.attempt import AttemptKey
from titan_zmq.broker import services
from titan_zmq.broker.actions import Action, Dispatch, Journal, Kill, RunFinished
from titan_zmq.broker.agents import AgentRuns
from titan_zmq.broker.dispatch import Entry, ReadyQueues, WorkerSlots
from titan_zmq.broker.gates import Gates, Hooks
from titan_zmq.broker.queries import SchedulerQueries
from titan_zmq.broker.records import JobRecord, RunOrder, RunRecord
from titan_zmq.capabilities import tag
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.jobspec import JobSpec, validate_dag
from titan_zmq.states import ACTIVE_JOB_STATES, FAILED_JOB_STATES, JobState, RunState

WAITING = (JobState.DELAYED, JobState.FAILED, JobState.RESTARTING)  # states with a due time (a timer)


def backoff(failures: int, base: float = defaults.RETRY_BACKOFF, cap: float = defaults.RETRY_BACKOFF_MAX) -> float:
    """Seconds to wait before the retry that follows the ``failures``-th failure."""
    return float(min(cap, base * (2 ** max(0, failures - 1))))


class Scheduler(SchedulerQueries):
    """Runs, jobs and workers as the broker knows them; every decision about them (see the module doc)."""

    def __init__(self, retry_backoff: float = defaults.RETRY_BACKOFF):
        self.retry_backoff = retry_backoff
        self.runs: dict[str, RunRecord] = {}  # in submission order
        self.order = RunOrder()  # the same order, with positions (pages of runs)
        self.workers: dict[str, WorkerSlots] = {}
        self.ready = ReadyQueues(self._is_queued_entry)
        self.timers: list[tuple[float, int, str, str]] = []  # (due_at, seq, run, job) heap
        self._seq = itertools.count(1)
        self._worker_order = itertools.count(1)
        self._out: list[Action] = []
        # approval gates (see .gates): their state changes go through the same paths as every job's
        self.gates = Gates(Hooks(self._set, self._cascade, self._release_children, self._timer, self._emit))
        self.agents = AgentRuns()  # agent run id -> its runs
        self.service_keys: dict[tuple[str, str], None] = {}  # (run, job) of every known service, oldest first
        self._restart_now: set[AttemptKey] = set()  # service attempts killed by `titan restart` (restart at once)

    def check_new_jobs(self, run_id: str, jobs: list[JobSpec]) -> RunRecord:
        """The one check of jobs added to a running run (call before storing them): the run exists
        and is not finished, and the jobs form a valid DAG with the run's existing jobs."""
        run = self.run(run_id)
        if run.state.terminal:
            raise InvalidRequest(f"run {run_id!r} already finished ({run.state.value}); cannot add jobs")
        validate_dag(jobs, existing=set(run.jobs))
        return run

    # ---- events ----------------------------------------------------------------------------

    def submit(
        self, run_id: str, name: str, jobs: list[JobSpec], now: float, agent_run_id: str | None = None,
        schedule: str | None = None, tick: float | None = None,
    ) -> list[Action]:
        """A new run (``schedule`` and ``tick``: fired by that schedule for that cron tick). The caller
        validated the specs; this checks the DAG as a whole."""
        if run_id in self.runs:
            raise InvalidRequest(f"run id {run_id!r} already exists")
        validate_dag(jobs)
        run = RunRecord(run_id=run_id, name=name, agent_run_id=agent_run_id, created_at=now, schedule=schedule,
                        tick=tick)
        self.runs[run_id] = run
        self.order.add(run_id)
        self.agents.add(run)
        self._emit(Journal(run_id))
        self._add(run, jobs, now)
        return self._flush(now)

    def add_jobs(self, run_id: str, jobs: list[JobSpec], now: float) -> list[Action]:
        """Jobs added to a run while it executes (for example by one of its own jobs), already
        accepted by :meth:`check_new_jobs`."""
        self._add(self.run(run_id), jobs, now)
        return self._flush(now)

    def register_worker(
        self, name: str, caps: Iterable[str], slots: int, now: float,
        running: Iterable[AttemptKey] = (), done: Iterable[AttemptKey] = (), draining: bool = False,
    ) -> list[Action]:
        """A worker (re)registered, reporting the attempts it runs and those it finished but whose
        outcome the broker has not acknowledged.  Running attempts the broker still wants are adopted;
        any other is killed.  An attempt the broker believes this worker runs but the worker does not
        know (a dispatch lost in a broker crash) goes back to the queue."""
        # a worker that reconnects before it was declared lost keeps its attempts: the ones it
        # reports are adopted below, the rest re-queued; nothing it still runs is run twice
        if self.workers.pop(name, None) is not None:
            self._unpin(name)  # its capabilities may have changed
        # "@NAME" is every worker's own tag: a job asking for it runs there (`titan worker launch --on`)
        w = WorkerSlots(name=name, caps=frozenset([*caps, tag(f"@{name}")]), slots=max(1, int(slots)), order=next(self._worker_order),
                        draining=draining)
        self.workers[name] = w
        self.ready.add_worker(name)
        running, done = [AttemptKey(*k) for k in running], [AttemptKey(*k) for k in done]
        reported = set(running)
        known = reported | set(done)
        for key in running:
            rec = self._live(key, name)
            if rec is not None and w.free > 0:
                rec.worker = name
                w.running.add(key)
                self._emit(Journal(key.run_id, key.job_id))
            else:
                self._emit(Kill(name, key))
        for key in done:  # its outcome is on the way (the process is over: no slot)
            rec = self._live(key, name)
            if rec is not None:
                rec.worker = name
                w.finishing.add(key)
        for run in self.runs.values():
            if run.state.terminal:
                continue
            for rec in run.jobs.values():
                key = AttemptKey(run.run_id, rec.spec.id, rec.attempts)
                if rec.state in ACTIVE_JOB_STATES and rec.worker == name and (
                        key not in known or (key in reported and key not in w.running)):
                    self._requeue(run, rec, now, "LOST")
        return self._flush(now)

    def restore(self, runs: Iterable[RunRecord], now: float) -> list[Action]:
        """Take back runs rebuilt from the journal after a broker restart.

        QUEUED jobs queue again in their original order, DELAYED and FAILED jobs keep their due
        times, RUNNING jobs wait for their worker to re-register and report them (see
        :meth:`requeue_unclaimed`), PENDING jobs whose parents are done are released.
        """
        for run in runs:
            self.runs[run.run_id] = run
            self.order.add(run.run_id)
            self.agents.add(run)
            recs = sorted(run.jobs.values(), key=lambda r: r.seq)
            self.gates.add(run.run_id, recs)
            run.open_jobs = sum(1 for r in recs if not r.terminal)
            run.failed = sum(1 for r in recs if r.state in FAILED_JOB_STATES or (
                r.terminal and r.state is JobState.FAILED))
            run.cancelled = sum(1 for r in recs if r.state is JobState.CANCELLED)
            for rec in recs:
                rec.seq = next(self._seq)
                rec.children = []
                if services.is_service(rec):
                    self.service_keys[run.run_id, rec.spec.id] = None
            for rec in recs:
                for parent in rec.spec.depends_on:
                    if parent in run.jobs:
                        run.jobs[parent].children.append(rec.spec.id)
            for rec in recs:
                self._restore_job(run, rec, now)
            if not run.state.terminal and run.open_jobs == 0:
                self._finish_run(run, now)
        return self._flush(now)

    def _restore_job(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        if rec.terminal:
            return
        if rec.state is JobState.QUEUED or (rec.state in WAITING and rec.due_at is None):
            self._enqueue(run, rec, now)
        elif rec.state in WAITING:
            self._timer(rec)
        elif rec.state is JobState.PENDING:
            self._maybe_release(run, rec, now)
        elif rec.state is JobState.AWAITING_APPROVAL:
            self.gates.restore(rec, now)

    def requeue_unclaimed(self, now: float) -> list[Action]:
        """After a restart's grace period: RUNNING jobs whose worker never came back are re-queued."""
        for run in self.runs.values():
            for rec in run.jobs.values():
                if rec.state in ACTIVE_JOB_STATES and (rec.worker is None or rec.worker not in self.workers):
                    self._requeue(run, rec, now, "LOST")
        return self._flush(now)

    def dispatch_failed(self, name: str, key: AttemptKey, now: float) -> list[Action]:
        """A dispatch could not be sent: the attempt goes back to the queue (the next is attempt + 1)."""
        rec = self._current(name, key)
        w = self.workers.get(name)
        if w is not None:
            w.running.discard(key)
        if rec is not None:
            self._requeue(self.runs[key.run_id], rec, now, "NOT_SENT")
        return self._flush(now)

    def discard_run(self, run_id: str) -> None:
        """Forget a run whose submission could not be journaled (its queue entries die lazily)."""
        run = self.runs.pop(run_id, None)
        self.order.remove(run_id)
        self.gates.forget(run_id)
        if run is not None:
            self.agents.remove(run)
        for w in self.workers.values():
            w.running = {a for a in w.running if a[0] != run_id}
        self._out = [a for a in self._out if a.run_id != run_id]

    def forget_finished(self, run_ids: Iterable[str]) -> list[RunRecord]:
        """Finished runs leave (retention); returns their records (unknown and unfinished runs stay).

        Nothing else refers to a finished run: its queue entries and timers die lazily, and a worker
        still reporting one of its attempts (a kill in flight) frees the slot and is told to kill it.
        """
        gone = []
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is not None and run.state.terminal:
                del self.runs[run_id]
                self.order.remove(run_id)
                self.gates.forget(run_id)
                self.agents.remove(run)
                gone.append(run)
        return gone

    def worker_lost(self, name: str, now: float, outcome: str = "LOST") -> list[Action]:
        """A worker died, was cut off or was stopped (``outcome`` STOPPED): its attempts go back to the
        queue (attempt + 1 on dispatch, no retry used)."""
        if name in self.workers:
            self._drop_worker(name, now, outcome)
        return self._flush(now)

    def drain_worker(self, name: str, now: float) -> list[Action]:
        """The worker takes no new attempts from now on; the ones it runs finish (drain, stop)."""
        w = self.workers.get(name)
        if w is None:
            raise NotFound(f"no worker {name!r} is registered")
        if not w.draining:
            w.draining = True
            self._unpin(name)  # jobs waiting for it (affinity) go to any capable worker
        return self._flush(now)

    def job_started(self, name: str, key: AttemptKey, now: float) -> list[Action]:
        """An attempt's process started at ``now`` (its slot was taken at dispatch)."""
        rec = self._current(name, key)
        if rec is not None and rec.started_at is None:
            rec.started_at = now  # journaled with the attempt's next transition: not worth a write alone
        return self._flush(now)

    def job_finished(
        self, name: str, key: AttemptKey, exit_code: int, now: float, error: str | None = None,
        permanent: bool = False,
    ) -> list[Action]:
        """An attempt ended. Results of stale attempts (cancelled, re-queued) only free the slot.

        A ``permanent`` failure (the worker refused the job's input: a retry would fail the same way)
        makes the job DEAD at once, whatever retries it has left.
        """
        w = self.workers.get(name)
        if w is not None:
            w.running.discard(key)
            w.finishing.discard(key)
        rec = self._current(name, key)
        if rec is None:
            return self._flush(now)
        run = self.runs[key.run_id]
        rec.exit_code = exit_code
        rec.finished_at = now
        rec.error = error
        if services.is_service(rec):
            self._service_exited(run, rec, key, exit_code, now, permanent)
        elif exit_code == 0:
            self._set(run, rec, JobState.COMPLETED, now)
            self._release_children(run, rec, now)
        else:
            rec.failures += 1
            if rec.failures <= rec.spec.retries and not permanent:
                rec.due_at = now + backoff(rec.failures, self.retry_backoff)
                self._set(run, rec, JobState.FAILED, now)
                self._timer(rec)
            else:
                self._set(run, rec, JobState.DEAD, now)
                self._cascade(run, rec, JobState.SKIPPED, now)
        return self._flush(now)

    def service_ready(self, name: str, key: AttemptKey, host: str, port: int | None, pid: int | None,
                      now: float) -> list[Action]:
        """A service's health check passed on ``name``: it is READY, its address is published and its
        children may start. A repeat (a worker re-reporting after a broker restart) is harmless."""
        rec = self._current(name, key)
        if rec is None or not services.is_service(rec):
            return self._flush(now)
        run = self.runs[key.run_id]
        if rec.state is JobState.STARTING or rec.service is None:
            rec.service = services.ready_info(host, port, pid, now)
            self._set(run, rec, JobState.READY, now)
            for child in rec.children:
                self._maybe_release(run, run.jobs[child], now)
        return self._flush(now)

    def stop_service(self, run_id: str, job_id: str, now: float) -> list[Action]:
        """Stop a service on purpose: STOPPED (final), its process group killed (SIGTERM, SIGKILL after its
        stop_grace), children still waiting for it CANCELLED."""
        rec = self._service(run_id, job_id)
        if rec.terminal:
            raise InvalidRequest(f"service {services.service_id(run_id, job_id)} is already {rec.state.value}")
        run = self.runs[run_id]
        rec.service = None
        self._stop(run, rec, JobState.STOPPED, now)
        for child in rec.children:
            self._maybe_release(run, run.jobs[child], now)
        return self._flush(now)

    def restart_service(self, run_id: str, job_id: str, now: float) -> list[Action]:
        """Restart a live service now: its process is stopped gracefully and started again at once (not
        counted as a restart after a crash); one waiting out its backoff is queued now."""
        rec = self._service(run_id, job_id)
        if rec.terminal:
            raise InvalidRequest(f"service {services.service_id(run_id, job_id)} is {rec.state.value}: only a"
                                 " live service restarts (submit it again)")
        run = self.runs[run_id]
        if rec.state in ACTIVE_JOB_STATES and rec.worker is not None:
            key = AttemptKey(run_id, job_id, rec.attempts)
            self._restart_now.add(key)
            self._emit(Kill(rec.worker, key))
        elif rec.state is JobState.RESTARTING:
            rec.due_at = None
            self._enqueue(run, rec, now)
        return self._flush(now)

    def log_flagged(self, run_id: str, job_id: str, flag: str, now: float) -> list[Action]:
        """The broker's log of a job was cut (``log_truncated``) or lost lines (``log_incomplete``)."""
        run = self.runs.get(run_id)
        rec = run.jobs.get(job_id) if run else None
        if rec is not None and flag in ("log_truncated", "log_incomplete") and not getattr(rec, flag):
            setattr(rec, flag, True)
            self._emit(Journal(run_id, job_id))
        return self._flush(now)

    def cancel(self, run_id: str, job_id: str | None, now: float) -> list[Action]:
        """Cancel one job and its descendants, or every unfinished job of a run."""
        run = self.run(run_id)
        if job_id is None:
            targets = list(run.jobs.values())
        else:
            targets = [self.job(run_id, job_id)]
        for rec in targets:
            if not rec.terminal:
                self._stop(run, rec, JobState.CANCELLED, now)
                self._cascade(run, rec, JobState.CANCELLED, now)
        if job_id is None and not run.state.terminal:
            self._finish_run(run, now, RunState.CANCELLED)
        return self._flush(now)

    def decide_gate(self, run_id: str, job_id: str, approve: bool, by: str, comment: str | None,
                    now: float) -> list[Action]:
        """A human approves or rejects a waiting gate (GateNotPending if it is not waiting: see .gates)."""
        self.gates.decide(self.run(run_id), self.job(run_id, job_id), approve, by, comment, now)
        return self._flush(now)

    def tick(self, now: float) -> list[Action]:
        """Release delayed jobs and retries whose time has come; end gates whose deadline passed."""
        while self.timers and self.timers[0][0] <= now:
            due, _, run_id, job_id = heapq.heappop(self.timers)
            run = self.runs.get(run_id)
            rec = run.jobs.get(job_id) if run else None
            if run is None or rec is None or rec.due_at != due:
                continue
            if rec.state in WAITING:
                rec.due_at = None
                self._enqueue(run, rec, now)
            elif rec.state is JobState.AWAITING_APPROVAL:
                self.gates.expire(run, rec, now)
        return self._flush(now)

    # ---- internals ---------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _release_children(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        for child in rec.children:
            self._maybe_release(run, run.jobs[child], now)

    def _flush(self, now: float) -> list[Action]:
        self._dispatch(now)
        out, self._out = self._out, []
        return out

    def _service(self, run_id: str, job_id: str) -> JobRecord:
        rec = self.job(run_id, job_id)
        if not services.is_service(rec):
            raise InvalidRequest(f"{run_id}/{job_id} is a job, not a service (cancel it with titan cancel)")
        return rec

    def _service_exited(self, run: RunRecord, rec: JobRecord, key: AttemptKey, exit_code: int, now: float,
                        permanent: bool) -> None:
        """A service's process ended: restart it, or it ends FAILED or COMPLETED (see :mod:`.services`)."""
        requested = key in self._restart_now
        self._restart_now.discard(key)
        rec.service = None
        rec.end_attempt(services.RESTARTED if requested else services.EXITED)
        out = services.after_exit(rec, exit_code, now, rec.error, permanent, requested)
        rec.error = out.error
        if out.state is JobState.RESTARTING:
            rec.restarts += out.counted
            rec.due_at = out.due_at
            self._set(run, rec, JobState.RESTARTING, now)
            if out.due_at is not None and out.due_at <= now:
                rec.due_at = None
                self._enqueue(run, rec, now)
            else:
                self._timer(rec)
            return
        self._set(run, rec, out.state, now)
        for child in rec.children:
            self._maybe_release(run, run.jobs[child], now)

    def _add(self, run: RunRecord, jobs: list[JobSpec], now: float) -> None:
        for spec in jobs:
            rec = JobRecord(run_id=run.run_id, spec=spec, seq=next(self._seq))
            run.jobs[spec.id] = rec
            if spec.type == "service":
                self.service_keys[run.run_id, spec.id] = None
            run.open_jobs += 1
            self._emit(Journal(run.run_id, spec.id))
        self.gates.add(run.run_id, (run.jobs[spec.id] for spec in jobs))
        for spec in jobs:
            for parent in spec.depends_on:
                run.jobs[parent].children.append(spec.id)
        for spec in jobs:
            self._maybe_release(run, run.jobs[spec.id], now)

    def _maybe_release(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        """Move a PENDING job on once every parent is done (or skip it if one failed)."""
        if rec.state is not JobState.PENDING:
            return
        parents = [run.jobs[p] for p in rec.spec.depends_on]
        if any(services.failed(p) for p in parents):
            self._set(run, rec, JobState.SKIPPED, now)
            self._cascade(run, rec, JobState.SKIPPED, now)
        elif any(services.cancelled(p) for p in parents):
            self._set(run, rec, JobState.CANCELLED, now)
            self._cascade(run, rec, JobState.CANCELLED, now)
        elif all(services.satisfied(p) for p in parents):
            if rec.spec.delay > 0:
                rec.due_at = now + rec.spec.delay
                self._set(run, rec, JobState.DELAYED, now)
                self._timer(rec)
            else:
                self._enqueue(run, rec, now)

    def _timer(self, rec: JobRecord) -> None:
        assert rec.due_at is not None
        heapq.heappush(self.timers, (rec.due_at, next(self._seq), rec.run_id, rec.spec.id))

    def _enqueue(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        if rec.is_gate:  # a gate is ready: it waits for a human, never for a worker
            self.gates.open(run, rec, now)
            return
        rec.queue_seq = next(self._seq)
        rec.queued_at = now
        entry: Entry = (-rec.spec.priority, rec.queue_seq, run.run_id, rec.spec.id)
        pin = services.restart_worker(rec, self.workers) or self._affinity_worker(run, rec)
        self.ready.push(entry, rec.spec.requirement, pin)
        self._set(run, rec, JobState.QUEUED, now)

    def _affinity_worker(self, run: RunRecord, rec: JobRecord) -> str | None:
        """With affinity, the worker that ran the first parent, if it is still here and capable."""
        if not rec.spec.affinity or not rec.spec.depends_on:
            return None
        name = run.jobs[rec.spec.depends_on[0]].worker
        w = self.workers.get(name) if name else None
        return name if w is not None and not w.draining and rec.spec.requirement in w.caps else None

    def _is_queued_entry(self, entry: Entry) -> bool:
        _, qseq, run_id, job_id = entry
        run = self.runs.get(run_id)
        rec = run.jobs.get(job_id) if run else None
        return rec is not None and rec.state is JobState.QUEUED and rec.queue_seq == qseq

    def _requirement(self, entry: Entry) -> str:
        return self.runs[entry[2]].jobs[entry[3]].spec.requirement

    def _dispatch(self, now: float) -> None:
        """Fill every free slot with the best queued job it can take (see :mod:`.dispatch`)."""
        while True:
            free = [w for w in self.workers.values() if w.free > 0 and not w.draining]
            picked = self.ready.pop_next(free) if free else None
            if picked is None:
                return
            entry, w = picked
            self._assign(entry[2], entry[3], w, now)

    def _assign(self, run_id: str, job_id: str, w: WorkerSlots, now: float) -> None:
        run = self.runs[run_id]
        rec = run.jobs[job_id]
        rec.end_attempt(JobState.FAILED.value)  # a retry: the failed attempt goes to the history
        rec.attempts += 1
        rec.worker = w.name
        rec.dispatched_at = now
        rec.started_at = None
        rec.finished_at = None
        rec.exit_code = None
        rec.error = None
        key = AttemptKey(run_id, job_id, rec.attempts)
        w.running.add(key)
        self._set(run, rec, services.dispatch_state(rec), now)
        self._emit(Dispatch(w.name, key))

    def _requeue(self, run: RunRecord, rec: JobRecord, now: float, outcome: str) -> None:
        """A running attempt ended without an outcome (its worker was lost, the dispatch was not sent):
        it goes to the history and the job back to the queue (the next is attempt + 1, no retry used)."""
        rec.end_attempt(outcome, now)
        rec.worker = None
        rec.service = None
        self._enqueue(run, rec, now)

    def _live(self, key: AttemptKey, name: str) -> JobRecord | None:
        """The job record if ``key`` is its running attempt, held by ``name`` or by no worker yet
        (a worker re-registering after a broker restart reports what it still runs)."""
        run = self.runs.get(key.run_id)
        rec = run.jobs.get(key.job_id) if run else None
        if rec is None or rec.state not in ACTIVE_JOB_STATES or rec.attempts != key.attempt:
            return None
        return rec if rec.worker in (None, name) else None

    def _current(self, name: str, key: AttemptKey) -> JobRecord | None:
        """The job record if this report is about its current, running attempt on that worker."""
        rec = self._live(key, name)
        return rec if rec is not None and rec.worker == name else None

    def _drop_worker(self, name: str, now: float, outcome: str = "LOST") -> None:
        w = self.workers.pop(name)
        self._unpin(name)
        for key in w.running | w.finishing:
            rec = self._current(name, key)
            if rec is not None:
                self._requeue(self.runs[key.run_id], rec, now, outcome)

    def _unpin(self, name: str) -> None:
        """Jobs waiting for this worker (affinity) fall back to any capable worker."""
        self.ready.unpin(name, self._requirement)

    def _stop(self, run: RunRecord, rec: JobRecord, state: JobState, now: float) -> None:
        """End a job now; a running attempt is killed (its slot frees when the worker reports)."""
        if rec.state in ACTIVE_JOB_STATES and rec.worker is not None:
            self._emit(Kill(rec.worker, AttemptKey(run.run_id, rec.spec.id, rec.attempts)))
        rec.due_at = None
        rec.finished_at = rec.finished_at or now
        self._set(run, rec, state, now)

    def _cascade(self, run: RunRecord, root: JobRecord, state: JobState, now: float) -> None:
        """Mark every unfinished descendant of ``root`` with ``state`` (SKIPPED or CANCELLED)."""
        todo = deque(root.children)
        while todo:
            rec = run.jobs[todo.popleft()]
            if not rec.terminal:
                self._stop(run, rec, state, now)
                todo.extend(rec.children)

    def _set(self, run: RunRecord, rec: JobRecord, state: JobState, now: float) -> None:
        was_terminal = rec.terminal
        rec.state = state
        self._emit(Journal(run.run_id, rec.spec.id))
        if rec.terminal and not was_terminal:
            run.open_jobs -= 1
            if state is JobState.CANCELLED:
                run.cancelled += 1
            elif state not in (JobState.COMPLETED, JobState.STOPPED):  # a stopped service ended as asked
                run.failed += 1
            if run.open_jobs == 0 and not run.state.terminal:
                self._finish_run(run, now)

    def _finish_run(self, run: RunRecord, now: float, state: RunState | None = None) -> None:
        if state is None:
            state = RunState.CANCELLED if run.cancelled else RunState.FAILED if run.failed else RunState.SUCCEEDED
        run.state = state
        run.finished_at = now
        self._emit(Journal(run.run_id))
        self._emit(RunFinished(run.run_id, state))
