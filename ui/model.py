"""What the UI knows about the cluster: an in-memory model with version counters, and no I/O.

:mod:`ui.data` feeds it (broker replies and PUB events, from one background thread); pages read it
from Flask's threads. Every change bumps a version counter of what changed (the run list, one run,
the workers, the broker figures, the connection), so a browser poll compares one integer and
returns ``no_update`` when nothing changed: a poll costs O(changes), never O(jobs).

Jobs are kept only for *watched* runs (a page showing a run's jobs calls :meth:`Model.watch`);
for every other run the model keeps the run's summary (state and count of jobs per state). A watched
run also has a version per job and a *shape* version (its set of jobs and edges), so the Run page asks
for the jobs that changed since the version it shows (:meth:`Model.job_changes`) and patches only those.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from titan_zmq.states import JobState, RunState

HISTORY_SECONDS = 600.0  # how much of the queued/running history the Cluster chart keeps
WATCH_IDLE = 60.0  # a watched run nobody looked at for this long is unwatched (its jobs dropped)
RUNS_KEPT = 5000  # runs kept in memory for the Runs and Agent runs pages (the newest)

TERMINAL_RUN = {s.value for s in RunState if s.terminal}
WAITING = {JobState.PENDING.value, JobState.DELAYED.value, JobState.QUEUED.value}  # no attempt running
EVENT_FIELDS = ("state", "attempts", "worker", "dispatched_at", "started_at", "finished_at", "exit_code")


@dataclass
class RunInfo:
    """One run as the list pages show it."""

    run_id: str
    name: str
    state: str
    created_at: float
    agent_run_id: str | None = None
    finished_at: float | None = None
    jobs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    version: int = 0  # bumped on every change of this run (its summary or one of its jobs)

    @property
    def done(self) -> int:
        """Jobs that reached a terminal state."""
        return sum(n for s, n in self.counts.items() if s in ("COMPLETED", "DEAD", "CANCELLED", "SKIPPED"))


@dataclass
class Watched:
    """A run whose jobs a page shows: its full status, kept up to date from job events."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: OrderedDict[str, int] = field(default_factory=OrderedDict)  # job -> version of its last change,
    # the least recently changed first: the jobs changed since a version are a walk from the end
    shape: int = 0  # version of the last change of its set of jobs or their edges (the graph's layout)
    loaded: bool = False  # the full status arrived at least once
    loaded_at: float = 0.0  # when the full status last arrived
    seen_at: float = 0.0  # the last time a page asked for it


@dataclass
class Connection:
    """Whether the broker answers, and since when it does not."""

    up: bool = False
    since: float | None = None  # when it stopped answering (None while up, or before the first contact)
    last_contact: float | None = None
    error: str = ""


class Model:
    """The UI's picture of the cluster; every method takes the lock, so pages read a consistent view."""

    def __init__(self, runs_kept: int = RUNS_KEPT) -> None:
        self.lock = threading.RLock()
        self.runs_kept = runs_kept
        self.runs: dict[str, RunInfo] = {}
        self.watched: dict[str, Watched] = {}
        self.workers: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.history: deque[tuple[float, int, int]] = deque()  # (time, queued, running)
        self.conn = Connection()
        self.dirty: set[str] = set()  # runs whose summary must be asked for again
        self._clock = 0  # one counter for every version below, so a version never repeats
        self.versions: dict[str, int] = {"runs": 0, "workers": 0, "stats": 0, "conn": 0}

    def _bump(self, *what: str) -> int:
        self._clock += 1
        for w in what:
            self.versions[w] = self._clock
        return self._clock

    def version(self, what: str) -> int:
        with self.lock:
            return self.versions[what]

    # ---- fed by ui.data ---------------------------------------------------------------------

    def set_runs(self, summaries: Iterable[dict[str, Any]], replace: bool = False) -> None:
        """Summaries from LIST_RUNS or a summary STATUS; ``replace`` forgets runs not among them
        (after the broker came back, a run it no longer knows is gone)."""
        with self.lock:
            fresh = {s["run_id"]: s for s in summaries}
            gone = set(self.runs) - set(fresh) if replace else set()
            for run_id in gone:
                del self.runs[run_id]
            if gone:
                self._bump("runs")
            for s in fresh.values():
                self._set_summary(s)
            self._trim()

    def _set_summary(self, s: dict[str, Any]) -> None:
        run = self.runs.get(s["run_id"])
        counts = dict(s.get("counts") or {})
        jobs = int(s["jobs"]) if isinstance(s.get("jobs"), int) else sum(counts.values())
        new = RunInfo(s["run_id"], s.get("name") or s["run_id"], s["state"], float(s["created_at"]),
                      s.get("agent_run_id"), s.get("finished_at"), jobs, counts)
        if run is None or _summary_key(run) != _summary_key(new):
            new.version = self._bump()
            self.runs[new.run_id] = new
            self._bump("runs")

    def _trim(self) -> None:
        if len(self.runs) > self.runs_kept:
            for info in sorted(self.runs.values(), key=lambda r: r.created_at)[: len(self.runs) - self.runs_kept]:
                del self.runs[info.run_id]

    def on_run_event(self, body: dict[str, Any]) -> None:
        """A RunEvent: a run was submitted or changed state; its counts are asked for next."""
        with self.lock:
            run_id = body.get("run_id")
            if not isinstance(run_id, str):
                return
            run = self.runs.get(run_id)
            if run is None:
                run = self.runs[run_id] = RunInfo(run_id, str(body.get("name") or run_id), str(body.get("state")),
                                                  float(body.get("created_at") or time.time()),
                                                  body.get("agent_run_id"))
                self._trim()
            run.state = str(body.get("state", run.state))
            run.finished_at = body.get("finished_at")
            run.version = self._bump("runs")
            self.dirty.add(run_id)
            w = self.watched.get(run_id)
            if w is not None and run.state in TERMINAL_RUN:
                w.loaded_at = 0.0  # the run ended: its last times and exit codes now, not in 2 s

    def on_job_event(self, body: dict[str, Any]) -> None:
        """A JobEvent: a watched run's job changes at once (state, times, exit code, its attempts'
        history); every run's counts are asked for next."""
        with self.lock:
            run_id, job_id = body.get("run_id"), body.get("job_id")
            if not isinstance(run_id, str) or not isinstance(job_id, str):
                return
            self.dirty.add(run_id)
            w = self.watched.get(run_id)
            run = self.runs.get(run_id)
            if w is None or not w.loaded:
                return
            job = w.jobs.get(job_id)
            if job is None:  # added while it runs: its edges come with the next full status, asked for now
                job = w.jobs[job_id] = {"state": None, "depends_on": []}
                w.shape = self._bump()
                w.loaded_at = 0.0
            old = job.get("state")
            job.update({k: body.get(k) for k in EVENT_FIELDS if k in body})
            if not _event_attempt(job, body):
                w.loaded_at = 0.0  # an attempt's end went by unseen (events coalesce): the full status tells
            self._touch(w, job_id)
            if run is not None:
                if old in run.counts:
                    run.counts[old] -= 1
                    if not run.counts[old]:
                        del run.counts[old]
                run.counts[str(body.get("state"))] = run.counts.get(str(body.get("state")), 0) + 1
                run.jobs = max(run.jobs, len(w.jobs))
                run.version = self._bump("runs")

    def _touch(self, w: Watched, job_id: str) -> None:
        w.changed[job_id] = self._bump()
        w.changed.move_to_end(job_id)

    def mark_dirty(self, run_ids: Iterable[str]) -> None:
        with self.lock:
            self.dirty.update(run_ids)

    def take_dirty(self) -> list[str]:
        with self.lock:
            out, self.dirty = sorted(self.dirty), set()
            return out

    def set_status(self, status: dict[str, Any]) -> None:
        """A run's full status (GET_JOB_STATUS): its summary, and its jobs when it is watched (only the
        jobs that differ get a new version)."""
        with self.lock:
            jobs: dict[str, dict[str, Any]] = status.get("jobs") or {}
            counts: dict[str, int] = {}
            for j in jobs.values():
                counts[j["state"]] = counts.get(j["state"], 0) + 1
            self._set_summary({**status, "jobs": len(jobs), "counts": counts})
            w = self.watched.get(status["run_id"])
            if w is None:
                return
            if list(jobs) != list(w.jobs) or any(j.get("depends_on") != w.jobs[k].get("depends_on")
                                                 for k, j in jobs.items()):
                w.shape = self._bump()
            for job_id, j in jobs.items():
                if w.jobs.get(job_id) != j:
                    self._touch(w, job_id)
            for job_id in set(w.changed) - set(jobs):
                del w.changed[job_id]
            w.jobs, w.loaded, w.loaded_at = {k: dict(v) for k, v in jobs.items()}, True, time.time()
            self.runs[status["run_id"]].version = self._bump("runs")

    def set_workers(self, workers: list[dict[str, Any]]) -> None:
        with self.lock:
            workers = sorted(workers, key=lambda w: str(w.get("id")))
            if workers != self.workers:
                self.workers = workers
                self._bump("workers")

    def set_stats(self, stats: dict[str, Any], now: float) -> None:
        with self.lock:
            self.stats = stats
            self.history.append((now, int(stats.get("queued", 0)), int(stats.get("running", 0))))
            while self.history and self.history[0][0] < now - HISTORY_SECONDS:
                self.history.popleft()
            self._bump("stats")

    def broker_up(self, now: float) -> bool:
        """The broker answered; True when that is news (it was down or never seen)."""
        with self.lock:
            self.conn.last_contact = now
            if self.conn.up:
                return False
            self.conn.up, self.conn.since, self.conn.error = True, None, ""
            self._bump("conn")
            return True

    def broker_down(self, now: float, error: str) -> None:
        with self.lock:
            if self.conn.up or self.conn.since is None:
                self.conn.up = False
                self.conn.since = self.conn.last_contact or now
                self.conn.error = error
                self._bump("conn")

    # ---- read by pages ----------------------------------------------------------------------

    def watch(self, run_id: str, now: float | None = None) -> None:
        """Keep this run's jobs (a page shows them); the first call has the full status fetched."""
        with self.lock:
            w = self.watched.setdefault(run_id, Watched())
            w.seen_at = time.time() if now is None else now
            if not w.loaded:
                self.dirty.add(run_id)

    def unwatch_idle(self, now: float) -> None:
        with self.lock:
            for run_id in [r for r, w in self.watched.items() if w.seen_at < now - WATCH_IDLE]:
                del self.watched[run_id]

    def loaded(self, run_id: str) -> bool:
        """Whether a watched run's jobs are here."""
        with self.lock:
            w = self.watched.get(run_id)
            return w is not None and w.loaded

    def status_due(self, run_id: str, now: float, every: float) -> bool | None:
        """For a changed run: None if it is not watched (its summary will do), else whether its full
        status is due (never loaded, or loaded more than ``every`` seconds ago). Job events carry
        states but not times or exit codes, which only the full status has; the wait bounds what a
        busy watched run costs the broker."""
        with self.lock:
            w = self.watched.get(run_id)
            if w is None:
                return None
            return not w.loaded or w.loaded_at <= now - every

    def run(self, run_id: str) -> RunInfo | None:
        with self.lock:
            return self.runs.get(run_id)

    def jobs(self, run_id: str) -> dict[str, dict[str, Any]] | None:
        """A watched run's jobs (a copy), or None before its status arrived."""
        with self.lock:
            w = self.watched.get(run_id)
            return None if w is None or not w.loaded else {k: dict(v) for k, v in w.jobs.items()}

    def job(self, run_id: str, job_id: str) -> dict[str, Any] | None:
        """One job of a watched run (a copy), or None."""
        with self.lock:
            w = self.watched.get(run_id)
            j = w.jobs.get(job_id) if w is not None else None
            return None if j is None else dict(j)

    def job_version(self, run_id: str, job_id: str) -> int:
        """The version of a watched run's job's last change (-1: unknown)."""
        with self.lock:
            w = self.watched.get(run_id)
            return -1 if w is None else w.changed.get(job_id, -1)

    def graph_version(self, run_id: str) -> tuple[int, int]:
        """A watched run's (shape, newest job version): what a graph shows is current when both match."""
        with self.lock:
            w = self.watched.get(run_id)
            if w is None or not w.loaded:
                return -1, -1
            return w.shape, next(reversed(w.changed.values()), 0)

    def job_changes(self, run_id: str, since: int) -> dict[str, dict[str, Any]]:
        """The jobs of a watched run changed after version ``since`` (copies): O(changes), not O(jobs)."""
        with self.lock:
            w = self.watched.get(run_id)
            out: dict[str, dict[str, Any]] = {}
            if w is None:
                return out
            for job_id in reversed(w.changed):
                if w.changed[job_id] <= since:
                    break
                out[job_id] = dict(w.jobs[job_id])
            return out

    def run_version(self, run_id: str) -> int:
        with self.lock:
            run = self.runs.get(run_id)
            return -1 if run is None else run.version

    def list_runs(self, state: str | None = None, name: str = "", agent: str = "",
                  offset: int = 0, limit: int = 50) -> tuple[list[RunInfo], int]:
        """Runs newest first, filtered (state exact; name and agent run id by substring); one page
        of them and how many matched."""
        with self.lock:
            name, agent = name.strip().lower(), agent.strip().lower()
            rows = [r for r in self.runs.values()
                    if (not state or r.state == state) and (not name or name in r.name.lower())
                    and (not agent or agent in (r.agent_run_id or "").lower())]
            rows.sort(key=lambda r: r.created_at, reverse=True)
            return rows[offset:offset + limit], len(rows)

    def agent_groups(self, limit: int = 50) -> list[tuple[str, list[RunInfo]]]:
        """Runs grouped by agent run id: the groups newest activity first, stages in submission order."""
        with self.lock:
            groups: dict[str, list[RunInfo]] = {}
            for r in self.runs.values():
                if r.agent_run_id:
                    groups.setdefault(r.agent_run_id, []).append(r)
            out = [(a, sorted(rs, key=lambda r: r.created_at)) for a, rs in groups.items()]
            out.sort(key=lambda g: g[1][-1].created_at, reverse=True)
            return out[:limit]

    def active_runs(self) -> list[str]:
        with self.lock:
            return [r.run_id for r in self.runs.values() if r.state not in TERMINAL_RUN]


def _event_attempt(job: dict[str, Any], body: dict[str, Any]) -> bool:
    """Bring a job's ``attempts_log`` up to date with a JobEvent; False when the events seen cannot
    say how an attempt ended (events of one commit coalesce; the caller then asks for the full status)."""
    n = body.get("attempts")
    if not isinstance(n, int) or n <= 0:
        return True
    log: list[dict[str, Any]] = job.setdefault("attempts_log", [])
    entry = next((a for a in reversed(log) if a.get("attempt") == n), None)
    state = str(body.get("state"))
    if entry is None:
        entry = {"attempt": n, "worker": None, "dispatched_at": None, "started_at": None, "finished_at": None,
                 "exit_code": None, "error": None, "outcome": state}
        log.append(entry)
    for k in ("worker", "dispatched_at", "started_at", "finished_at", "exit_code"):
        if body.get(k) is not None:
            entry[k] = body[k]
    known = True
    if state not in WAITING:
        entry["outcome"] = state
    elif entry.get("outcome") not in (JobState.FAILED.value, "LOST"):  # back in the queue: failed, or lost
        entry["outcome"] = JobState.FAILED.value if body.get("exit_code") is not None else "LOST"
        known = body.get("exit_code") is not None
    earlier = [a for a in log if a.get("attempt") != n]
    return known and len(earlier) == n - 1 and all(a.get("outcome") != JobState.RUNNING.value for a in earlier)


def _summary_key(r: RunInfo) -> tuple[Any, ...]:
    return (r.name, r.state, r.agent_run_id, r.finished_at, r.jobs, sorted(r.counts.items()))
