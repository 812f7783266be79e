"""The broker's side of schedules: the SCHEDULE_* requests, loading schedules at start, firing due ticks.

Decisions are :mod:`.schedules`' (no I/O); this module carries them out. A tick's run is submitted to the
scheduler like any run and journaled **in the same store batch** as the schedule's new ``last_tick``:
either both are in the store or neither is, so a tick fires at most once across broker crashes and
store outages. A fired run's id is derived from the schedule's name and the tick, so even a batch the
store applied although the broker saw a timeout (its keys are then deleted, see
:meth:`GroupCommit.forget_run`) comes back as the same run, never a second one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any, Protocol

from titan_zmq import cron, defaults, keys
from titan_zmq.broker import journal
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.broker.schedules import Decision, Schedule, decide
from titan_zmq.errors import InvalidRequest, NotFound, StoreUnavailable, TitanError
from titan_zmq.jobspec import JobSpec, check_name, parse_jobs
from titan_zmq.protocol import Handler, Message, Op, pack, reply, unpack
from titan_zmq.store.client import Page

log = logging.getLogger(__name__)
OPTIONAL_STR = (str, type(None))


class ScheduleStore(Protocol):
    def pages(self, prefix: str = "", *, values: bool = False, max_value: int | None = None) -> Iterator[Page]: ...

    def batch(self, ops: list[list[Any]], journal: bool = False) -> list[Any]: ...


def tick_run_id(name: str, tick: float) -> str:
    """The run id of the run ``name`` fires for ``tick``: the same every time it is computed."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(tick))
    digest = hashlib.sha256(f"{name}\0{tick!r}".encode()).hexdigest()[:6]
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{slug}-{stamp}-{digest}"


class Timetable:
    """The schedules the broker owns, their requests and their firing."""

    def __init__(self, sched: Scheduler, journal: GroupCommit, blobs: BlobCache):
        self.sched = sched
        self.journal = journal
        self.blobs = blobs
        self.schedules: dict[str, Schedule] = {}
        self.next_at: dict[str, float | None] = {}  # when each schedule is next looked at
        self.specs: dict[str, list[JobSpec]] = {}  # parsed once per schedule (frozen, shared by its runs)
        self.started_at = time.time()  # ticks before this were missed (set again once recovery is done)

    def handlers(self) -> dict[Op, Handler]:
        return {
            Op.SCHEDULE_ADD: self.on_add,
            Op.SCHEDULE_LIST: self.on_list,
            Op.SCHEDULE_SET: self.on_set,
            Op.SCHEDULE_REMOVE: self.on_remove,
            Op.SCHEDULE_RUN_NOW: self.on_run_now,
        }

    # ---- start -----------------------------------------------------------------------------------

    def load(self, store: ScheduleStore) -> None:
        """Every journaled schedule; one that cannot be read is moved under ``quarantine/`` and logged."""
        bad: list[list[Any]] = []
        for page in store.pages(keys.SCHEDULE, values=True, max_value=defaults.JOURNAL_RECORD_MAX):
            for key, value in page.items.items():
                try:
                    s = Schedule.from_record(unpack(value) if isinstance(value, bytes) else None)
                    if keys.schedule_key(s.name) != key:
                        raise InvalidRequest(f"the record is of schedule {s.name!r}")
                    self._install(s)
                except Exception as exc:  # anything unreadable: never a crash loop
                    log.error("schedule record %s unreadable (%s): quarantined", key, exc)
                    bad += [["set", keys.quarantine_key(key), value, None], ["del", key]]
        if bad:
            try:
                store.batch(bad, journal=True)
            except TitanError as exc:
                log.error("could not quarantine bad schedule records (%s); they are skipped", exc)
        if self.schedules:
            log.info("loaded %d schedules", len(self.schedules))

    def started(self, now: float) -> None:
        """The broker serves from ``now``: ticks that came due before were missed (``catchup``)."""
        self.started_at = now

    # ---- requests --------------------------------------------------------------------------------

    def on_add(self, identity: bytes, msg: Message) -> bytes:
        name = cron.check_name(msg.field("name", str))
        options = cron.parse_options(msg.field("options", dict), "schedule")
        pipeline = msg.field("pipeline", dict)
        jobs = parse_jobs(pipeline.get("jobs"))
        check_name(pipeline.get("name"), "pipeline.name")
        check_name(pipeline.get("agent_run_id"), "pipeline.agent_run_id")
        now = time.time()
        ops, project = self._project(msg, jobs)
        old = self.schedules.get(name)
        s = Schedule(name=name, options=options, created_at=now, project=project, enabled=options.enabled,
                     pipeline={"name": pipeline["name"], "jobs": [j.to_wire() for j in jobs],
                               "agent_run_id": pipeline.get("agent_run_id")})
        if old is not None:  # replaced: its progress stays, so no tick it decided fires again
            s.created_at, s.last_tick, s.last_run, s.history = old.created_at, old.last_tick, old.last_run, old.history
            if not old.enabled and s.enabled:
                s.last_tick = max(now, old.since)
        self.journal.write(ops + [self._op(s)], "the schedule was")
        self._install(s)
        log.info("schedule %s %s: %s (%s)", name, "replaced" if old else "added", options.cron, options.timezone)
        return reply(msg, self.view(s, now))

    def _project(self, msg: Message, jobs: list[JobSpec]) -> tuple[list[list[Any]], str | None]:
        project = msg.body.get("project")
        if project is None:
            return [], None
        if not isinstance(project, dict) or not isinstance(project.get("data"), bytes):
            raise InvalidRequest("project: expected a map with the archive bytes under 'data'")
        blob_id = hashlib.sha256(project["data"]).hexdigest()
        if any(j.project not in (None, blob_id) for j in jobs):
            raise InvalidRequest("project: a job names an archive that is not the one sent")
        self.blobs.remember(blob_id, project["data"])
        return [["set", keys.blob_key(blob_id), project["data"], None]], blob_id

    def on_list(self, identity: bytes, msg: Message) -> bytes:
        now = time.time()
        return reply(msg, {"schedules": [self.view(s, now) for s in sorted(self.schedules.values(),
                                                                           key=lambda s: s.name)]}, Op.DATA)

    def on_set(self, identity: bytes, msg: Message) -> bytes:
        s = self._get(msg.field("name", str))
        now = time.time()
        new = s.paused(msg.field("enabled", bool), now)
        self.journal.write([self._op(new)], "the change was")
        self._install(new)
        log.info("schedule %s %s", s.name, "resumed" if new.enabled else "paused")
        return reply(msg, self.view(new, now))

    def on_remove(self, identity: bytes, msg: Message) -> bytes:
        s = self._get(msg.field("name", str))
        self.journal.write([["del", keys.schedule_key(s.name)]], "the removal was")
        del self.schedules[s.name]
        self.next_at.pop(s.name, None)
        self.specs.pop(s.name, None)
        log.info("schedule %s removed", s.name)
        return reply(msg, {"name": s.name, "removed": True})

    def on_run_now(self, identity: bytes, msg: Message) -> bytes:
        """Fire once now, whatever the cron and ``overlap`` say (a person asked); the cron goes on as before."""
        s = self._get(msg.field("name", str))
        if not self.journal.store_available():
            raise StoreUnavailable("store unavailable: the run was not started; retry later")
        now = time.time()
        run_id = f"{tick_run_id(s.name, now)}-{secrets.token_hex(2)}"
        new = s.fired_now(run_id, now)
        self._submit(s, run_id, now, now)
        if not self.journal.commit(extra_ops=journal.spec_ops(run_id, self.specs[s.name]) + [self._op(new)]):
            self.journal.forget_run(run_id)
            raise StoreUnavailable("store unavailable: the run was not started; retry later")
        self._install(new)
        return reply(msg, {"name": s.name, "run_id": run_id})

    # ---- firing ----------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        due = [t for t in self.next_at.values() if t is not None]
        return min(due) if due else None

    def tick(self, now: float) -> None:
        """Fire what is due (called from the broker's loop, each turn: cheap when nothing is)."""
        for name in list(self.schedules):
            s = self.schedules[name]
            at = self.next_at.get(name)
            waiting = bool(s.queued) and not self._running(s.last_run)
            if not waiting and (at is None or now < at):
                continue
            decision = decide(s, now, self.started_at, self._running)
            if decision.empty and decision.queued == s.queued:
                self.next_at[name] = s.due_at()
                continue
            self._carry_out(s, decision, now)

    def _carry_out(self, s: Schedule, decision: Decision, now: float) -> None:
        """Submit the runs of ``decision`` and journal them with the schedule's progress in one batch."""
        if not self.journal.store_available():
            self.next_at[s.name] = now + defaults.STORE_RETRY_INTERVAL
            return
        runs: dict[float, str] = {}
        for tick in decision.fire:
            run_id = tick_run_id(s.name, tick)
            try:
                self._submit(s, run_id, tick, now)
            except InvalidRequest as exc:  # its run exists: this tick fired already
                log.warning("schedule %s: tick %s not fired again (%s)", s.name, _when(tick), exc)
                continue
            runs[tick] = run_id
        new = s.after(decision, runs, now)
        ops = [op for run_id in runs.values() for op in journal.spec_ops(run_id, self.specs[s.name])]
        if not self.journal.commit(extra_ops=ops + [self._op(new)]):
            for run_id in runs.values():
                self.journal.forget_run(run_id)
            self.next_at[s.name] = now + defaults.STORE_RETRY_INTERVAL
            log.warning("schedule %s: store unavailable, %d tick(s) wait for it", s.name, len(decision.fire))
            return
        for tick, run_id in runs.items():
            log.info("schedule %s fired run %s for tick %s", s.name, run_id, _when(tick))
        for tick, why in decision.skip:
            log.info("schedule %s: tick %s %s", s.name, _when(tick), why)
        self._install(new)

    def _submit(self, s: Schedule, run_id: str, tick: float, now: float) -> None:
        p = s.pipeline
        self.journal.apply(self.sched.submit(run_id, str(p["name"]), self.specs[s.name], now,
                                             agent_run_id=p.get("agent_run_id"), schedule=s.name, tick=tick))

    # ---- helpers ---------------------------------------------------------------------------------

    def _running(self, run_id: str | None) -> bool:
        run = self.sched.find_run(run_id) if run_id else None
        return run is not None and not run.state.terminal

    def _install(self, s: Schedule) -> None:
        old = self.schedules.get(s.name)
        if old is None or old.pipeline is not s.pipeline or s.name not in self.specs:
            self.specs[s.name] = parse_jobs(s.pipeline["jobs"])
        self.schedules[s.name] = s
        self.next_at[s.name] = s.due_at()

    def _get(self, name: str) -> Schedule:
        try:
            return self.schedules[name]
        except KeyError:
            raise NotFound(f"no schedule named {name!r}") from None

    @staticmethod
    def _op(s: Schedule) -> list[Any]:
        return ["set", keys.schedule_key(s.name), pack(s.record()), None]

    def view(self, s: Schedule, now: float) -> dict[str, Any]:
        """The public form (``titan schedules --json``)."""
        history = []
        for tick, run_id, at, outcome in reversed(s.history):
            run = self.sched.find_run(run_id) if run_id else None
            history.append({"tick": tick, "run_id": run_id, "at": at, "outcome": outcome,
                            "state": run.state.value if run is not None else None})
        last = self.sched.find_run(s.last_run) if s.last_run else None
        return {"name": s.name, **s.options.to_wire(), "enabled": s.enabled, "pipeline": s.pipeline["name"],
                "jobs": len(s.pipeline["jobs"]), "next_fire": s.next_fire(now), "last_tick": s.last_tick,
                "last_run": s.last_run, "last_state": last.state.value if last is not None else None,
                "queued": len(s.queued), "history": history, "created_at": s.created_at}


def _when(tick: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(tick)) + f"{tick % 1:.3f}"[1:] + "Z"

