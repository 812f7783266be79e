"""The broker: a ROUTER for clients and workers, a PUB for logs and events, a REQ link to the store.

The loop only moves frames, timers and journal writes; every scheduling decision is the
scheduler's (:mod:`.scheduler`), every journal write and what waits for it is the group
commit's (:mod:`.commit`), and requests are handled by the client API (:mod:`.api`) and the
worker link (:mod:`.worker_link`), each given only the parts it needs.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from titan_zmq import defaults, events, sockets
from titan_zmq.broker import journal, recovery
from titan_zmq.broker.actions import RunFinished
from titan_zmq.broker.api import ClientApi
from titan_zmq.broker.assets import Assets
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit, Held
from titan_zmq.broker.elastic import Elastic
from titan_zmq.broker.gates import RUN_FINISHED, Notice
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.notify import Notifier
from titan_zmq.broker.publisher import EventPublisher
from titan_zmq.broker.registry import WorkerRegistry
from titan_zmq.broker.retention import Policy, Retention
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.broker.timetable import Timetable
from titan_zmq.broker.worker_link import WorkerLink
from titan_zmq.errors import ErrorCode, ProtocolError, StoreUnavailable, TitanError
from titan_zmq.protocol import Handler, Op, decode, encode, error, error_for
from titan_zmq.refusals import RefusalLog
from titan_zmq.states import JobState
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)

DRAIN_BATCH = 2000  # messages handled per loop iteration before the journal is flushed


def local_address(bind: str) -> str:
    """The address a process on this host connects to, for a bound address (a wildcard means loopback)."""
    scheme, _, rest = bind.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("*", "0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class Stopping(BaseException):
    """A stop signal while the broker loads its state: unwinds the loading at once (not an Exception,
    so no handler on the way swallows it)."""


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
        max_asset: int = defaults.MAX_ASSET_BYTES,
        exposed: list[str] | None = None,
        retain: float | None = defaults.RETAIN_SECONDS,
        retain_runs: int | None = defaults.RETAIN_RUNS,
        max_log_bytes: int = defaults.MAX_LOG_BYTES,
        notify_urls: list[str] | tuple[str, ...] = (),
        worker_workspace: str | Path | None = None,
    ):
        self.bind_addr, self.pub_addr = bind, pub
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.max_body = max_body
        self.exposed = exposed or []  # addresses bound with --insecure (shown in the stats)
        self.ctx = zmq.Context()
        self.router = sockets.router(self.ctx, bind, max_body)
        self.publisher = EventPublisher(self.ctx, pub)
        self.store = StoreClient(store, timeout=store_timeout)
        self.sched = Scheduler(retry_backoff=retry_backoff)
        self.notifier = Notifier(notify_urls)
        self.registry = WorkerRegistry(heartbeat_interval, liveness)
        self.logs = LogStore(self.data_dir / "logs", max_bytes=max_log_bytes)
        self.interval = heartbeat_interval
        self.unclaimed_deadline: float | None = None  # after a restore: when unreported RUNNING jobs re-queue
        self.running = True
        self.loading = False  # recovering at start-up: a stop signal then interrupts at once
        self.retention = Retention(Policy(retain, retain_runs))
        self._next_retention = 0.0
        self.started_at = time.time()
        self.counters = {"bad_frames": 0, "requests": 0, "dispatched": 0, "store_errors": 0,
                         "journal_batches": 0, "journal_records": 0, "log_batches_refused": 0}
        self._last_tick = 0.0
        self.refusals = RefusalLog(log, self.counters)
        blobs = BlobCache(self.store)
        self.journal = GroupCommit(self.store, self.sched, self.publisher, self.counters, self.send,
                                   deliver=self._deliver,
                                   finished=lambda run_id: self.retention.finished(run_id, time.time()))
        self.link = WorkerLink(self.sched, self.registry, self.journal, self.logs, self.publisher, blobs, self.send,
                               self.counters, hello=lambda: {"pub": self.pub_addr, "store": self.store.addr})
        self.api = ClientApi(self.sched, self.registry, self.journal, self.store, self.logs, blobs,
                             stats=self.stats, stop=self.stop, assets=Assets(self.store, max_asset))
        self.timetable = Timetable(self.sched, self.journal, blobs)
        self.elastic = Elastic(self.sched, self.registry, self.journal, self.send, lambda: local_address(self.bind_addr),
                               Path(worker_workspace) if worker_workspace else self.data_dir / "work",
                               self.data_dir / "launched")
        self.handlers: dict[Op, Handler] = {**self.api.handlers(), **self.link.handlers(),
                                            **self.timetable.handlers(), **self.elastic.handlers()}

    # ---- loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.publisher.sock, zmq.POLLIN)
        try:
            try:
                self.recover()
            except Stopping:
                log.info("stopped while loading the journal")
                return
            log.info("titan-broker listening on %s (pub %s)", self.bind_addr, self.pub_addr)
            while self.running:
                try:
                    ready = dict(poller.poll(self._poll_timeout_ms()))
                    if self.publisher.sock in ready:
                        self.publisher.on_subscriptions()
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
        """Rebuild every run from the store (waiting for the store if it is not up yet).

        A stop signal meanwhile raises :class:`Stopping` out of whatever it interrupts (see
        :meth:`interrupt`): the journal is only read here, so there is nothing to finish.
        """
        t0 = time.time()
        runs = None
        self.loading = True
        gc.disable()  # a long history is millions of new objects: collections meanwhile would only rescan them
        try:
            while self.running and runs is None:
                try:
                    self.store.ping(timeout=1.0)
                    reader = StoreClient(self.store.addr, timeout=defaults.RECOVERY_PAGE_TIMEOUT)
                    try:
                        runs = recovery.load_runs(reader)
                        self.timetable.load(reader)
                    finally:
                        reader.close()
                except StoreUnavailable:
                    log.warning("store %s unavailable: waiting for it before serving", self.store.addr)
                    time.sleep(defaults.STORE_RETRY_INTERVAL)
            if runs is None:
                return
            now = time.time()
            self.retention.restored((r.run_id, r.finished_at or r.created_at) for r in runs if r.state.terminal)
            self.journal.apply(self.sched.restore(runs, now))
        finally:
            self.loading = False
            gc.enable()
        gc.freeze()  # what was loaded is long-lived: later collections need not walk it again
        self.timetable.started(time.time())  # cron ticks that came due before now were missed
        running = sum(1 for r in runs for j in r.jobs.values() if j.state is JobState.RUNNING)
        if running:
            self.unclaimed_deadline = now + defaults.RESTORE_GRACE
        if runs:
            log.info("recovered %d runs (%d jobs, %d running) in %.2fs", len(runs),
                     sum(len(r.jobs) for r in runs), running, time.time() - t0)

    def retire(self, now: float) -> None:
        """One slice of retention: finished runs due to leave are forgotten, their journal keys deleted
        with the next commit and their logs removed (see :mod:`.retention`)."""
        due = self.retention.take(now, defaults.RETENTION_SLICE, self._journal_keys)
        # a full slice: more may be due, come back at the next iteration rather than in a second
        self._next_retention = now + (0.0 if due and self.retention.due(now) else defaults.RETENTION_INTERVAL)
        for run in self.sched.forget_finished(due):
            self.journal.delete(journal.delete_ops(run.run_id, run.jobs))
            self.logs.remove_run(run.run_id, run.jobs)
        if due:
            self.counters["runs_retired"] = self.counters.get("runs_retired", 0) + len(due)

    def _journal_keys(self, run_id: str) -> int:
        run = self.sched.find_run(run_id)
        return 1 + 2 * len(run.jobs) if run is not None else 1

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
            self._refuse(identity, ProtocolError(ErrorCode.BAD_REQUEST,
                                                 f"expected one frame per message, got {len(frames) - 1}"))
            return
        try:
            msg = decode(frame, self.max_body)
        except ProtocolError as exc:
            self._refuse(identity, exc)
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
            exc.rid = msg.rid
            self._refuse(identity, exc)
            return
        except StoreUnavailable as exc:
            out = error(ErrorCode.STORE_UNAVAILABLE, str(exc), msg.rid)
        except TitanError as exc:
            out = error(exc.code, str(exc), msg.rid)
        except Exception as exc:  # never die on a request; say what happened
            log.exception("error handling %s", msg.op.name)
            out = error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", msg.rid)
        if out is not None:
            self.send(identity, out)

    def _refuse(self, identity: bytes, exc: ProtocolError) -> None:
        """Count, log and answer a frame the broker refuses."""
        conn = self.registry.by_identity.get(identity)
        self.refusals.refused(f"{conn.name if conn else 'peer'} {identity.hex()}", exc.code, exc.message)
        self.send(identity, error_for(exc))

    def _poll_timeout_ms(self) -> int:
        now = time.time()
        wake = now + self.interval / 2
        due = self.sched.next_due()
        if due is not None:
            wake = min(wake, due)
        if self.journal.pending:
            wake = min(wake, now + defaults.STORE_RETRY_INTERVAL)
        wake = min(wake, self._next_retention)
        cron = self.timetable.next_due()
        if cron is not None:
            wake = min(wake, cron)
        return max(0, int((wake - now) * 1000) + 1)

    def _timers(self, now: float) -> None:
        self.journal.apply(self.sched.tick(now))
        self.timetable.tick(now)
        if self.unclaimed_deadline is not None and now >= self.unclaimed_deadline:
            self.unclaimed_deadline = None
            self.journal.apply(self.sched.requeue_unclaimed(now))
        if now >= self._next_retention:
            self.retire(now)
        for conn in self.registry.expired(now):
            log.warning("worker %s silent for %.1fs: lost", conn.name, now - conn.last_seen)
            self.link.lose(conn, now)
        for conn in self.registry.due_heartbeat(now):
            self.send(conn.identity, encode(Op.HEARTBEAT, {}))
        if now - self._last_tick >= self.interval:
            self._last_tick = now
            self.elastic.reap()
            tick: events.HeartbeatEvent = {"time": now, "workers": len(self.registry)}
            self.publisher.publish(events.HEARTBEAT, dict(tick))

    # ---- effects ---------------------------------------------------------------------------

    def _deliver(self, action: Held) -> None:
        """What waited for a commit: notices go to the hook, the rest to the workers (a run's end to both)."""
        if isinstance(action, Notice):
            self.notifier.send(action.event)
            return
        self.link.deliver(action)
        if isinstance(action, RunFinished) and self.notifier.senders:
            run = self.sched.find_run(action.run_id)
            if run is not None:
                self.notifier.send({"event": RUN_FINISHED, "time": time.time(), "run_id": run.run_id,
                                    "run_name": run.name, "agent_run_id": run.agent_run_id,
                                    "state": run.state.value, "finished_at": run.finished_at})

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
            "queued_by_capability": self.sched.queued_by_capability(),
            "running": states.get(JobState.RUNNING.value, 0), "store_ok": self.journal.store_ok,
            "uptime": time.time() - self.started_at, "rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
            "pub": self.pub_addr, "insecure": bool(self.exposed), "exposed": self.exposed,
            "events_dropped": self.publisher.dropped, **self.counters, **self.logs.health(),
            "gates_pending": states.get(JobState.AWAITING_APPROVAL.value, 0), **self.notifier.stats(),
            "queues": self.sched.queue_figures(time.time()), "schedules": len(self.timetable.schedules),
            **self.elastic.stats(),
        }

    def stop(self) -> None:
        self.running = False

    def interrupt(self) -> None:
        """A stop signal: the loop ends at its next turn; while loading, at once (raises :class:`Stopping`
        in the interrupted code, a blocking store request included)."""
        self.running = False
        if self.loading:
            raise Stopping

    def close(self) -> None:
        try:
            self.journal.commit()
        except Exception:  # closing must not raise
            log.exception("final commit failed")
        self.notifier.close()
        self.logs.close()
        self.store.close()
        self.router.close(0)
        self.publisher.close()
        self.ctx.term()
