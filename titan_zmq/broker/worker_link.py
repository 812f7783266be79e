"""The broker's side of the worker link: registration, heartbeats, attempts and their output."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from titan_zmq import defaults
from titan_zmq.broker import journal
from titan_zmq.broker.registry import WorkerConn
from titan_zmq.broker.scheduler import Dispatch, Kill
from titan_zmq.errors import InvalidRequest, StoreUnavailable
from titan_zmq.protocol import BadField, ErrorCode, Message, Op, body_field, encode, error, reply
from titan_zmq.states import JobState

if TYPE_CHECKING:
    from titan_zmq.broker.server import Broker, Handler

log = logging.getLogger("titan.broker")
BLOB_CACHE = 8  # project archives kept in broker memory for dispatch


def field(msg: Message, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """A body field of the right type, or InvalidRequest naming the op and the field."""
    try:
        return body_field(msg.body, name, kind, default)
    except BadField as exc:
        raise InvalidRequest(f"{msg.op.name}: {exc}") from None


def _attempts(items: list[Any]) -> list[tuple[str, str, int]]:
    """[[run_id, job_id, attempt], ...] from a worker, malformed entries dropped."""
    return [(str(r[0]), str(r[1]), int(r[2])) for r in items
            if isinstance(r, list) and len(r) == 3 and isinstance(r[2], int)]


class WorkerLink:
    def __init__(self, broker: Broker):
        self.b = broker
        self._blobs: OrderedDict[str, bytes] = OrderedDict()

    def handlers(self) -> dict[Op, Handler]:
        return {
            Op.REGISTER: self.on_register,
            Op.HEARTBEAT: self.on_heartbeat,
            Op.JOB_STARTED: self.on_started,
            Op.JOB_COMPLETE: self.on_complete,
            Op.LOG_BATCH: self.on_log_batch,
            Op.DISCONNECT: self.on_disconnect,
        }

    def on_register(self, identity: bytes, msg: Message) -> bytes:
        now = time.time()
        caps = field(msg, "caps", list, [defaults.CAPABILITY])
        running = field(msg, "running", list, [])
        conn = WorkerConn(
            identity=identity, name=field(msg, "name", str), host=field(msg, "host", str, "?"),
            pid=field(msg, "pid", int, 0), caps=[str(c) for c in caps], slots=max(1, field(msg, "slots", int, defaults.SLOTS)),
            permanent=bool(msg.body.get("permanent", False)), registered_at=now, last_seen=now,
        )
        old = self.b.registry.by_name.get(conn.name)
        if (old is not None and (old.host, old.pid) != (conn.host, conn.pid)
                and now - old.last_seen <= self.b.interval * self.b.registry.liveness):
            # another live process under the same name: taking over would re-queue its jobs under it
            raise InvalidRequest(f"a worker named {conn.name!r} is already registered from {old.host} pid {old.pid};"
                                 " worker names must be unique (--name / TITAN_WORKER_NAME)")
        if self.b.registry.add(conn) is not None:
            log.info("worker %s reconnected (new socket)", conn.name)
        self.b.apply(self.b.sched.register_worker(
            conn.name, conn.caps, conn.slots, now, _attempts(running), _attempts(field(msg, "done", list, []))))
        log.info("worker %s registered: host=%s caps=%s slots=%d", conn.name, conn.host, conn.caps, conn.slots)
        return reply(msg, {"name": conn.name, "interval": self.b.interval, "liveness": self.b.registry.liveness})

    def on_heartbeat(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self.b.registry.seen(identity, time.time())
        if conn is not None:
            return None
        # a client ping, or a worker the broker does not know (it restarted): say so
        return reply(msg, {"registered": False, "pub": self.b.pub_addr, "store": self.b.store.addr}, Op.HEARTBEAT)


    def on_started(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self.b.registry.seen(identity, time.time())
        if conn is None:
            return error(ErrorCode.UNREGISTERED, "worker is not registered; register again", msg.rid)
        now = time.time()
        started = now - max(0.0, float(msg.body.get("ran_for") or 0.0))  # the broker's clock, the worker's duration
        self.b.apply(self.b.sched.job_started(
            conn.name, field(msg, "run_id", str), field(msg, "job_id", str), field(msg, "attempt", int), started
        ))
        return None

    def on_complete(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self.b.registry.seen(identity, time.time())
        if conn is None:
            return error(ErrorCode.UNREGISTERED, "worker is not registered; register again", msg.rid)
        run_id, job_id, attempt = field(msg, "run_id", str), field(msg, "job_id", str), field(msg, "attempt", int)
        now = time.time()
        ran_for = msg.body.get("ran_for")
        if isinstance(ran_for, (int, float)):  # a short job's start is told only here
            self.b.apply(self.b.sched.job_started(conn.name, run_id, job_id, attempt, now - max(0.0, float(ran_for))))
        actions = self.b.sched.job_finished(
            conn.name, run_id, job_id, attempt, field(msg, "exit_code", int),
            time.time(), msg.body.get("error"),
        )
        self.b.apply(actions)
        # acknowledged only once the outcome is journaled: until then the worker keeps it in its outbox
        self.b.ack_after_commit(identity, [run_id, job_id, attempt])
        return None

    def on_log_batch(self, identity: bytes, msg: Message) -> bytes | None:
        self.b.registry.seen(identity, time.time())
        run_id, job_id = field(msg, "run_id", str), field(msg, "job_id", str)
        lines = field(msg, "lines", list)
        if run_id not in self.b.sched.runs or job_id not in self.b.sched.runs[run_id].jobs:
            return None  # output of a job this broker does not know: nothing to attach it to
        records = self.b.logs.append(
            run_id, job_id, field(msg, "attempt", int), field(msg, "seq", int),
            [[str(s), str(t)] for s, t in lines], time.time(),
        )
        if records:
            self.b.publish(f"log/{run_id}/{job_id}/", {"run_id": run_id, "job_id": job_id, "lines": records})
        return None

    def on_disconnect(self, identity: bytes, msg: Message) -> bytes | None:
        conn = self.b.registry.by_identity.get(identity)
        if conn is not None:
            log.info("worker %s disconnected", conn.name)
            self.b.lose_worker(conn, time.time())
        return None

    # ---- sends -------------------------------------------------------------------------------

    def send_dispatch(self, action: Dispatch) -> None:
        conn = self.b.registry.by_name.get(action.worker)
        if conn is None:
            return  # lost meanwhile: the scheduler already re-queued the attempt
        run = self.b.sched.runs.get(action.run_id)
        rec = run.jobs.get(action.job_id) if run else None
        if (rec is None or rec.state is not JobState.RUNNING or rec.attempts != action.attempt
                or rec.worker != action.worker):
            return  # overtaken while it waited for the journal (re-queued, cancelled): never send it
        body: dict[str, Any] = {
            "run_id": action.run_id, "job_id": action.job_id, "attempt": action.attempt, "spec": rec.spec.to_wire(),
        }
        project = rec.spec.project
        if project and project not in conn.blobs:
            data = self._blob(project)
            if data is not None:
                body["project_data"] = data
                conn.blobs.add(project)
        if self.b.send(conn.identity, encode(Op.DISPATCH, body)):
            self.b.counters["dispatched"] += 1
        else:  # the worker's queue is full or it is gone: give the attempt back to the queue
            self.b.apply(self.b.sched.dispatch_failed(
                action.worker, action.run_id, action.job_id, action.attempt, time.time()))

    def send_kill(self, action: Kill) -> None:
        conn = self.b.registry.by_name.get(action.worker)
        if conn is not None:
            self.b.send(conn.identity, encode(Op.KILL_JOB, {
                "run_id": action.run_id, "job_id": action.job_id, "attempt": action.attempt,
            }))

    def remember_blob(self, blob_id: str, data: bytes) -> None:
        self._blobs[blob_id] = data
        self._blobs.move_to_end(blob_id)
        while len(self._blobs) > BLOB_CACHE:
            self._blobs.popitem(last=False)

    def _blob(self, blob_id: str) -> bytes | None:
        if blob_id in self._blobs:
            return self._blobs[blob_id]
        try:
            data = self.b.store.get(journal.BLOB + blob_id)
        except StoreUnavailable:
            return None
        if isinstance(data, bytes):
            self.remember_blob(blob_id, data)
            return data
        return None


