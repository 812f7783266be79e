"""The broker's side of the worker link: registration, heartbeats, attempts and their output."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from titan_zmq import defaults, events
from titan_zmq.attempt import AttemptKey, attempts_from_wire
from titan_zmq.broker import services
from titan_zmq.broker.actions import Dispatch, Kill, RunFinished
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit, Send
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.publisher import EventPublisher
from titan_zmq.broker.registry import WorkerConn, WorkerRegistry
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.capabilities import normalise
from titan_zmq.errors import ErrorCode, InvalidRequest
from titan_zmq.protocol import Handler, Message, Op, encode, error, reply

log = logging.getLogger(__name__)
REFUSALS_LOGGED = 20  # refused log batches logged one by one; after that every REFUSALS_EVERY-th
REFUSALS_EVERY = 1000


class WorkerLink:
    """Handles the messages workers send and sends them their attempts.

    It touches only what a worker link needs: the scheduler's worker and attempt events, the
    worker registry, the group commit (actions, acknowledgements after the journal), the log
    store, the event publisher and the project archives.
    """

    def __init__(self, sched: Scheduler, registry: WorkerRegistry, journal: GroupCommit, logs: LogStore,
                 publisher: EventPublisher, blobs: BlobCache, send: Send, counters: dict[str, int],
                 hello: Callable[[], dict[str, Any]]):
        self.sched = sched
        self.registry = registry
        self.journal = journal
        self.logs = logs
        self.publisher = publisher
        self.blobs = blobs
        self.send = send
        self.counters = counters
        self.hello = hello  # what an unknown peer's ping is told: the PUB and store addresses

    def handlers(self) -> dict[Op, Handler]:
        return {
            Op.REGISTER: self.on_register,
            Op.HEARTBEAT: self.on_heartbeat,
            Op.JOB_STARTED: self.on_started,
            Op.JOB_COMPLETE: self.on_complete,
            Op.LOG_BATCH: self.on_log_batch,
            Op.DISCONNECT: self.on_disconnect,
            Op.SERVICE_READY: self.on_service_ready,
        }

    def on_register(self, identity: bytes, msg: Message) -> bytes:
        now = time.time()
        caps = msg.field("caps", list, [defaults.CAPABILITY])
        conn = WorkerConn(
            identity=identity, name=msg.field("name", str), host=msg.field("host", str, "?"),
            pid=msg.field("pid", int, 0), caps=normalise(str(c) for c in caps),
            slots=max(1, msg.field("slots", int, defaults.SLOTS)),
            permanent=bool(msg.body.get("permanent", False)), registered_at=now, last_seen=now,
        )
        old = self.registry.by_name.get(conn.name)
        if old is not None and (old.host, old.pid) != (conn.host, conn.pid) and self.registry.alive(old, now):
            # another live process under the same name: taking over would re-queue its jobs under it
            raise InvalidRequest(f"a worker named {conn.name!r} is already registered from {old.host} pid {old.pid};"
                                 " worker names must be unique (--name / TITAN_WORKER_NAME)")
        if self.registry.add(conn) is not None:
            log.info("worker %s reconnected (new socket)", conn.name)
        self.journal.apply(self.sched.register_worker(
            conn.name, conn.caps, conn.slots, now,
            attempts_from_wire(msg.field("running", list, [])), attempts_from_wire(msg.field("done", list, [])),
            draining=msg.body.get("draining") is True))
        log.info("worker %s registered: host=%s caps=%s slots=%d", conn.name, conn.host, conn.caps, conn.slots)
        return reply(msg, {"name": conn.name, "interval": self.registry.interval, "liveness": self.registry.liveness})

    def on_heartbeat(self, identity: bytes, msg: Message) -> bytes | None:
        if self.registry.seen(identity, time.time()) is not None:
            return None
        # a client ping, or a worker the broker does not know (it restarted): say so
        return reply(msg, {"registered": False, **self.hello()}, Op.HEARTBEAT)

    def _worker(self, identity: bytes) -> WorkerConn | None:
        return self.registry.seen(identity, time.time())

    def on_started(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self._worker(identity)
        if conn is None:
            return error(ErrorCode.UNREGISTERED, "worker is not registered; register again", msg.rid)
        # the broker's clock, the worker's duration
        started = time.time() - max(0.0, float(msg.body.get("ran_for") or 0.0))
        self.journal.apply(self.sched.job_started(conn.name, AttemptKey.of(msg), started))
        return None

    def on_complete(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self._worker(identity)
        if conn is None:
            return error(ErrorCode.UNREGISTERED, "worker is not registered; register again", msg.rid)
        key = AttemptKey.of(msg)
        exit_code = msg.field("exit_code", int)
        now = time.time()
        ran_for = msg.body.get("ran_for")
        if isinstance(ran_for, (int, float)):  # a short job's start is told only here
            self.journal.apply(self.sched.job_started(conn.name, key, now - max(0.0, float(ran_for))))
        self.journal.apply(self.sched.job_finished(conn.name, key, exit_code, now, msg.body.get("error"),
                                                   permanent=msg.body.get("permanent") is True))
        # acknowledged only once the outcome is journaled: until then the worker keeps it in its outbox
        self.journal.ack_after_commit(identity, key)
        return None

    def on_service_ready(self, identity: bytes, msg: Message) -> bytes | None:
        """A service's health check passed: READY, with the address its worker reports."""
        conn = self._worker(identity)
        if conn is None:
            return error(ErrorCode.UNREGISTERED, "worker is not registered; register again", msg.rid)
        port, pid = msg.body.get("port"), msg.body.get("pid")
        self.journal.apply(self.sched.service_ready(
            conn.name, AttemptKey.of(msg), conn.host, port if isinstance(port, int) else None,
            pid if isinstance(pid, int) else None, time.time()))
        return None

    def on_log_batch(self, identity: bytes, msg: Message) -> bytes | None:
        """Output of an attempt, taken only from the connection of the worker that holds the attempt's
        slot (from dispatch until its outcome: batches sent before JOB_COMPLETE arrive before it on
        the same link, so the slot covers the tail) and only in sequence."""
        conn = self._worker(identity)
        key = AttemptKey.of(msg)
        seq, lines = msg.field("seq", int), msg.field("lines", list)
        if conn is None or not self.sched.holds(conn.name, key):
            self._refuse(identity, key, "the sender does not hold this attempt")
            return None
        out = self.logs.append(key.run_id, key.job_id, key.attempt, seq, [[str(s), str(t)] for s, t in lines],
                               time.time(), source=identity)
        if out.refused is not None:
            self._refuse(identity, key, out.refused)
        for flag in out.flags:
            self.journal.apply(self.sched.log_flagged(key.run_id, key.job_id, flag, time.time()))
        if out.records:
            event: events.LogEvent = {"run_id": key.run_id, "job_id": key.job_id, "lines": out.records}
            self.publisher.publish(events.log_topic(key.run_id, key.job_id), dict(event))
        return None

    def _refuse(self, identity: bytes, key: AttemptKey, why: str) -> None:
        n = self.counters["log_batches_refused"] = self.counters.get("log_batches_refused", 0) + 1
        if n <= REFUSALS_LOGGED or n % REFUSALS_EVERY == 0:
            log.warning("log batch for %s/%s attempt %d from %s refused (%d so far): %s",
                        key.run_id, key.job_id, key.attempt, identity.hex(), n, why)

    def on_disconnect(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self.registry.by_identity.get(identity)
        if conn is not None:
            stopped = msg.body.get("reason") == "stopped"
            log.info("worker %s disconnected%s", conn.name, " (stopped)" if stopped else "")
            self.lose(conn, time.time(), "STOPPED" if stopped else "LOST")
        return None

    def lose(self, conn: WorkerConn, now: float, outcome: str = "LOST") -> None:
        """A worker left, was stopped or fell silent: its attempts go back to the queue (unless it
        reconnected)."""
        self.registry.remove(conn)
        if conn.name not in self.registry.by_name:
            self.journal.apply(self.sched.worker_lost(conn.name, now, outcome))

    # ---- sends -------------------------------------------------------------------------------

    def deliver(self, action: Dispatch | Kill | RunFinished) -> None:
        """Carry out a journaled dispatch or kill, or tell the workers a run ended."""
        if isinstance(action, Dispatch):
            self._dispatch(action)
        elif isinstance(action, Kill):
            self._kill(action)
        else:
            self._run_finished(action)

    def _dispatch(self, action: Dispatch) -> None:
        conn = self.registry.by_name.get(action.worker)
        if conn is None:
            return  # lost meanwhile: the scheduler already re-queued the attempt
        rec = self.sched.current_attempt(action.worker, action.key)
        if rec is None:
            return  # overtaken while it waited for the journal (re-queued, cancelled): never send it
        body: dict[str, Any] = {**action.key.fields(), "spec": rec.spec.to_wire()}
        run = self.sched.find_run(action.key.run_id)
        if run is not None and run.agent_run_id:
            body["agent_run_id"] = run.agent_run_id  # TITAN_AGENT_RUN_ID: runs the job submits join it
        extra = services.child_env(run, rec) if run is not None and rec.spec.depends_on else {}
        if extra:  # where its service parents listen; the job's own env wins
            body["spec"]["env"] = {**extra, **rec.spec.env}
        project = rec.spec.project
        if project and project not in conn.blobs:
            data = self.blobs.get(project)
            if data is not None:
                body["project_data"] = data
                conn.blobs.add(project)
        if self.send(conn.identity, encode(Op.DISPATCH, body)):
            self.counters["dispatched"] += 1
        else:  # the worker's queue is full or it is gone: give the attempt back to the queue
            self.journal.apply(self.sched.dispatch_failed(action.worker, action.key, time.time()))

    def _kill(self, action: Kill) -> None:
        conn = self.registry.by_name.get(action.worker)
        if conn is not None:
            self.send(conn.identity, encode(Op.KILL_JOB, action.key.fields()))

    def _run_finished(self, action: RunFinished) -> None:
        """Every worker hears of it (any of them may have run one of its attempts; workers of one host
        share the run's directory), so each can remove what it keeps of the run."""
        frame = encode(Op.RUN_FINISHED, {"run_id": action.run_id})
        for conn in list(self.registry.by_name.values()):
            self.send(conn.identity, frame)
