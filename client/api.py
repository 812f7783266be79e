"""TitanClient: the Python API of titan-zmq (a DEALER to the broker plus SUB for events)."""

from __future__ import annotations

import getpass
import hashlib
import io
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import zmq

from client import pipeline
from client.connection import Connection, broker_address
from client.job import TitanJob, wire_jobs
from client.logcursor import LogCursor, LogLine
from titan_zmq import defaults, events, keys, sockets
from titan_zmq.cron import check_name as check_schedule_name
from titan_zmq.cron import parse_options as cron_options
from titan_zmq.errors import (
    BrokerUnavailable,
    InvalidRequest,
    NotFound,
    RunFailed,
    StoreUnavailable,
    TitanError,
    WaitTimeout,
)
from titan_zmq.jobspec import check_name
from titan_zmq.protocol import Op, decode
from titan_zmq.states import TERMINAL_JOB_STATES, RunState
from titan_zmq.store.client import StoreClient

TERMINAL_RUN = {s.value for s in RunState if s.terminal}
TERMINAL_JOB = {s.value for s in TERMINAL_JOB_STATES}
STORE_PROBE = 0.5  # seconds a direct store link gets to answer its first ping
STORE_RETRY = 30.0  # seconds before trying the direct store link again after it failed
RUNS_PAGE = defaults.RUNS_PAGE  # runs asked for per LIST_RUNS request


GATE_POLL = 0.25  # seconds between looks at a run's gates in wait_for_gate


def default_user() -> str:
    """Who decides a gate unless told: $TITAN_USER, else the OS user."""
    try:
        return os.environ.get("TITAN_USER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"uid-{os.getuid()}"


def inherited_agent(agent_run_id: str | None) -> str | None:
    """The agent run a submission joins: the one given, else the submitting job's ($TITAN_AGENT_RUN_ID)."""
    return agent_run_id or os.environ.get("TITAN_AGENT_RUN_ID") or None


def _writable(key: str) -> None:
    if keys.is_reserved(key):  # the store refuses it too; this says so without a round trip
        raise InvalidRequest(keys.reserved_message(key))


class Run:
    """A submitted run: a handle to wait on, inspect, follow and cancel."""

    def __init__(self, client: TitanClient, run_id: str, job_ids: list[str]):
        self.client, self.run_id, self.job_ids = client, run_id, job_ids

    def status(self) -> dict[str, Any]:
        """The run's status document: state and every job's state, attempts, worker, times."""
        return self.client.status(self.run_id)

    @property
    def state(self) -> str:
        """The run's state: RUNNING, SUCCEEDED, FAILED or CANCELLED."""
        return str(self.status()["state"])

    def wait(self, timeout: float | None = None, check: bool = False) -> dict[str, Any]:
        """Block until the run ends; with ``check``, raise RunFailed unless it SUCCEEDED."""
        st = self.client.wait(self.run_id, timeout)
        if check and st["state"] != "SUCCEEDED":
            raise RunFailed(f"run {self.run_id} ended {st['state']}")
        return st

    def logs(self, job_id: str) -> list[str]:
        """Every line a job of this run printed."""
        return self.client.logs(self.run_id, job_id)

    def cancel(self, job_id: str | None = None) -> dict[str, Any]:
        """Cancel one job (and its descendants) or the whole run."""
        return self.client.cancel(self.run_id, job_id)

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"


class TitanClient:
    """The client of a titan-zmq cluster: one DEALER to the broker, a SUB for its events and, when it
    can reach it, a direct link to the store. Every call has a timeout. Not thread-safe."""

    def __init__(self, address: str | None = None, timeout: float | None = None):
        """``address`` defaults to $TITAN_BROKER, then tcp://127.0.0.1:9090; ``timeout`` (seconds per
        request) to $TITAN_TIMEOUT, then 10."""
        self.address = broker_address(address)
        if timeout is None:
            timeout = float(os.environ.get("TITAN_TIMEOUT") or defaults.REQUEST_TIMEOUT)
        self.conn = Connection(self.address, timeout)
        self._events: sockets.Socket | None = None
        self._store: StoreClient | None = None  # direct link to the store, once it answered
        self._store_retry_at = 0.0
        self.chunk_bytes = defaults.ASSET_CHUNK_BYTES  # the size of the pieces assets move in

    def __enter__(self) -> TitanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's sockets."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._events is not None:
            self._events.close(0)
            self._events = None
        self.conn.close()

    def _call(self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.conn.request(op, body, timeout).body

    # ---- submitting ------------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the broker for a sign of life (also tells its PUB and store addresses)."""
        return self._call(Op.HEARTBEAT, {}, timeout)

    def submit_job(self, job: TitanJob, base_dir: str | Path | None = None, agent_run_id: str | None = None) -> Run:
        """Submit one job as a run of its own; scripts are read relative to ``base_dir``. From inside a
        job, the run joins that job's agent run unless ``agent_run_id`` names another."""
        agent_run_id = inherited_agent(agent_run_id)
        check_name(agent_run_id, "agent_run_id")
        body = self._call(Op.SUBMIT_JOB, {"job": job.to_wire(base_dir), "name": job.job_id,
                                          "agent_run_id": agent_run_id})
        return Run(self, body["run_id"], body["jobs"])

    def submit_dag(self, name: str, jobs: list[TitanJob], agent_run_id: str | None = None,
                   base_dir: str | Path | None = None) -> Run:
        """Submit jobs as one run (a DAG through their ``parents``); ``agent_run_id`` groups runs (from
        inside a job it defaults to the job's own, $TITAN_AGENT_RUN_ID)."""
        agent_run_id = inherited_agent(agent_run_id)
        check_name(name, "name")
        check_name(agent_run_id, "agent_run_id")
        wire = wire_jobs(jobs, base_dir)
        body = self._call(Op.SUBMIT_DAG, {"name": name, "jobs": wire, "agent_run_id": agent_run_id})
        return Run(self, body["run_id"], body["jobs"])

    def submit_yaml(self, path: str | Path, wait: bool = False, timeout: float | None = None,
                    agent_run_id: str | None = None) -> Run:
        """Load, check and submit a YAML pipeline; with ``wait``, block until it ends. The agent run is
        ``agent_run_id``, else the pipeline's ``agent_run_id:``, else the submitting job's."""
        pipe = pipeline.load(path)
        sub = pipe.submission()
        agent = agent_run_id or pipe.agent_run_id or inherited_agent(None)
        if agent:
            check_name(agent, "agent_run_id")
            sub["agent_run_id"] = agent
        body = self._call(Op.SUBMIT_DAG, sub, timeout=max(self.conn.timeout, 30.0) if pipe.project else None)
        run = Run(self, body["run_id"], body["jobs"])
        if wait:
            run.wait(timeout)
        return run

    def add_jobs(self, jobs: list[TitanJob], run_id: str | None = None, base_dir: str | Path | None = None) -> list[str]:
        """Add jobs to a run while it executes (from inside a job, the run defaults to $TITAN_RUN_ID)."""
        run_id = run_id or os.environ.get("TITAN_RUN_ID")
        if not run_id:
            raise InvalidRequest("add_jobs needs a run id (or TITAN_RUN_ID in the environment)")
        body = self._call(Op.ADD_JOBS, {"run_id": run_id, "jobs": wire_jobs(jobs, base_dir)})
        return list(body["jobs"])

    def cancel(self, run_id: str, job_id: str | None = None) -> dict[str, Any]:
        """Cancel one job (and its descendants) or a whole run; running processes are killed."""
        return self._call(Op.CANCEL_JOB, {"run_id": run_id, "job_id": job_id})

    # ---- approval gates and agent runs -----------------------------------------------------

    def gates(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Approval gates (of one run, or of every run): those waiting for a decision first (the longest
        waiting first), then decided ones (the latest first). Each: run_id, gate_id, message, state,
        waiting_since, deadline, decision (None, approved, rejected, timed_out, cancelled), decided_by,
        decided_at, comment."""
        return list(self._call(Op.LIST_GATES, {"run_id": run_id})["gates"])

    def _decide(self, run_id: str, gate_id: str, decision: str, comment: str | None, by: str | None) -> dict[str, Any]:
        out = self._call(Op.DECIDE_GATE, {"run_id": run_id, "gate_id": gate_id, "decision": decision,
                                          "by": by or default_user(), "comment": comment})
        out.pop("rid", None)
        return out

    def approve(self, run_id: str, gate_id: str, comment: str | None = None, by: str | None = None) -> dict[str, Any]:
        """Approve a waiting gate (its children run); ``by`` defaults to $TITAN_USER or the OS user.
        Returns the gate once the decision is durable; GateNotPending if it is not waiting (decided already)."""
        return self._decide(run_id, gate_id, "approve", comment, by)

    def reject(self, run_id: str, gate_id: str, reason: str | None = None, by: str | None = None) -> dict[str, Any]:
        """Reject a waiting gate: it ends REJECTED, its descendants SKIPPED, the run FAILED."""
        return self._decide(run_id, gate_id, "reject", reason, by)

    def wait_for_gate(self, run_id: str, gate_id: str | None = None, timeout: float | None = None,
                      decided: bool = False) -> dict[str, Any]:
        """Block until the gate (without ``gate_id``: any gate of the run) waits for a decision or has one;
        with ``decided``, until it has one. Returns the gate; WaitTimeout after ``timeout`` seconds,
        InvalidRequest if the run ends first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for gate in self.gates(run_id):
                if gate_id in (None, gate["gate_id"]) and (gate["decision"] is not None or not decided):
                    return gate
            if self.status(run_id, summary=True)["state"] in TERMINAL_RUN:
                raise InvalidRequest(f"run {run_id} ended without {'gate ' + gate_id if gate_id else 'a gate'}"
                                     f" {'being decided' if decided else 'waiting'}")
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"run {run_id}: no gate {'decided' if decided else 'waiting'} after {timeout:g}s")
            time.sleep(GATE_POLL)

    def agent_runs(self) -> list[dict[str, Any]]:
        """Agent runs (runs grouped by agent_run_id), the most recently active first: agent_run_id, stages
        (their number), state (RUNNING, FAILED, SUCCEEDED), first_activity, last_activity."""
        return list(self._call(Op.LIST_AGENT_RUNS, {})["agent_runs"])

    def agent_run(self, agent_run_id: str) -> dict[str, Any]:
        """One agent run: its state, and its stages (runs) in submission order, each with its state,
        duration and the gates waiting in it."""
        out = self._call(Op.GET_AGENT_RUN, {"agent_run_id": agent_run_id})
        out.pop("rid", None)
        return out

    # ---- schedules -------------------------------------------------------------------------

    def add_schedule(self, path: str | Path, cron: str | None = None, name: str | None = None,
                     **options: Any) -> dict[str, Any]:
        """Schedule a YAML pipeline (its ``schedule:`` block; ``cron`` and ``options`` such as
        ``timezone``, ``catchup``, ``overlap``, ``enabled`` override it). The pipeline, scripts inline, is
        stored with the schedule at the broker. Returns the schedule as ``schedules()`` shows it."""
        pipe = pipeline.load(path)
        raw = {**(pipe.schedule or {}), **{k: v for k, v in options.items() if v is not None}}
        if cron is not None:
            raw["cron"] = cron
        opts = cron_options(raw).to_wire()
        sub = pipe.submission()
        body: dict[str, Any] = {"name": check_schedule_name(name or pipe.name), "options": opts,
                                "pipeline": {k: sub[k] for k in ("name", "jobs", "agent_run_id") if k in sub}}
        if "project" in sub:
            body["project"] = sub["project"]
        return self._call(Op.SCHEDULE_ADD, body, timeout=max(self.conn.timeout, 30.0) if pipe.project else None)

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: its cron and options, next fire time, last run and its state, recent history."""
        return list(self._call(Op.SCHEDULE_LIST)["schedules"])

    def pause_schedule(self, name: str) -> dict[str, Any]:
        """Stop firing (ticks that pass while paused never run)."""
        return self._call(Op.SCHEDULE_SET, {"name": name, "enabled": False})

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Fire again, from the next tick on."""
        return self._call(Op.SCHEDULE_SET, {"name": name, "enabled": True})

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule (the runs it fired stay)."""
        self._call(Op.SCHEDULE_REMOVE, {"name": name})

    def run_schedule_now(self, name: str) -> Run:
        """Fire a schedule once, now (its cron goes on as before)."""
        body = self._call(Op.SCHEDULE_RUN_NOW, {"name": name})
        return Run(self, body["run_id"], [])

    # ---- elastic workers ---------------------------------------------------------------------

    def drain_worker(self, worker: str) -> dict[str, Any]:
        """No new jobs for the worker; it exits 0 once its running jobs are done."""
        return self._call(Op.WORKER_DRAIN, {"worker": worker})

    def stop_worker(self, worker: str, now: bool = False) -> dict[str, Any]:
        """Stop a worker after its running jobs (a drain), or ``now``: its jobs are killed and re-queued
        elsewhere (not counted as failures)."""
        return self._call(Op.WORKER_STOP, {"worker": worker, "now": now})

    def launch_worker(self, capabilities: list[str] | tuple[str, ...] = (), slots: int = defaults.SLOTS,
                      on: str | None = None, name: str | None = None) -> dict[str, Any]:
        """Start a new (ephemeral) worker on the broker's host, or ``on`` a given worker (as a service there).
        Returns its name (and pid, or the run that hosts it)."""
        return self._call(Op.WORKER_LAUNCH, {"capabilities": list(capabilities), "slots": slots, "on": on,
                                             "name": name})

    def report_autoscale(self, controller: str, pools: list[dict[str, Any]],
                         decisions: list[dict[str, Any]]) -> None:
        """The autoscaler's pools and latest decisions, for ``titan stats`` and the UI."""
        self._call(Op.AUTOSCALE_REPORT, {"controller": controller, "pools": pools, "decisions": decisions})

    # ---- watching --------------------------------------------------------------------------

    def status(self, run_id: str | None = None, summary: bool = False, specs: bool = False,
               job_id: str | None = None) -> dict[str, Any]:
        """A run's status document (default: the newest run); with ``summary``, the run's state and
        its number of jobs per state instead of every job (cheap to ask often of a big run). With
        ``specs``, each job carries its ``spec`` (wire form); with ``job_id``, only that job is in it."""
        body: dict[str, Any] = {"run_id": run_id, "summary": summary}
        if specs:
            body["specs"] = True
        if job_id is not None:
            body["job_id"] = job_id
        return self._call(Op.GET_JOB_STATUS, body)

    def run_specs(self, run_id: str) -> list[dict[str, Any]]:
        """The specs of a run's jobs in submission order (wire form, as ``submit`` sends them), jobs
        added while it ran included."""
        jobs = self.status(run_id, specs=True)["jobs"]
        return [dict(j["spec"]) for j in jobs.values()]

    def resubmit(self, run_id: str) -> Run:
        """Submit a run's jobs again, unchanged, as a new run (same name, a new run id)."""
        st = self.status(run_id, specs=True)
        specs = [dict(j["spec"]) for j in st["jobs"].values()]
        body = self._call(Op.SUBMIT_DAG, {"name": st["name"], "jobs": specs, "agent_run_id": None})
        return Run(self, body["run_id"], body["jobs"])

    def runs(self, agent_run_id: str | None = None, limit: int | None = 100,
             before: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first: at most ``limit`` (None: all), optionally only one agent run's, and only
        those submitted before the run ``before``."""
        page = RUNS_PAGE if limit is None else max(1, min(limit, RUNS_PAGE))
        return list(itertools.islice(self.iter_runs(agent_run_id, before, page), limit))

    def iter_runs(self, agent_run_id: str | None = None, before: str | None = None,
                  page: int = RUNS_PAGE) -> Iterator[dict[str, Any]]:
        """Every run, newest first, read from the broker one page (``page`` runs) at a time."""
        while True:
            body = self._call(Op.LIST_RUNS, {"agent_run_id": agent_run_id, "limit": page, "before": before})
            yield from body["runs"]
            before = body.get("next")
            if before is None:
                return

    def workers(self) -> list[dict[str, Any]]:
        """The registered workers: id, host, pid, capabilities, slots, running jobs."""
        return list(self._call(Op.LIST_WORKERS)["workers"])

    def stats(self) -> dict[str, Any]:
        """Broker counters: workers, runs, jobs by state, bad frames, store health, RSS."""
        return self._call(Op.STATS)

    # ---- services ------------------------------------------------------------------------------

    def services(self, include_finished: bool = True) -> list[dict[str, Any]]:
        """Every known service: id (``RUN/JOB``), run_id, job_id, worker, host, port, state, restarts,
        uptime (seconds READY), address (``host:port`` while READY), pid, exit_code, error, and
        ``log_tail`` for a FAILED one. ``include_finished=False`` leaves out services of finished runs."""
        return list(self._call(Op.LIST_SERVICES, {"all": include_finished})["services"])

    def stop_service(self, service_id: str) -> dict[str, Any]:
        """Stop a service for good (STOPPED, never restarted): SIGTERM to its process group, SIGKILL after
        its ``stop_grace``. ``service_id`` is ``RUN/JOB`` or a job id only one live service has."""
        return self._call(Op.STOP_SERVICE, {"service": service_id})

    def restart_service(self, service_id: str) -> dict[str, Any]:
        """Restart a live service now (stopped gracefully, started again at once; not counted as a crash)."""
        return self._call(Op.RESTART_SERVICE, {"service": service_id})

    def _event_socket(self) -> sockets.Socket:
        """One SUB socket kept for the client's life, so waiting on a run costs no new connection."""
        if self._events is None:
            self._events = self.conn.subscribe()
        return self._events

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run finishes; returns its final status. Survives broker restarts.

        Wakes up on the run's events from the broker's PUB socket, and asks for the status at least
        once a second in case an event was missed (a subscription is not instant; a broker restarts).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        topic = events.run_topic(run_id).encode()
        sub: sockets.Socket | None = None
        try:
            while True:
                try:
                    if sub is None:
                        sub = self._event_socket()
                        sub.setsockopt(zmq.SUBSCRIBE, topic)
                    if self.status(run_id, summary=True)["state"] in TERMINAL_RUN:
                        return self.status(run_id)
                except BrokerUnavailable:
                    pass
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"run {run_id} still running after {timeout:g}s")
                pause = 1.0 if left is None else min(1.0, left)
                if sub is None:
                    time.sleep(pause)
                    continue
                end = time.monotonic() + pause
                while (rest := end - time.monotonic()) > 0 and sub.poll(int(rest * 1000) + 1):
                    got, frame = sub.recv_multipart()
                    if got == topic and decode(frame).body.get("state") in TERMINAL_RUN:
                        break
        finally:
            if sub is not None:
                sub.setsockopt(zmq.UNSUBSCRIBE, topic)

    def logs(self, run_id: str, job_id: str) -> list[str]:
        """Every line the job printed, in order, over all its attempts."""
        return [rec[3] for rec in self.log_records(run_id, job_id)]

    def log_page(self, run_id: str, job_id: str, start: int = 0, limit: int | None = None) -> dict[str, Any]:
        """One page of a job's log from line ``start``: ``lines`` (``[n, attempt, stream, text, ts]``),
        ``next`` (the line after them), ``total``, the job's ``state`` and ``done`` (nothing more to come)."""
        body: dict[str, Any] = {"run_id": run_id, "job_id": job_id, "start": start}
        if limit is not None:
            body["limit"] = limit
        return self._call(Op.GET_LOGS, body)

    def log_records(self, run_id: str, job_id: str, start: int = 0) -> list[list[Any]]:
        """Log lines as ``[n, attempt, stream, text, ts]``, from line ``start``."""
        out: list[list[Any]] = []
        while True:
            page = self._call(Op.GET_LOGS, {"run_id": run_id, "job_id": job_id, "start": start})
            out.extend(page["lines"])
            if page["next"] <= start or page["next"] >= page["total"]:
                return out
            start = page["next"]

    def follow_logs(self, run_id: str, job_id: str, timeout: float | None = None) -> Iterator[LogLine]:
        """Yield the backlog, then live lines ``[n, attempt, stream, text, ts]``, until the job ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sub = self.conn.subscribe(events.log_topic(run_id, job_id), events.job_topic(run_id))
        cursor = LogCursor()
        try:
            while True:
                try:
                    page = self._call(Op.GET_LOGS, {"run_id": run_id, "job_id": job_id, "start": cursor.at(job_id)})
                except BrokerUnavailable:
                    page = None
                if page is not None:
                    yield from cursor.backlog(job_id, page)
                    if page["done"]:
                        return
                    if cursor.at(job_id) < page["total"]:
                        continue  # more backlog pages
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"{run_id}/{job_id} still running after {timeout:g}s")
                yield from self._live_lines(sub, cursor, job_id, deadline)
        finally:
            sub.close(0)

    @staticmethod
    def _live_lines(sub: sockets.Socket, cursor: LogCursor, job_id: str, deadline: float | None) -> Iterator[LogLine]:
        """Live lines until the job ends, a gap, a quiet second or the deadline: then the caller asks
        the broker (which also notices a restarted broker)."""
        while deadline is None or time.monotonic() <= deadline:
            if not sub.poll(1000):
                return
            topic, frame = sub.recv_multipart()
            body = decode(frame).body
            if events.is_topic(topic, events.JOB):
                if body.get("job_id") == job_id and body.get("state") in TERMINAL_JOB:
                    return
                continue
            lines, gap = cursor.live(job_id, body.get("lines", []))
            yield from lines
            if gap:
                return

    # ---- shared store ----------------------------------------------------------------------

    def _kv(self, op: Op, body: dict[str, Any]) -> dict[str, Any]:
        """A store request: straight to the store when it is reachable from here (one hop instead of
        two), else through the broker."""
        if self._store is None and time.monotonic() >= self._store_retry_at:
            self._store_retry_at = time.monotonic() + STORE_RETRY
            try:
                store = StoreClient(self.conn.store_address(), timeout=self.conn.timeout)
                try:
                    store.ping(timeout=STORE_PROBE)
                    self._store = store
                except TitanError:
                    store.close()
            except TitanError:
                pass
        if self._store is not None:
            try:
                return self._store.request(op, body)
            except StoreUnavailable:
                self._store.close()
                self._store = None  # the broker's answer says what is wrong, clearly
        return self._call(op, body)

    def store_put(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Set a key to bytes or text, optionally expiring after ``ttl`` seconds."""
        _writable(key)
        self._kv(Op.KV_SET, {"key": key, "value": value, "ttl": ttl})

    def store_get(self, key: str) -> bytes | str | None:
        """A key's value (bytes or text, as stored), or None."""
        body = self._kv(Op.KV_GET, {"key": key})
        return body.get("value") if body.get("found") else None

    def store_delete(self, key: str) -> bool:
        """Delete a key (and a set of that name); True if something was deleted."""
        _writable(key)
        return bool(self._kv(Op.KV_DEL, {"key": key}).get("deleted"))

    def store_incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to an integer key (missing counts as 0); returns the new value."""
        _writable(key)
        return int(self._kv(Op.KV_INCR, {"key": key, "by": by})["value"])

    def store_sadd(self, key: str, member: bytes | str) -> int:
        """Add a member to a set: 1 if it was new, 0 if it was there."""
        _writable(key)
        return int(self._kv(Op.KV_SADD, {"key": key, "member": member})["added"])

    def store_srem(self, key: str, member: bytes | str) -> int:
        """Remove a member from a set: 1 if it was there, 0 if not."""
        _writable(key)
        return int(self._kv(Op.KV_SREM, {"key": key, "member": member})["removed"])

    def store_smembers(self, key: str) -> list[bytes | str]:
        """The members of a set."""
        return list(self._kv(Op.KV_SMEMBERS, {"key": key})["members"])

    def store_keys(self, prefix: str = "") -> list[str]:
        """Keys and set names starting with ``prefix``, sorted (the store answers in pages; all are read)."""
        out: list[str] = []
        after = None
        while True:
            reply = self._kv(Op.KV_KEYS, {"prefix": prefix, "after": after})
            out += reply["keys"]
            after = reply.get("next")
            if after is None:
                return out

    # ---- files -----------------------------------------------------------------------------

    def upload_file(self, path: str | Path, name: str | None = None) -> str:
        """Upload a file as a named asset (default name: the file's name), piece by piece: memory stays
        at one piece (``ASSET_CHUNK_BYTES``) whatever the file's size; the broker refuses a file over
        its ``--max-asset-bytes`` with the first piece."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"no file {str(path)!r}")
        name = name or path.name
        with path.open("rb") as src:
            self._upload(name, src, os.fstat(src.fileno()).st_size)
        return name

    def _upload(self, name: str, src: BinaryIO, size: int) -> dict[str, Any]:
        """Send ``size`` bytes of ``src`` as asset ``name``; the asset appears only once all are in."""
        body: dict[str, Any] = {"name": name, "size": size, "offset": 0, "upload": None}
        timeout = max(self.conn.timeout, 30)
        while True:
            data = src.read(min(self.chunk_bytes, size - body["offset"]))
            if len(data) < min(self.chunk_bytes, size - body["offset"]):
                raise InvalidRequest(f"{name!r}: the file shrank during the upload")
            out = self._call(Op.UPLOAD_ASSET, {**body, "data": data}, timeout=timeout)
            if out.get("done"):
                return out
            body.update(offset=out["received"], upload=out["upload"])

    def _asset_pieces(self, name: str) -> Iterator[tuple[dict[str, Any], bytes]]:
        """An asset's pieces in order, each with the manifest; the sha256 is checked at the end."""
        timeout = max(self.conn.timeout, 30)
        sha = hashlib.sha256()
        index, version, pieces = 0, None, 1
        while index < pieces:
            out = self._call(Op.FETCH_ASSET, {"name": name, "index": index, "id": version}, timeout=timeout)
            version, pieces = out["id"], max(1, int(out["pieces"]))
            sha.update(out["data"])
            yield out, bytes(out["data"])
            index += 1
            if index == pieces and sha.hexdigest() != out["sha256"]:
                raise TitanError(f"asset {name!r}: the downloaded bytes do not match its sha256")

    def fetch_artifact(self, name: str, dest: str | Path | None = None) -> bytes:
        """A named asset's bytes (also written to ``dest`` if given); the whole asset is held in
        memory: :meth:`download_asset` streams a big one to a file instead."""
        data = b"".join(piece for _, piece in self._asset_pieces(name))
        if dest is not None:
            Path(dest).write_bytes(data)
        return data

    def download_asset(self, name: str, dest: str | Path) -> dict[str, Any]:
        """Stream a named asset into the file ``dest`` piece by piece (memory: one piece); ``dest``
        appears, complete and checked, only at the end. Returns ``{"name", "size", "sha256"}``."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        info: dict[str, Any] = {}
        try:
            with part.open("wb") as out:
                for manifest, piece in self._asset_pieces(name):
                    out.write(piece)
                    info = manifest
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        return {"name": name, "size": info.get("size", 0), "sha256": info.get("sha256")}

    def publish_artifact(self, name: str, source: str | Path | bytes, run_id: str | None = None) -> str:
        """Store a file (or bytes) as an artifact of a run (default: the job's own run)."""
        run_id = run_id or os.environ.get("TITAN_RUN_ID")
        if not run_id:
            raise InvalidRequest("publish_artifact needs a run id (or TITAN_RUN_ID in the environment)")
        full = f"runs/{run_id}/{name}"
        if isinstance(source, bytes):
            self._upload(full, io.BytesIO(source), len(source))
        else:
            self.upload_file(source, full)
        return full

    def get_artifact(self, name: str, run_id: str | None = None, dest: str | Path | None = None) -> bytes:
        """An artifact a job of the run published (default run: $TITAN_RUN_ID)."""
        run_id = run_id or os.environ.get("TITAN_RUN_ID")
        if not run_id:
            raise InvalidRequest("get_artifact needs a run id (or TITAN_RUN_ID in the environment)")
        return self.fetch_artifact(f"runs/{run_id}/{name}", dest)
