"""The broker: a ROUTER for clients and workers, a PUB for logs and events, a REQ link to the store.

The loop only moves frames, timers and journal writes; every scheduling decision is the
scheduler's (:mod:`.scheduler`), every journal write and what waits for it is the group
commit's (:mod:`.commit`), and requests are handled by the client API (:mod:`.api`) and the
worker link (:mod:`.worker_link`), each given only the parts it needs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from titan_zmq import defaults, events, sockets
from titan_zmq.broker import recovery
from titan_zmq.broker.api import ClientApi
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.publisher import EventPublisher
from titan_zmq.broker.registry import WorkerRegistry
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.broker.worker_link import WorkerLink
from titan_zmq.errors import ErrorCode, ProtocolError, StoreUnavailable, TitanError
from titan_zmq.protocol import Handler, Op, decode, encode, error, error_for
from titan_zmq.states import JobState
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)

DRAIN_BATCH = 2000  # messages handled per loop iteration before the journal is flushed
RECOVERY_TIMEOUT = 120.0  # seconds the store may take to answer one run's journal at start-up


class Broker:
    """One broker process: owns the sockets, the loop and the timers, and wires the parts together."""

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
        max_log_bytes: int = defaults.MAX_LOG_BYTES,
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
        self.logs = LogStore(self.data_dir / "logs", max_bytes=max_log_bytes)
        self.interval = heartbeat_interval
        self.unclaimed_deadline: float | None = None  # after a restore: when unreported RUNNING jobs re-queue
        self.running = True
        self.started_at = time.time()
        self.counters = {"bad_frames": 0, "requests": 0, "dispatched": 0, "store_errors": 0,
                         "journal_batches": 0, "journal_records": 0, "log_batches_refused": 0}
        self._last_tick = 0.0
        blobs = BlobCache(self.store)
        self.journal = GroupCommit(self.store, self.sched, self.events, self.counters, self.send,
                                   deliver=lambda action: self.link.deliver(action))
        self.link = WorkerLink(self.sched, self.registry, self.journal, self.logs, self.events, blobs, self.send,
                               self.counters, hello=lambda: {"pub": self.pub_addr, "store": self.store.addr})
        self.api = ClientApi(self.sched, self.registry, self.journal, self.store, self.logs, blobs,
                             stats=self.stats, stop=self.stop)
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
                    self.journal.commit()
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
        self.journal.apply(self.sched.restore(runs, now))
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
        if self.journal.pending:
            wake = min(wake, now + defaults.STORE_RETRY_INTERVAL)
        return max(0, int((wake - now) * 1000) + 1)

    def _timers(self, now: float) -> None:
        self.journal.apply(self.sched.tick(now))
        if self.unclaimed_deadline is not None and now >= self.unclaimed_deadline:
            self.unclaimed_deadline = None
            self.journal.apply(self.sched.requeue_unclaimed(now))
        for conn in self.registry.expired(now):
            log.warning("worker %s silent for %.1fs: lost", conn.name, now - conn.last_seen)
            self.link.lose(conn, now)
        for conn in self.registry.due_heartbeat(now):
            self.send(conn.identity, encode(Op.HEARTBEAT, {}))
        if now - self._last_tick >= self.interval:
            self._last_tick = now
            tick: events.HeartbeatEvent = {"time": now, "workers": len(self.registry)}
            self.events.publish(events.HEARTBEAT, dict(tick))

    # ---- effects ---------------------------------------------------------------------------

    def send(self, identity: bytes, frame: bytes) -> bool:
        try:
            self.router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone; EAGAIN: it is not reading.
            return False  # whether a worker is lost is the heartbeat's decision, not one failed send
        conn = self.registry.by_identity.get(identity)
        if conn is not None:
            conn.last_sent = time.time()
        return True

    def stats(self) -> dict[str, Any]:
        """The broker's figures (``titan stats``)."""
        states = self.sched.job_counts()
        runs, active = self.sched.run_counts()
        return {
            "workers": len(self.registry), "runs": runs, "runs_running": active,
            "jobs": states, "queued": states.get(JobState.QUEUED.value, 0),
            "running": states.get(JobState.RUNNING.value, 0), "store_ok": self.journal.store_ok,
            "uptime": time.time() - self.started_at, "rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
            "pub": self.pub_addr, **self.counters, **self.logs.health(),
        }

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        try:
            self.journal.commit()
        except Exception:  # closing must not raise
            log.exception("final commit failed")
        self.logs.close()
        self.store.close()
        self.router.close(0)
        self.events.close()
        self.ctx.term()
