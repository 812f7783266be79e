"""The worker agent: a DEALER link to the broker and the loop that drives the executor.

Paranoid-Pirate style: any message from the broker counts as a heartbeat; when the broker
is silent for interval x liveness, the worker closes its socket, opens a new one with a
fresh identity (backoff 1 s doubling to 32 s) and registers again, reporting the attempts
it is still running.  Completions stay in an outbox until the broker acknowledges them,
so an outcome is never lost to a broker restart.

The loop never blocks on work that grows with user data: preparing an attempt (project archive,
script) and removing workspaces run on :class:`~.offload.Offload` threads whose outcomes come back
through a pipe the loop polls.  The worker is a child subreaper, so processes a job left behind are
killed when the job ends (:mod:`.subreaper`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from titan_zmq import defaults, sockets
from titan_zmq.attempt import AttemptKey, attempts_from_wire
from titan_zmq.capabilities import normalise
from titan_zmq.errors import ErrorCode, JobRefused, ProtocolError
from titan_zmq.protocol import Message, Op, decode, encode
from titan_zmq.worker import subreaper
from titan_zmq.worker.executor import Executor, Finished
from titan_zmq.worker.offload import Offload
from titan_zmq.worker.pids import PidRegistry
from titan_zmq.worker.supervisor import Ready, Supervisor
from titan_zmq.worker.workspace import Limits, Workspace

log = logging.getLogger(__name__)
REAP_INTERVAL = 1.0  # seconds between sweeps for orphans of dead workers on this host
ANNOUNCE_AFTER = 0.02  # seconds an attempt runs before JOB_STARTED is sent (shorter ones only complete)


class WorkerAgent:
    """One worker process: its link to the broker, the attempts it runs and the outcomes it still owes.

    ``serve()`` runs the loop until ``stop()``; the loop never blocks on a job (output is read as it
    comes, exits are noticed through pidfds) so heartbeats keep flowing.
    """

    def __init__(
        self,
        broker: str = defaults.BROKER_ADDR,
        capabilities: list[str] | None = None,
        slots: int = defaults.SLOTS,
        permanent: bool = False,
        workspace: str | Path = defaults.WORKSPACE,
        name: str | None = None,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        liveness: int = defaults.HEARTBEAT_LIVENESS,
        limits: Limits | None = None,
        keep_failed_hours: float = defaults.KEEP_FAILED_HOURS,
        max_silence: float = 0.0,
    ):
        self.broker = broker
        self.caps = normalise(capabilities or [])
        self.slots = slots
        self.permanent = permanent
        self.host = socket.gethostname()
        self.name = name or f"{self.host}-{os.getpid()}-{secrets.token_hex(2)}"
        self.workspace = Workspace(workspace, limits)
        self.keep_failed = max(0.0, keep_failed_hours) * 3600.0  # seconds
        self.interval = heartbeat_interval
        self.liveness = liveness
        self.subreaper = subreaper.become_subreaper()
        self.executor = Executor(reap_escaped=self.subreaper)
        self.offload = Offload(defaults.WORKER_THREADS)
        self.preparing: dict[AttemptKey, str | None] = {}  # attempts being prepared off the loop -> kill reason
        self.ended_runs: set[str] = set()  # runs over whose directory waits for an attempt of ours to end
        self.to_clean: list[tuple[AttemptKey | str, bool]] = []  # (attempt, failed) or (run, _), in order
        self.next_sweep = time.time() + defaults.SWEEP_INTERVAL
        self.base_env = dict(os.environ)  # the jobs' environment starts from the worker's
        self.pids = PidRegistry(self.workspace.root)
        self.supervisor = Supervisor()  # services: ports, health checks, stop grace
        self.next_reap = 0.0
        self.outbox: dict[AttemptKey, dict[str, Any]] = {}  # completions not yet acknowledged
        self.backlog: deque[bytes] = deque()  # frames the socket could not take yet (broker slow or gone)
        self.unannounced: dict[AttemptKey, float] = {}  # started attempts not yet reported (JOB_STARTED)
        self.ctx = zmq.Context()
        self.sock: sockets.Socket | None = None
        self.poller = zmq.Poller()
        self._polled_fds: set[int] = set()
        self._poller_sock: sockets.Socket | None = None
        self.running = True
        self.draining = False  # told to drain: takes no new attempts, exits 0 once the running ones are reported
        self.stopped = False  # told to stop now: the broker re-queues what it ran (DISCONNECT says so)
        self.max_silence = max_silence  # exit once the broker was silent this long (0: never; launched workers)
        self.last_recv = self.last_sent = 0.0
        self.reconnect_delay = defaults.RECONNECT_MIN
        self.next_connect = 0.0
        self.handlers: dict[Op, Callable[[Message], None]] = {
            Op.DISPATCH: self.on_dispatch,
            Op.KILL_JOB: self.on_kill,
            Op.HEARTBEAT: self.on_heartbeat,
            Op.ACK: self.on_ack,
            Op.ERROR: self.on_error,
            Op.RUN_FINISHED: self.on_run_finished,
            Op.WORKER_DRAIN: self.on_drain,
            Op.WORKER_STOP: self.on_stop,
        }

    # ---- link ------------------------------------------------------------------------------

    def connect(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.sock = sockets.dealer(self.ctx, self.broker, identity=b"w-" + secrets.token_bytes(8),  # never reused
                                   sndhwm=defaults.WORKER_SNDHWM)
        self.backlog.clear()  # undelivered output of the old link is dropped; outcomes are in the outbox
        now = time.time()
        self.last_recv = now
        self.send(Op.REGISTER, {
            "name": self.name, "host": self.host, "pid": os.getpid(), "caps": self.caps, "slots": self.slots,
            "permanent": self.permanent, "draining": self.draining,
            "running": [list(k) for k in [*self.executor.running(), *self.preparing] if k not in self.outbox],
            "done": [list(k) for k in self.outbox],
        })
        for body in self.outbox.values():  # outcomes the broker may not have recorded yet
            self.send(Op.JOB_COMPLETE, body)
        for w in self.supervisor.ready():  # a broker that restarted may not have heard it
            self._service_ready(w.key, w.port)

    def send(self, op: Op, body: dict[str, Any]) -> None:
        """Send without ever blocking the loop: what the socket cannot take now waits in ``backlog``,
        and while it does, no job output is read (the jobs feel the back-pressure, not the worker)."""
        frame = encode(op, body)
        if not self.backlog and self._try_send(frame):
            return
        self.backlog.append(frame)

    def _try_send(self, frame: bytes) -> bool:
        assert self.sock is not None
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.last_sent = time.time()
        return True

    def _flush_backlog(self) -> None:
        while self.backlog and self._try_send(self.backlog[0]):
            self.backlog.popleft()

    # ---- loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        log.info("titan-worker %s connecting to %s caps=%s slots=%d", self.name, self.broker, self.caps, self.slots)
        self.pids.reap()  # orphans of an earlier worker on this host (a service holding its port) go first
        self.next_reap = time.time() + REAP_INTERVAL
        self.connect()
        try:
            while self.running:
                self._step()
        finally:
            self.close()

    def _watch(self) -> zmq.Poller:
        """The poller over the socket and the attempts' pipes, kept up to date rather than rebuilt."""
        assert self.sock is not None
        if self._poller_sock is not self.sock:
            self.poller, self._polled_fds, self._poller_sock = zmq.Poller(), set(), self.sock
        self.poller.register(self.sock, zmq.POLLIN | (zmq.POLLOUT if self.backlog else 0))
        self.poller.register(self.offload.fd, zmq.POLLIN)
        # back-pressure: while the link is backed up, job output waits in its pipes
        wanted = set() if self.backlog else set(self.executor.fds())
        for fd in self._polled_fds - wanted:
            self.poller.unregister(fd)
        for fd in wanted - self._polled_fds:
            self.poller.register(fd, zmq.POLLIN)
        self._polled_fds = wanted
        return self.poller

    def _step(self) -> None:
        poller = self._watch()
        now = time.time()
        timeout = max(0, int((self._wake(now) - now) * 1000) + 1)
        for item, _ in poller.poll(timeout):
            if item is self.sock:
                self._drain()
            elif item == self.offload.fd:
                self.offload.deliver()
            else:
                self.executor.read(item)
        self._flush_backlog()
        now = time.time()
        self._send_logs(now)
        for fin in self.executor.poll(now):
            self._finish(fin)
        self._supervise(now)
        self._announce(now)
        if self.to_clean:
            self._flush_clean_up()
        if now - self.last_sent >= self.interval and not self.backlog:
            self.send(Op.HEARTBEAT, {})
        if now >= self.next_reap:
            self._housekeeping(now)
        self._maybe_leave(now)
        if now - self.last_recv > self.interval * self.liveness and now >= self.next_connect:
            log.warning("broker silent for %.1fs: reconnecting", now - self.last_recv)
            self.next_connect = now + self.reconnect_delay
            self.reconnect_delay = min(self.reconnect_delay * 2, defaults.RECONNECT_MAX)
            self.connect()

    def _wake(self, now: float) -> float:
        """When the loop must look again even if nothing arrives."""
        wake = min(self.last_sent + self.interval, self.last_recv + self.interval * self.liveness)
        flush = self.executor.next_flush()
        if flush is not None:
            wake = min(wake, flush)
        if self.unannounced:
            wake = min(wake, next(iter(self.unannounced.values())) + ANNOUNCE_AFTER)
        if self.executor.needs_polling:
            wake = min(wake, now + 0.05)  # no pidfd: look for exits of jobs that print nothing
        check = self.supervisor.next_wake(now)
        return wake if check is None else min(wake, check)

    def _supervise(self, now: float) -> None:
        """Services whose health check passed are READY; one not healthy within its timeout is killed."""
        for event in self.supervisor.poll(now):
            if isinstance(event, Ready):
                self._service_ready(event.key, event.port)
            elif self.executor.kill(event.key, event.reason, self.supervisor.stop_grace(event.key)):
                log.warning("%s/%s attempt %d: %s: killing it", *event.key, event.reason)

    def _service_ready(self, key: AttemptKey, port: int) -> None:
        att = self.executor.attempts.get(key)
        if att is not None and att.exit_code is None:
            self.send(Op.SERVICE_READY, {**key.fields(), "port": port, "pid": att.pid})

    def _maybe_leave(self, now: float) -> None:
        """A drained worker leaves once nothing runs and every outcome is acknowledged (journaled);
        a launched worker leaves once its broker has been gone for ``max_silence``."""
        if self.draining and not (self.executor.attempts or self.preparing or self.outbox or self.backlog):
            log.info("drained: nothing left to run or report; exiting")
            self.stop()
        elif self.max_silence and now - self.last_recv > self.max_silence:
            log.warning("broker silent for %.0fs (--max-silence): exiting", now - self.last_recv)
            self.stop()

    def _housekeeping(self, now: float) -> None:
        """Once a second: orphans of dead workers, processes jobs left behind; now and then, old failed workspaces."""
        self.next_reap = now + REAP_INTERVAL
        self.pids.reap()
        if self.subreaper:
            self.executor.sweep()
        if now >= self.next_sweep:
            self.next_sweep = now + defaults.SWEEP_INTERVAL
            keep = self.keep_failed
            self.offload.submit("clean", lambda: self.workspace.sweep_failed(keep))

    def _drain(self) -> None:
        assert self.sock is not None
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_recv = time.time()
            try:
                msg = decode(frame)
            except ProtocolError as exc:
                log.warning("bad frame from broker: %s", exc.message)
                continue
            handler = self.handlers.get(msg.op)
            if handler is not None:
                try:
                    handler(msg)
                except Exception:
                    log.exception("error handling %s", msg.op.name)

    def _send_logs(self, now: float, force: bool = False) -> None:
        for att, seq, lines in self.executor.batches(now, force):
            self.send(Op.LOG_BATCH, {**att.key.fields(), "seq": seq, "lines": lines})

    def _finish(self, fin: Finished) -> None:
        self._send_logs(time.time(), force=True)  # every line goes out before the outcome
        att = self.executor.attempts.get(fin.key)
        if att is not None:
            self.pids.remove(att.pid)
        ran_for = time.time() - att.started_at if att is not None else 0.0
        self.executor.forget(fin.key)
        self.supervisor.forget(fin.key)
        self.unannounced.pop(fin.key, None)
        body = {**fin.key.fields(), "exit_code": fin.exit_code, "error": fin.error, "ran_for": ran_for}
        self.outbox[fin.key] = body
        log.debug("%s/%s attempt %d ended: exit %d", *fin.key, fin.exit_code)
        self.send(Op.JOB_COMPLETE, body)
        # without the subreaper, processes that escaped the group cannot be seen: no directory is reused then
        self._clean_up(fin.key, failed=fin.exit_code != 0, reuse=fin.alone and self.subreaper)

    def _clean_up(self, key: AttemptKey, failed: bool, reuse: bool = False) -> None:
        """The attempt's workspace, and its run's directory if the run is over, go (off the loop, in one
        task per loop turn: see :meth:`_flush_clean_up`). A successful attempt that left its directory
        empty or with a few plain files (its script: most short jobs) is emptied here and kept for the
        run's next attempt (:mod:`.reuse`; only when ``reuse``: nothing of the job outlived it, so nothing
        can write there any more): a few system calls cost less than the hand-off to a thread."""
        if failed or not self.workspace.release_attempt(*key, reuse=reuse):
            self.to_clean.append((key, failed))
        if key.run_id in self.ended_runs and not self._has_live(key.run_id):
            self.ended_runs.discard(key.run_id)
            self.to_clean.append((key.run_id, False))

    def _flush_clean_up(self) -> None:
        todo, self.to_clean = self.to_clean, []
        ws, keep = self.workspace, self.keep_failed

        def clean() -> None:
            for what, failed in todo:
                if isinstance(what, str):
                    ws.remove_run(what)
                else:
                    ws.finish_attempt(*what, failed=failed, keep_failed=keep)

        self.offload.submit("clean", clean)

    def _has_live(self, run_id: str) -> bool:
        return any(k.run_id == run_id for k in [*self.executor.attempts, *self.preparing])

    def _announce(self, now: float) -> None:
        """JOB_STARTED for attempts that have run for a moment; a job that ends sooner says it all
        in its JOB_COMPLETE (one message less per short job)."""
        while self.unannounced:
            key, since = next(iter(self.unannounced.items()))
            if now - since < ANNOUNCE_AFTER:
                return
            del self.unannounced[key]
            att = self.executor.attempts.get(key)
            if att is not None:
                self.send(Op.JOB_STARTED, {**key.fields(), "pid": att.pid, "ran_for": now - att.started_at})

    # ---- messages from the broker ------------------------------------------------------------

    def on_dispatch(self, msg: Message) -> None:
        """Prepare the attempt off the loop (archive, workspace, script); it starts in :meth:`_prepared`."""
        b = msg.body
        key = AttemptKey.of(msg)
        if key in self.executor.attempts or key in self.outbox or key in self.preparing:
            return  # already running or done: a duplicate dispatch is not a second execution
        spec = b.get("spec", {})
        agent = b.get("agent_run_id")
        if isinstance(agent, str) and isinstance(spec, dict):  # the run's agent run, for TITAN_AGENT_RUN_ID
            spec = {**spec, "env": {"TITAN_AGENT_RUN_ID": agent, **(spec.get("env") or {})}}
        data = b.get("project_data")
        self.preparing[key] = None

        def prepare() -> tuple[list[str], Path]:
            if data is not None and spec.get("project"):
                self.workspace.save_blob(spec["project"], data)
            return self.workspace.prepare(*key, spec)

        if not self.workspace.is_quick(key.run_id, spec, data is not None):
            self.offload.submit("prepare", prepare, lambda out, err: self._prepared(key, spec, out, err))
            return
        try:  # a command, a small script, a project already unpacked: a few system calls
            out = prepare()
        except Exception as exc:
            return self._prepared(key, spec, None, exc)
        self._prepared(key, spec, out, None)

    def _prepared(self, key: AttemptKey, spec: dict[str, Any], out: tuple[list[str], Path] | None,
                  err: BaseException | None) -> None:
        """Back on the loop: start the prepared attempt, or report why it cannot start."""
        killed = self.preparing.pop(key, None)
        if killed is not None:
            return self._start_failed(key, f"killed: {killed}", exit_code=143)
        if err is not None or out is None:
            return self._start_failed(key, f"cannot start job: {err}", permanent=isinstance(err, JobRefused))
        argv, cwd = out
        service = spec.get("type") == "service"
        try:
            env = self._env(key, spec, cwd)
            if service:  # its port is checked free on this host (a taken one is refused, never retried)
                env.update(self.supervisor.env(self.supervisor.port_for(key, spec, self.host)))
            # a lower bound of the leader's start time as psutil reports it (whole-second boot time)
            before = time.time() - 2.0
            att = self.executor.start(key, argv, env, str(cwd), None if service else spec.get("timeout"))
        except JobRefused as exc:
            self.supervisor.forget(key)
            return self._start_failed(key, f"cannot start service: {exc}", permanent=True)
        except Exception as exc:  # a job that cannot start is a failed attempt, with the reason in its log
            self.supervisor.forget(key)
            return self._start_failed(key, f"cannot start job: {exc}")
        self.pids.add(att.pid, before)
        if service:
            self.supervisor.watch(key, spec, self.supervisor.ports[key], att.started_at)
        self.unannounced[key] = att.started_at
        return None

    def _start_failed(self, key: AttemptKey, reason: str, exit_code: int = 127, permanent: bool = False) -> None:
        """An attempt that never ran: the reason goes to its log, the outcome to the broker. A refusal of
        the job's input is ``permanent``: the broker does not retry it."""
        log.warning("%s/%s: %s", key.run_id, key.job_id, reason)
        self.send(Op.LOG_BATCH, {**key.fields(), "seq": 0, "lines": [["stderr", f"[titan] {reason}"]]})
        body = {**key.fields(), "exit_code": exit_code, "error": reason, **({"permanent": True} if permanent else {})}
        self.outbox[key] = body
        self.send(Op.JOB_COMPLETE, body)
        self._clean_up(key, failed=True)

    def _env(self, key: AttemptKey, spec: dict[str, Any], cwd: Path) -> dict[str, str]:
        env = dict(self.base_env)
        env.update({
            "TITAN_BROKER": self.broker, "TITAN_RUN_ID": key.run_id, "TITAN_JOB_ID": key.job_id,
            "TITAN_ATTEMPT": str(key.attempt), "TITAN_SHARED_DIR": str(self.workspace.shared_dir(key.run_id)),
            "TITAN_WORKSPACE": str(cwd), "TITAN_WORKER": self.name, "PYTHONUNBUFFERED": "1",
            "TITAN_PYTHON": sys.executable,
        })
        if spec.get("project"):
            env["TITAN_PROJECT_DIR"] = str(self.workspace.run_dir(key.run_id) / "project")
        env.update({str(k): str(v) for k, v in spec.get("env", {}).items()})
        return env

    def on_kill(self, msg: Message) -> None:
        key = AttemptKey.of(msg)
        if key in self.preparing:
            self.preparing[key] = "cancelled"  # it will not start
        elif self.executor.kill(key, "cancelled" if not self.supervisor.is_service(key) else "stopped",
                                self.supervisor.stop_grace(key)):
            log.info("%s/%s attempt %d: killing its process group", *key)

    def on_run_finished(self, msg: Message) -> None:
        """The run ended: its directory goes (once no attempt of it runs here any more)."""
        run_id = msg.field("run_id", str)
        if self._has_live(run_id):
            self.ended_runs.add(run_id)
        else:
            self.to_clean.append((run_id, False))

    def on_drain(self, msg: Message) -> None:
        log.info("draining: no new jobs; exiting once the %d running are done", len(self.executor.attempts))
        self.draining = True

    def on_stop(self, msg: Message) -> None:
        """Stop: with ``now``, at once (running attempts are killed, the broker re-queues them); else drain."""
        if msg.body.get("now") is True:
            log.info("stopping now: killing %d running attempts", len(self.executor.attempts))
            self.stopped = True
            self.stop()
        else:
            self.on_drain(msg)

    def on_heartbeat(self, msg: Message) -> None:
        if msg.body.get("registered") is False:
            log.warning("broker does not know this worker (it restarted?): registering again")
            self.connect()

    def on_ack(self, msg: Message) -> None:
        b = msg.body
        if "name" in b and "interval" in b:
            self.reconnect_delay = defaults.RECONNECT_MIN
            log.info("registered with the broker as %s", b["name"])
        for key in attempts_from_wire(b.get("acks")):  # outcomes the broker has journaled
            self.outbox.pop(key, None)

    def on_error(self, msg: Message) -> None:
        if msg.body.get("code") == ErrorCode.UNREGISTERED:
            self.connect()
        else:
            log.warning("broker error: %s", msg.body.get("message"))

    # ---- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler); :meth:`close` runs when it does."""
        self.running = False

    def close(self) -> None:
        """Kill running attempts, tell the broker, close the socket."""
        self.executor.kill_all("worker stopping")
        deadline = time.time() + defaults.KILL_GRACE + 1
        while self.executor.attempts and time.time() < deadline:
            for fd in self.executor.fds():
                self.executor.read(fd)
            for fin in self.executor.poll(time.time()):
                self.pids.remove(self.executor.attempts[fin.key].pid)
                self.executor.forget(fin.key)
            time.sleep(0.02)
        if self.sock is not None:
            try:
                self.send(Op.DISCONNECT, {"name": self.name, **({"reason": "stopped"} if self.stopped else {})})
                time.sleep(0.05)
            except zmq.ZMQError:
                pass
            self.sock.close(0)
        self.ctx.term()
        if self.subreaper:
            self.executor.sweep()  # nothing a job left behind outlives the worker
        self.offload.close()
        self.supervisor.close()
        self.pids.close()
        self.executor.close()
