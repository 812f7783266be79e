"""Schedules: the broker's cron records and every decision about them, without I/O (time is passed in).

A schedule holds its options (:mod:`titan_zmq.cron`), the pipeline it runs (the SUBMIT_DAG body, scripts
inline, so workers need nothing local) and its progress: ``last_tick``, the newest tick decided (fired
or skipped), journaled in the same store batch as the run that tick fires, so a tick fires at most once
whatever crashes. :func:`decide` says, at time ``now``, which ticks fire and which are skipped:

- ticks that came due before this broker started (it was down) are *missed*: ``catchup`` none skips
  them, last fires only the newest, all fires every one (at most ``CATCHUP_MAX``, the newest; the rest are
  reported as dropped);
- a tick that came due while the broker ran fires (late if the store was down meanwhile); older ticks
  it finds due at the same time (a store outage) are missed as above;
- ``overlap`` skip skips a tick while the schedule's previous run is still running, allow fires
  anyway, queue keeps the tick (at most ``SCHEDULE_QUEUE_MAX``) and fires it once that run ended.

The broker applies a decision with :meth:`Schedule.after` (a new record, installed once journaled) and
the runs it fired (:mod:`.timetable`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from titan_zmq import cron, defaults
from titan_zmq.cron import ScheduleOptions
from titan_zmq.errors import InvalidRequest

log = logging.getLogger(__name__)

# history entries: [tick, run_id or None, decided_at, outcome]
FIRED, MANUAL = "fired", "run-now"


@dataclass(frozen=True)
class Decision:
    """What to do with one schedule now: the ticks to fire (oldest first), those skipped and why, the
    ticks left waiting (overlap: queue) and the newest tick decided."""

    fire: list[float] = field(default_factory=list)
    skip: list[tuple[float, str]] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)
    last_tick: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.fire or self.skip) and self.last_tick is None


@dataclass
class Schedule:
    """One schedule as the broker keeps it (and journals it, under ``sched/<name>``)."""

    name: str
    options: ScheduleOptions
    pipeline: dict[str, Any]  # name, jobs (wire form), agent_run_id
    created_at: float
    project: str | None = None  # blob id of the project archive, if the pipeline ships one
    enabled: bool = True
    last_tick: float | None = None  # newest tick fired or skipped (None: none yet; counted from created_at)
    last_run: str | None = None  # run id of the newest run it fired
    queued: list[float] = field(default_factory=list)
    history: list[list[Any]] = field(default_factory=list)

    # ---- journal form ---------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options.to_wire(), "pipeline": self.pipeline,
                "created_at": self.created_at, "project": self.project, "enabled": self.enabled,
                "last_tick": self.last_tick, "last_run": self.last_run, "queued": list(self.queued),
                "history": [list(h) for h in self.history]}

    @classmethod
    def from_record(cls, doc: Any) -> Schedule:
        """A journaled schedule; InvalidRequest says why it cannot be taken back."""
        if not isinstance(doc, dict):
            raise InvalidRequest("a schedule record is a map")
        name = cron.check_name(doc.get("name"))
        options = cron.parse_options(doc.get("options"), "options")
        pipeline, created = doc.get("pipeline"), doc.get("created_at")
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("jobs"), list):
            raise InvalidRequest("pipeline: expected a map with jobs")
        if not isinstance(created, int | float) or isinstance(created, bool):
            raise InvalidRequest("created_at: expected a number")
        last_tick, queued, history = doc.get("last_tick"), doc.get("queued") or [], doc.get("history") or []
        if last_tick is not None and not _number(last_tick):
            raise InvalidRequest("last_tick: expected a number")
        if not isinstance(queued, list) or not all(_number(t) for t in queued):
            raise InvalidRequest("queued: expected a list of numbers")
        if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 4 for h in history):
            raise InvalidRequest("history: expected a list of [tick, run, at, outcome]")
        project, last_run = doc.get("project"), doc.get("last_run")
        if not isinstance(project, str | None) or not isinstance(last_run, str | None):
            raise InvalidRequest("project and last_run: expected strings")
        return cls(name=name, options=options, pipeline=pipeline, created_at=float(created), project=project,
                   enabled=doc.get("enabled") is not False, last_tick=last_tick, last_run=last_run,
                   queued=[float(t) for t in queued], history=history)

    # ---- decisions ------------------------------------------------------------------------------

    def next_fire(self, now: float) -> float | None:
        """When the next tick after ``now`` comes (None while paused): what a person is shown."""
        if not self.enabled:
            return None
        return cron.next_tick(self.options.cron, self.options.timezone, max(now, self.since))

    def due_at(self) -> float | None:
        """When the first undecided tick came or comes (in the past after downtime; None while paused)."""
        if not self.enabled:
            return None
        return cron.next_tick(self.options.cron, self.options.timezone, self.since)

    def _copy(self) -> Schedule:
        """A copy sharing the (never changed) options and pipeline."""
        out = copy.copy(self)
        out.queued, out.history = list(self.queued), [list(h) for h in self.history]
        return out

    @property
    def since(self) -> float:
        """Ticks after this are still to be decided."""
        return self.last_tick if self.last_tick is not None else self.created_at

    def after(self, decision: Decision, runs: dict[float, str], now: float) -> Schedule:
        """A copy of this schedule once ``decision`` is carried out (``runs``: tick -> run id fired)."""
        out = self._copy()
        if decision.last_tick is not None:
            out.last_tick = max(decision.last_tick, self.last_tick or decision.last_tick)
        out.queued = list(decision.queued)
        for tick, why in decision.skip:
            out.history.append([tick, None, now, why])
        for tick in decision.fire:
            run_id = runs.get(tick)
            if run_id is not None:
                out.history.append([tick, run_id, now, FIRED])
                out.last_run = run_id
        del out.history[:-defaults.SCHEDULE_HISTORY]
        return out

    def fired_now(self, run_id: str, now: float) -> Schedule:
        """A copy after a run-now (no tick used: the cron goes on as before)."""
        out = self._copy()
        out.history.append([now, run_id, now, MANUAL])
        out.last_run = run_id
        del out.history[:-defaults.SCHEDULE_HISTORY]
        return out

    def paused(self, enabled: bool, now: float) -> Schedule:
        """A copy paused or resumed; ticks that pass while paused are never run (resuming starts from now)."""
        out = self._copy()
        if enabled and not self.enabled:
            out.last_tick = max(now, self.since)
            out.queued = []
        out.enabled = enabled
        return out


def decide(s: Schedule, now: float, started_at: float, running: Callable[[str], bool],
           cap: int = defaults.CATCHUP_MAX) -> Decision:
    """What to do with schedule ``s`` at ``now`` (see the module doc). ``started_at``: when this broker
    began serving (ticks before it were missed); ``running(run_id)``: whether that run still runs."""
    if not s.enabled:
        return Decision(queued=s.queued)
    ticks, dropped = cron.ticks_between(s.options.cron, s.options.timezone, s.since, now, cap + 1)
    busy = s.last_run is not None and running(s.last_run)
    if not ticks and not (s.queued and not busy):
        return Decision(queued=s.queued)
    newest = ticks[-1] if ticks else None
    on_time = [newest] if newest is not None and newest > started_at else []
    missed = ticks[:-1] if on_time else ticks
    chosen, skip = _catch_up(s.options.catchup, missed, bool(on_time), cap, dropped)
    fire: list[float] = []
    queued = list(s.queued)
    if queued and not busy:
        fire.append(queued.pop(0))
        busy = True
    for tick in sorted(chosen + on_time):
        if s.options.overlap == "allow" or not busy:
            fire.append(tick)
            busy = True
        elif s.options.overlap == "skip":
            skip.append((tick, "skipped: the previous run is still running"))
        elif len(queued) < defaults.SCHEDULE_QUEUE_MAX:
            queued.append(tick)
        else:
            skip.append((tick, f"skipped: {defaults.SCHEDULE_QUEUE_MAX} ticks already queued"))
    return Decision(fire=fire, skip=skip, queued=queued, last_tick=newest)


def _catch_up(catchup: str, missed: list[float], on_time: bool, cap: int,
              dropped: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """The missed ticks to run, and the skip noted for the others (one entry for all of them)."""
    if catchup == "all":
        chosen = missed[-cap:]
    elif catchup == "last" and not on_time:
        chosen = missed[-1:]
    else:
        chosen = []
    left = len(missed) - len(chosen)
    if not left and not dropped:
        return chosen, []
    newest_left = max(t for t in missed if t not in chosen) if left else missed[0]
    more = "more than " if dropped else ""
    why = f"skipped: {more}{left or 1} missed tick(s) not run (catchup: {catchup})"
    log.info("%s", why)
    return chosen, [(newest_left, why)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
