"""The broker: a ROUTER for clients and workers, a PUB for logs and events, a REQ link to the store.

The loop only moves frames, timers and journal writes; every scheduling decision is the
scheduler's.  Order of effects for anything that changes state: the scheduler decides, the
changed records are journaled to the store (group commit: one batch per loop iteration, or at
once for a client's change, which is replied to only after it), and only then are dispatches,
kills and acknowledgements sent.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from titan_zmq import defaults, sockets
from titan_zmq.broker import journal, recovery
from titan_zmq.broker.api import ClientApi
from titan_zmq.broker.events import EventPublisher
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.registry import WorkerConn, WorkerRegistry
from titan_zmq.broker.scheduler import Action, Dispatch, Journal, Kill, RunFinished, Scheduler
from titan_zmq.broker.worker_link import WorkerLink
from titan_zmq.errors import StoreUnavailable, TitanError
from titan_zmq.protocol import ErrorCode, Flag, Message, Op, ProtocolError, decode, encode, error, error_for
from titan_zmq.states import JobState
from titan_zmq.store.client import StoreClient

log = logging.getLogger("titan.broker")

Handler = Callable[[bytes, Message], bytes | None]
DRAIN_BATCH = 2000  # messages handled per loop iteration before the journal is flushed
RECOVERY_TIMEOUT = 120.0  # seconds the store may take to answer one run's journal at start-up


class Broker:
    def __init__(
        self,
        bind: str = defaults.BROKER_ADDR,
        pub: str = defaults.PUB_ADDR,
        store: str = defaults.STORE_ADDR,
        data_dir: str | Path = defaults.DATA_DIR,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        liveness: int = defaults.HEARTBEAT_LIVENESS,
        retry_backoff: float = defaults.RETRY_BACKOFF,
        max_body: int = defaults.MAX_BODY_BYTES,
        store_timeout: float = defaults.STORE_TIMEOUT,
    ):
        self.bind_addr, self.pub_addr = bind, pub
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.max_body = max_body
        self.ctx = zmq.Context()
        self.router = sockets.router(self.ctx, bind, max_body)
        self.events = EventPublisher(self.ctx, pub)
        self.store = StoreClient(store, timeout=store_timeout)
        self.sched = Scheduler(retry_backoff=retry_backoff)
        self.registry = WorkerRegistry(heartbeat_interval, liveness)
        self.logs = LogStore(self.data_dir / "logs")
        self.interval = heartbeat_interval
        self.dirty: set[tuple[str, str | None]] = set()  # records changed since the last commit
        self.tombstones: list[list[Any]] = []  # deletions of a refused submission's keys, sent first
        self.held: list[Action] = []  # dispatches and kills that wait for the commit
        self.held_acks: dict[bytes, list[list[Any]]] = {}  # worker identity -> outcomes to acknowledge after it
        self.store_ok = True
        self._next_probe = 0.0
        self.unclaimed_deadline: float | None = None  # after a restore: when unreported RUNNING jobs re-queue
        self.running = True
        self.started_at = time.time()
        self.counters = {"bad_frames": 0, "requests": 0, "dispatched": 0, "store_errors": 0,
                         "journal_batches": 0, "journal_records": 0}
        self._last_tick = 0.0
        self.api = ClientApi(self)
        self.link = WorkerLink(self)
        self.handlers: dict[Op, Handler] = {**self.api.handlers(), **self.link.handlers()}

    # ---- loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.events.sock, zmq.POLLIN)
        try:
            self.recover()
            log.info("titan-broker listening on %s (pub %s)", self.bind_addr, self.pub_addr)
            while self.running:
                try:
                    ready = dict(poller.poll(self._poll_timeout_ms()))
                    if self.events.sock in ready:
                        self.events.on_subscriptions()
                    if self.router in ready:
                        self._drain()
                    self._timers(time.time())
                    self.commit()
                except zmq.ContextTerminated:
                    raise
                except Exception:  # a bug must not take the whole cluster down: say it loudly, go on
                    log.exception("error in the broker loop")
                    self.counters["loop_errors"] = self.counters.get("loop_errors", 0) + 1
                    time.sleep(0.05)
        finally:
            self.close()

    def recover(self) -> None:
        """Rebuild every run from the store (waiting for the store if it is not up yet)."""
        t0 = time.time()
        runs = None
        while self.running and runs is None:
            try:
                self.store.ping(timeout=1.0)
                reader = StoreClient(self.store.addr, timeout=RECOVERY_TIMEOUT)  # big journals take a while
                try:
                    runs = recovery.load_runs(reader)
                finally:
                    reader.close()
            except StoreUnavailable:
                log.warning("store %s unavailable: waiting for it before serving", self.store.addr)
                time.sleep(defaults.STORE_RETRY_INTERVAL)
        if runs is None:
            return
        now = time.time()
        self.apply(self.sched.restore(runs, now))
        running = sum(1 for r in runs for j in r.jobs.values() if j.state is JobState.RUNNING)
        if running:
            self.unclaimed_deadline = now + defaults.RESTORE_GRACE
        if runs:
            log.info("recovered %d runs (%d jobs, %d running) in %.2fs", len(runs),
                     sum(len(r.jobs) for r in runs), running, time.time() - t0)

    def _drain(self) -> None:
        for _ in range(DRAIN_BATCH):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_frames(frames)

    def _on_frames(self, frames: list[bytes]) -> None:
        identity, frame = frames[0], frames[-1]
        self.counters["requests"] += 1
        if len(frames) != 2:
            self.counters["bad_frames"] += 1
            self.send(identity, error(ErrorCode.BAD_REQUEST, f"expected one frame per message, got {len(frames) - 1}"))
            return
        try:
            msg = decode(frame, self.max_body)
        except ProtocolError as exc:
            self.counters["bad_frames"] += 1
            self.send(identity, error_for(exc))
            return
        if msg.flags:  # a reply (ACK of a heartbeat, say): counts as liveness only
            self.registry.seen(identity, time.time())
            return
        handler = self.handlers.get(msg.op)
        try:
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_OP, f"op {msg.op.name} is not served by the broker")
            out = handler(identity, msg)
        except ProtocolError as exc:
            self.counters["bad_frames"] += 1
            out = error(exc.code, exc.message, msg.rid)
        except StoreUnavailable as exc:
            out = error(ErrorCode.STORE_UNAVAILABLE, str(exc), msg.rid)
        except TitanError as exc:
            out = error(exc.code, str(exc), msg.rid)
        except Exception as exc:  # never die on a request; say what happened
            log.exception("error handling %s", msg.op.name)
            out = error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", msg.rid)
        if out is not None:
            self.send(identity, out)

    def _poll_timeout_ms(self) -> int:
        now = time.time()
        wake = now + self.interval / 2
        due = self.sched.next_due()
        if due is not None:
            wake = min(wake, due)
        if self.dirty or self.held or self.held_acks:
            wake = min(wake, now + defaults.STORE_RETRY_INTERVAL)
        return max(0, int((wake - now) * 1000) + 1)

    def _timers(self, now: float) -> None:
        self.apply(self.sched.tick(now))
        if self.unclaimed_deadline is not None and now >= self.unclaimed_deadline:
            self.unclaimed_deadline = None
            self.apply(self.sched.requeue_unclaimed(now))
        for conn in self.registry.expired(now):
            log.warning("worker %s silent for %.1fs: lost", conn.name, now - conn.last_seen)
            self.lose_worker(conn, now)
        for conn in self.registry.due_heartbeat(now):
            self.send(conn.identity, encode(Op.HEARTBEAT, {}))
        if now - self._last_tick >= self.interval:
            self._last_tick = now
            self.publish("hb/", {"time": now, "workers": len(self.registry)})

    # ---- effects ---------------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        """Take the scheduler's actions: journal entries now, sends after the next commit."""
        for action in actions:
            if isinstance(action, Journal):
                self.dirty.add((action.run_id, action.job_id))
            elif isinstance(action, RunFinished):
                log.info("run %s %s", action.run_id, action.state.value)
            else:
                self.held.append(action)

    def ack_after_commit(self, identity: bytes, attempt: list[Any]) -> None:
        """Acknowledge a worker's outcome ``[run_id, job_id, attempt]`` once it is journaled; the
        outcomes of one commit go to each worker in one ACK."""
        self.held_acks.setdefault(identity, []).append(attempt)

    def store_available(self) -> bool:
        """Whether the store can take writes; while it is down, probe it at most once a second."""
        if self.store_ok:
            return True
        now = time.time()
        if now < self._next_probe:
            return False
        self._next_probe = now + defaults.STORE_RETRY_INTERVAL
        try:
            self.store.ping(timeout=defaults.STORE_PROBE_TIMEOUT)
        except StoreUnavailable:
            return False
        log.info("store is back: catching up %d records", len(self.dirty))
        self.store_ok = True
        return True

    def store_down(self) -> None:
        self.store_ok = False
        self._next_probe = time.time() + defaults.STORE_RETRY_INTERVAL
        self.counters["store_errors"] += 1

    def commit(self, extra_ops: list[list[Any]] | None = None) -> bool:
        """Journal every dirty record (and ``extra_ops``) in one store batch, then publish and send
        what waited.

        While the store is down nothing is sent that depends on the journal (dispatches, kills,
        completion acknowledgements): it all waits, and goes out once the store took the batch.
        """
        if self.dirty or extra_ops or self.tombstones:
            if not self.store_available():
                return False
            dirty, self.dirty = self.dirty, set()
            ops = self.tombstones + (extra_ops or []) + journal.state_ops(self.sched.runs, dirty)
            try:
                if ops:
                    self.store.batch(ops)
                    self.counters["journal_batches"] += 1
                    self.counters["journal_records"] += len(ops)
            except StoreUnavailable:
                self.dirty |= dirty
                log.error("store unavailable: holding %d records and %d sends", len(self.dirty), len(self.held))
                self.store_down()
                return False
            self.tombstones = []
            self._publish_changes(dirty)
        held, self.held = self.held, []
        for item in held:
            if isinstance(item, Dispatch):
                self.link.send_dispatch(item)
            elif isinstance(item, Kill):
                self.link.send_kill(item)
        acks, self.held_acks = self.held_acks, {}
        for identity, done in acks.items():
            self.send(identity, encode(Op.ACK, {"acks": done}, Flag.REPLY))
        return True

    def forget_run(self, run_id: str) -> None:
        """Undo a submission the store did not take: no trace of it stays, nothing of it is sent.

        The store may have applied the batch after all (a reply lost to a timeout), so deletions of
        every key it could have written go first in the next batch.
        """
        run = self.sched.runs.get(run_id)
        jobs = list(run.jobs) if run else []
        self.tombstones += [["del", journal.run_key(run_id)]] + [
            ["del", key(run_id, j)] for j in jobs for key in (journal.spec_key, journal.job_key)]
        self.sched.discard_run(run_id)
        self.dirty = {d for d in self.dirty if d[0] != run_id}
        self.held = [h for h in self.held if not (isinstance(h, (Dispatch, Kill)) and h.run_id == run_id)]

    def _publish_changes(self, dirty: set[tuple[str, str | None]]) -> None:
        if not self.events.prefixes:
            return
        for run_id, job_id in dirty:
            run = self.sched.runs.get(run_id)
            if run is None:
                continue
            if job_id is None:
                self.publish(f"run/{run_id}/", run.meta())
            elif job_id in run.jobs and self.events.wanted(f"job/{run_id}/"):
                rec = run.jobs[job_id]
                self.publish(
                    f"job/{run_id}/",
                    {"run_id": run_id, "job_id": job_id, "state": rec.state.value,
                     "attempts": rec.attempts, "worker": rec.worker},
                )

    def send(self, identity: bytes, frame: bytes) -> bool:
        try:
            self.router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone; EAGAIN: it is not reading.
            return False  # whether a worker is lost is the heartbeat's decision, not one failed send
        conn = self.registry.by_identity.get(identity)
        if conn is not None:
            conn.last_sent = time.time()
        return True

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.events.publish(topic, body)

    def lose_worker(self, conn: WorkerConn, now: float) -> None:
        self.registry.remove(conn)
        if conn.name not in self.registry.by_name:
            self.apply(self.sched.worker_lost(conn.name, now))

    def new_run_id(self, name: str) -> str:
        slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40].strip("-") or "run"
        return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        try:
            self.commit()
        except Exception:  # closing must not raise
            log.exception("final commit failed")
        self.logs.close()
        self.store.close()
        self.router.close(0)
        self.events.close()
        self.ctx.term()
