"""Elastic workers, the broker's side: drain, stop and launch requests, and the autoscaler's reports.

- drain: the scheduler gives the worker no new attempts (:meth:`Scheduler.drain_worker`) and the worker
  is told; it exits 0 once its running attempts are done and their outcomes acknowledged.
- stop: the same, or with ``now`` the worker kills its attempts and leaves at once; they go back to the
  queue as attempt + 1 (outcome STOPPED, no retry used) and run elsewhere.
- launch: a new worker process on the broker's host, detached (its own session, no lifeline, its output in
  ``<data-dir>/launched/<name>.log``), reaped by the broker's loop; or, with ``on``, a job on that worker
  that runs a worker (the original's "inception", how workers appear on other hosts without SSH).
- autoscale reports: the controller (``titan autoscale``, its own process) sends its pools and each
  decision with its reason; the broker keeps the latest few for ``titan stats`` and the UI.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from titan_zmq import capabilities, defaults
from titan_zmq.broker import journal as journal_ops
from titan_zmq.broker.commit import GroupCommit, Send
from titan_zmq.broker.registry import WorkerRegistry
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.cli_common import LIFELINE_ENV
from titan_zmq.errors import InvalidRequest, NotFound, StoreUnavailable, TitanError
from titan_zmq.jobspec import JobSpec, parse_job
from titan_zmq.protocol import Handler, Message, Op, encode, reply

log = logging.getLogger(__name__)
LAUNCHED_KEPT = 50  # launches remembered for the stats (pending and recent ends)
OPTIONAL_STR = (str, type(None))


@dataclass
class Launched:
    """A worker process this broker started."""

    name: str
    caps: list[str]
    slots: int
    started_at: float
    popen: subprocess.Popen[bytes] | None  # None: launched as a job on another worker
    run_id: str | None = None
    exit_code: int | None = None
    registered: bool = False

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "capabilities": self.caps, "slots": self.slots, "started_at": self.started_at,
                "pid": self.popen.pid if self.popen is not None else None, "run_id": self.run_id,
                "exit_code": self.exit_code, "registered": self.registered}


class Elastic:
    """Drain, stop and launch workers; keep the autoscaler's latest decisions."""

    def __init__(self, sched: Scheduler, registry: WorkerRegistry, journal: GroupCommit, send: Send,
                 broker_addr: Callable[[], str], workspace: Path, log_dir: Path):
        self.sched = sched
        self.registry = registry
        self.journal = journal
        self.send = send
        self.broker_addr = broker_addr  # the address a worker on this host connects to
        self.workspace = workspace
        self.log_dir = log_dir
        self.launched: dict[str, Launched] = {}
        self.decisions: deque[dict[str, Any]] = deque(maxlen=defaults.AUTOSCALE_DECISIONS)
        self.controller: dict[str, Any] | None = None  # the autoscaler's last report (pools, when)

    def handlers(self) -> dict[Op, Handler]:
        return {
            Op.WORKER_DRAIN: self.on_drain,
            Op.WORKER_STOP: self.on_stop,
            Op.WORKER_LAUNCH: self.on_launch,
            Op.AUTOSCALE_REPORT: self.on_report,
        }

    # ---- drain and stop --------------------------------------------------------------------------

    def _conn_of(self, msg: Message) -> tuple[str, bytes]:
        name = msg.field("worker", str)
        conn = self.registry.by_name.get(name)
        if conn is None:
            raise NotFound(f"no worker {name!r} is registered")
        return name, conn.identity

    def on_drain(self, identity: bytes, msg: Message) -> bytes:
        name, peer = self._conn_of(msg)
        self.journal.apply(self.sched.drain_worker(name, time.time()))
        self.send(peer, encode(Op.WORKER_DRAIN, {}))
        running = len(self.sched.running_on(name))
        log.info("worker %s draining (%d running)", name, running)
        return reply(msg, {"worker": name, "draining": True, "running": running})

    def on_stop(self, identity: bytes, msg: Message) -> bytes:
        name, peer = self._conn_of(msg)
        now = msg.field("now", bool, False)
        self.journal.apply(self.sched.drain_worker(name, time.time()))
        self.send(peer, encode(Op.WORKER_STOP, {"now": now}))
        running = len(self.sched.running_on(name))
        log.info("worker %s stopping%s (%d running)", name, " now" if now else " after its jobs", running)
        return reply(msg, {"worker": name, "stopping": True, "now": now, "running": running})

    # ---- launch ----------------------------------------------------------------------------------

    def on_launch(self, identity: bytes, msg: Message) -> bytes:
        caps = capabilities.normalise(str(c) for c in msg.field("capabilities", list, []))
        slots = msg.field("slots", int, defaults.SLOTS)
        if not 1 <= slots <= 1024:
            raise InvalidRequest("slots: expected 1 to 1024")
        on = msg.field("on", OPTIONAL_STR, None)
        name = msg.field("name", OPTIONAL_STR, None) or f"launched-{secrets.token_hex(3)}"
        if name in self.registry.by_name or name in self.launched:
            raise InvalidRequest(f"a worker named {name!r} exists already")
        if on is not None:
            return reply(msg, self._launch_on(on, name, caps, slots))
        argv = [sys.executable, "-m", "titan_zmq.worker", "--broker", self.broker_addr(), "--name", name,
                "--slots", str(slots), "--workspace", str(self.workspace),
                "--max-silence", str(defaults.LAUNCH_MAX_SILENCE)]
        for cap in caps:
            argv += ["--capability", cap]
        env = {k: v for k, v in os.environ.items() if k != LIFELINE_ENV}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_dir / f"{name}.log", "ab") as out:
                popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env, close_fds=True)
        except OSError as exc:
            raise TitanError(f"could not start a worker: {exc}") from None
        self._remember(Launched(name, caps, slots, time.time(), popen))
        log.info("launched worker %s (pid %d, caps %s, %d slots)", name, popen.pid, caps, slots)
        return reply(msg, {"worker": name, "pid": popen.pid, "capabilities": caps, "slots": slots})

    def _launch_on(self, on: str, name: str, caps: list[str], slots: int) -> dict[str, Any]:
        """A service pinned to worker ``on`` that runs a worker (the original's "inception" model: workers
        appear on other hosts without SSH). It restarts if it crashes (``restart: on-failure``) and ends
        for good when the worker is drained or stopped (a clean exit)."""
        if on not in self.registry.by_name:
            raise NotFound(f"no worker {on!r} is registered")
        args = ["--name", name, "--slots", str(slots)]
        for cap in caps:
            args += ["--capability", cap]
        script = 'exec "${TITAN_PYTHON:-python3}" -m titan_zmq.worker --broker "$TITAN_BROKER" ' \
                 '--workspace "$TITAN_WORKSPACE/worker" "$@"'
        spec: JobSpec = parse_job({"id": "worker", "type": "service", "restart": "on-failure", "health": "none",
                                   "command": ["sh", "-c", script, "titan-worker", *args],
                                   "requirement": f"@{on}"}, "launch")
        if not self.journal.store_available():
            raise StoreUnavailable("store unavailable: the worker was not launched; retry later")
        run_id = f"launch-{name}"[:60] + f"-{secrets.token_hex(3)}"
        self.journal.apply(self.sched.submit(run_id, f"worker {name} on {on}", [spec], time.time()))
        if not self.journal.commit(extra_ops=journal_ops.spec_ops(run_id, [spec])):
            self.journal.forget_run(run_id)
            raise StoreUnavailable("store unavailable: the worker was not launched; retry later")
        self._remember(Launched(name, caps, slots, time.time(), None, run_id=run_id))
        log.info("launching worker %s on %s (run %s)", name, on, run_id)
        return {"worker": name, "on": on, "run_id": run_id, "capabilities": caps, "slots": slots}

    def _remember(self, launched: Launched) -> None:
        self.launched[launched.name] = launched
        while len(self.launched) > LAUNCHED_KEPT:
            oldest = next(n for n, lw in self.launched.items() if lw.popen is None or lw.exit_code is not None)
            del self.launched[oldest]

    def reap(self) -> None:
        """Collect launched processes that ended (no zombies) and note which registered."""
        for lw in self.launched.values():
            if lw.name in self.registry.by_name:
                lw.registered = True
            if lw.popen is not None and lw.exit_code is None:
                code = lw.popen.poll()
                if code is not None:
                    lw.exit_code = code
                    (log.info if code == 0 else log.warning)("launched worker %s exited with %d", lw.name, code)

    # ---- autoscaler ------------------------------------------------------------------------------

    def on_report(self, identity: bytes, msg: Message) -> bytes:
        decisions = msg.field("decisions", list, [])
        for d in decisions[: defaults.AUTOSCALE_DECISIONS]:
            if isinstance(d, dict):
                self.decisions.append({str(k): v for k, v in d.items() if isinstance(v, str | int | float | None)})
        self.controller = {"pools": msg.field("pools", list, []), "controller": msg.field("controller", str, "?"),
                           "at": time.time()}
        return reply(msg, {"ok": True})

    def stats(self) -> dict[str, Any]:
        now = time.time()
        pending = [lw.view() for lw in self.launched.values() if not lw.registered and lw.exit_code is None
                   and now - lw.started_at < defaults.LAUNCH_TIMEOUT]
        return {"launching": pending, "launched": [lw.view() for lw in self.launched.values()],
                "autoscale": {**(self.controller or {}), "decisions": list(self.decisions)}}
