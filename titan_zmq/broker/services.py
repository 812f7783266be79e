"""The broker's rules for services (``type: service``): no I/O, called by the scheduler.

A service is a job whose process is meant to keep running. It goes through the same queue, dispatch
and attempt machinery as a job (each start is an attempt, with its own log and history entry), and
these rules decide what differs:

- a dispatched service is STARTING, and READY once its worker reports that the health check passed
  (:func:`ready_info`); its children start when it is READY, not when it exits (:func:`satisfied`);
- when its process exits, :func:`after_exit` decides: restart after a backoff (RESTARTING; 1, 2, 4 ...
  seconds, doubling with each exit inside ``restart_window``, capped at ``SERVICE_BACKOFF_MAX``), end
  FAILED (more than ``max_restarts`` exits inside the window: a crash loop; or ``restart: never``), or
  end COMPLETED (a clean exit under ``on-failure`` or ``never``);
- a stop (``titan stop``) makes it STOPPED (final: a later exit is stale and never restarts it);
- a restart goes back to the worker it ran on when that worker is still there and capable
  (:func:`restart_worker`), so a fixed port stays where clients look for it; a service whose worker
  was lost is placed like any queued job;
- children learn where their service parents listen from their environment (:func:`child_env`).

Exits are counted from the attempts' history (outcome ``EXITED``, with their end times), which is
journaled, so the crash-loop rule and the backoff hold across a broker restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from titan_zmq import defaults
from titan_zmq.broker.records import ATTEMPT_FIELDS, JobRecord, RunRecord
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.states import FAILED_JOB_STATES, JobState

EXITED = "EXITED"  # history outcome of a service attempt whose process exited by itself (counted)
RESTARTED = "RESTARTED"  # ...that was ended by `titan restart` (not counted towards a crash loop)
_OUTCOME = ATTEMPT_FIELDS.index("outcome")
_FINISHED = ATTEMPT_FIELDS.index("finished_at")
_ENV_NAME = re.compile(r"[^A-Za-z0-9]")


def is_service(rec: JobRecord) -> bool:
    return rec.spec.type == "service"


def dispatch_state(rec: JobRecord) -> JobState:
    """The state of a job whose attempt was just given to a worker."""
    return JobState.STARTING if is_service(rec) else JobState.RUNNING


def backoff(exits: int, base: float = defaults.SERVICE_BACKOFF, cap: float = defaults.SERVICE_BACKOFF_MAX) -> float:
    """Seconds before the restart that follows the ``exits``-th exit within the window: 1, 2, 4 ... cap."""
    return float(min(cap, base * 2 ** max(0, exits - 1)))


def exits_in_window(rec: JobRecord, now: float) -> int:
    """How many attempts of the service exited by themselves within its restart window (up to ``now``)."""
    since = now - rec.spec.restart_window
    return sum(1 for h in rec.history
               if h[_OUTCOME] == EXITED and h[_FINISHED] is not None and h[_FINISHED] >= since)


@dataclass(frozen=True, slots=True)
class Exit:
    """What becomes of a service whose process ended: its next state, when it restarts, and why."""

    state: JobState  # RESTARTING, FAILED, COMPLETED
    due_at: float | None = None  # RESTARTING: when it is queued again
    error: str | None = None
    counted: bool = True  # a restart after an exit (titan restart is not one)


def after_exit(rec: JobRecord, exit_code: int, now: float, error: str | None = None, permanent: bool = False,
               requested: bool = False) -> Exit:
    """Decide what follows an exit. The caller has filed the attempt in the history (outcome EXITED,
    or RESTARTED when ``requested``: a ``titan restart``, which restarts at once and counts nothing)."""
    if requested:
        return Exit(JobState.RESTARTING, now, None, counted=False)
    if permanent:  # the worker refused it (its port is taken): a restart would fail the same way
        return Exit(JobState.FAILED, error=error or f"cannot start (exit {exit_code})")
    policy = rec.spec.restart
    if policy == "never" or (policy == "on-failure" and exit_code == 0):
        if exit_code == 0:
            return Exit(JobState.COMPLETED)
        return Exit(JobState.FAILED, error=f"exited with code {exit_code} (restart: never)"
                    + (f": {error}" if error else ""))
    exits = exits_in_window(rec, now)
    if exits > rec.spec.max_restarts:
        return Exit(JobState.FAILED, error=(
            f"crash loop: {exits} exits within {rec.spec.restart_window:g}s (max_restarts {rec.spec.max_restarts});"
            f" last exit code {exit_code}" + (f" ({error})" if error else "")))
    return Exit(JobState.RESTARTING, now + backoff(exits), error)


def restart_worker(rec: JobRecord, workers: Mapping[str, Any]) -> str | None:
    """The worker a restarting service goes back to: the one it ran on, if still there and capable
    (``workers`` maps names to objects with ``caps``)."""
    if not is_service(rec) or rec.state is not JobState.RESTARTING or rec.worker is None:
        return None
    w = workers.get(rec.worker)
    return rec.worker if w is not None and rec.spec.requirement in w.caps else None


# ---- what a service means for its children ------------------------------------------------------


def satisfied(parent: JobRecord) -> bool:
    """A parent lets its children start: a job COMPLETED, a service READY (or done cleanly)."""
    return parent.state is JobState.COMPLETED or (is_service(parent) and parent.state is JobState.READY)


def failed(parent: JobRecord) -> bool:
    """A parent whose children are SKIPPED: DEAD, SKIPPED, a gate refused or expired, or a service that
    ended FAILED."""
    return parent.state in FAILED_JOB_STATES or (is_service(parent) and parent.terminal
                                                                 and parent.state is JobState.FAILED)


def cancelled(parent: JobRecord) -> bool:
    """A parent whose children are CANCELLED: cancelled, or a service stopped before it was READY."""
    return parent.state in (JobState.CANCELLED, JobState.STOPPED)


def env_name(job_id: str) -> str:
    """A job id as it appears in environment variable names: upper case, other characters as '_'."""
    return _ENV_NAME.sub("_", job_id).upper()


def child_env(run: RunRecord, rec: JobRecord) -> dict[str, str]:
    """Where the job's service parents listen: ``TITAN_SERVICE_<ID>_HOST`` / ``_PORT`` / ``_ADDR`` for
    each, and with exactly one service parent also ``PORT``, ``TITAN_SERVICE_HOST``,
    ``TITAN_SERVICE_PORT`` and ``TITAN_SERVICE_ADDR`` (a service child keeps its own PORT)."""
    env: dict[str, str] = {}
    found = []
    for pid in rec.spec.depends_on:
        parent = run.jobs.get(pid)
        info = parent.service if parent is not None and is_service(parent) else None
        if not info:
            continue
        host, port = str(info.get("host")), str(info.get("port"))
        name = env_name(pid)
        env[f"TITAN_SERVICE_{name}_HOST"] = host
        env[f"TITAN_SERVICE_{name}_PORT"] = port
        env[f"TITAN_SERVICE_{name}_ADDR"] = f"{host}:{port}"
        found.append((host, port))
    if len(found) == 1:
        host, port = found[0]
        env.update({"TITAN_SERVICE_HOST": host, "TITAN_SERVICE_PORT": port, "TITAN_SERVICE_ADDR": f"{host}:{port}"})
        if not is_service(rec):
            env["PORT"] = port
    return env


def ready_info(host: str, port: int | None, pid: int | None, now: float) -> dict[str, Any]:
    """The published address of a READY service (journaled with its record)."""
    return {"host": host, "port": port, "pid": pid, "ready_at": now,
            "address": f"{host}:{port}" if port is not None else None}


# ---- service ids ----------------------------------------------------------------------------------


def service_id(run_id: str, job_id: str) -> str:
    """A service's id: ``<run id>/<job id>`` (unique; a bare job id is accepted when it is unambiguous)."""
    return f"{run_id}/{job_id}"


def resolve(ident: str, services: Iterable[JobRecord]) -> JobRecord:
    """The service ``ident`` names: ``RUN/JOB`` exactly, or a bare job id when one live service has it
    (else the newest with it). ``services`` is every known service, oldest first."""
    known = list(services)
    if "/" in ident:
        for rec in known:
            if service_id(rec.run_id, rec.spec.id) == ident:
                return rec
        raise NotFound(f"no service {ident!r} (titan services lists them)")
    named = [rec for rec in known if rec.spec.id == ident]
    live = [rec for rec in named if not rec.terminal]
    if len(live) > 1:
        ids = ", ".join(service_id(r.run_id, r.spec.id) for r in live)
        raise InvalidRequest(f"several live services are called {ident!r}: {ids}; give RUN/JOB")
    if live:
        return live[0]
    if named:
        return named[-1]
    raise NotFound(f"no service {ident!r} (titan services lists them)")


def view(rec: JobRecord, host: str | None, now: float) -> dict[str, Any]:
    """One line of ``titan services``."""
    info = rec.service or {}
    since = info.get("ready_at") if rec.state is JobState.READY else None
    host = info.get("host") or host
    return {
        "id": service_id(rec.run_id, rec.spec.id), "run_id": rec.run_id, "job_id": rec.spec.id,
        "worker": rec.worker, "host": host, "port": info.get("port", rec.spec.port or None),
        "state": rec.state.value, "restarts": rec.restarts, "attempts": rec.attempts,
        "uptime": (now - since) if since else None, "address": info.get("address"),
        "pid": info.get("pid"), "exit_code": rec.exit_code, "error": rec.error,
        "restart": rec.spec.restart, "requirement": rec.spec.requirement,
    }
