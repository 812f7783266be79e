"""The UI process's one link to the broker: a background thread that keeps :class:`ui.model.Model` current.

It holds one :class:`client.api.TitanClient` and one SUB on the broker's event socket
(:mod:`titan_zmq.events`: heartbeats, run and job events), and does, in a loop:

- apply every event as it arrives (a job event marks its run *dirty*);
- at most every ``DIRTY_EVERY`` seconds, ask the broker for the summary of each dirty run (one
  request per changed run, whatever the number of browsers); for a run a page *watches*, its full
  status instead when it was never loaded, when its events could not say how an attempt ended
  (events of one commit coalesce), when it finished, and otherwise at most every ``WATCHED_FULL_EVERY``
  seconds as a safety net for dropped events (job events carry states, times and exit codes);
- every ``REFRESH_EVERY`` seconds, ask for the workers and the broker's figures (O(workers)), which is
  also how a dead broker is noticed (with the heartbeat events going quiet);
- when the broker answers again after a silence, load the run list again (events were missed).

Browsers never reach the broker: pages read the model. Other threads that need the broker (a button
that cancels a job) hand a function to :meth:`BrokerSync.call`, run on this thread, as the client is
not thread-safe. :meth:`BrokerSync.subscribe` adds a topic (a job's log, say) with a handler.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import zmq

from client.api import TitanClient
from titan_zmq import events, sockets
from titan_zmq.errors import BrokerUnavailable, NotFound, ProtocolError
from titan_zmq.protocol import decode
from ui.model import RUNS_KEPT, Model

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[bytes, dict[str, Any]], None]

REQUEST_TIMEOUT = 2.0  # seconds a request to the broker gets (a dead broker is noticed after this)
REFRESH_EVERY = 1.0  # seconds between asking for workers and figures
DIRTY_EVERY = 0.4  # seconds between asking for the summaries of runs that changed
ACTIVE_EVERY = 10.0  # seconds between re-checking every active run (in case events were dropped)
RECENT_EVERY = 30.0  # seconds between asking for the newest runs (in case a run event was dropped)
RECENT_RUNS = 100  # how many runs that periodic check asks for
WATCHED_FULL_EVERY = 30.0  # seconds between full statuses of a busy watched run (events carry the rest)
DIRTY_BATCH = 200  # runs refreshed per pass at most (the rest stay dirty for the next pass)
HB_SILENCE = 3.5  # seconds without a heartbeat event after which the broker is asked at once
TOPICS = (events.HEARTBEAT, events.RUN, events.JOB)


class BrokerSync:
    """The background thread feeding :class:`Model` from the broker at ``address``."""

    def __init__(self, model: Model, address: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.model = model
        self.address = address
        self.timeout = timeout
        self.client: TitanClient | None = None
        self.sub: sockets.Socket | None = None
        self._calls: queue.Queue[tuple[Callable[[TitanClient], Any], Future[Any]]] = queue.Queue()
        self._handlers: dict[str, Handler] = {}
        self._subscribed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="titan-ui-sync", daemon=True)
        self._due: dict[str, float] = {}
        self._last_hb = 0.0

    # ---- used by other threads --------------------------------------------------------------

    def start(self) -> BrokerSync:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def call(self, fn: Callable[[TitanClient], T], timeout: float = 10.0) -> T:
        """Run ``fn(client)`` on the sync thread and return its result (or raise its error)."""
        fut: Future[T] = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Receive events under ``topic`` (a prefix, see :mod:`titan_zmq.events`): ``handler(topic,
        body)`` runs on the sync thread, so it must be quick (update a model, never block)."""
        self._handlers[topic] = handler

    def unsubscribe(self, topic: str) -> None:
        self._handlers.pop(topic, None)

    # ---- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self.client = TitanClient(self.address, timeout=self.timeout)
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except BrokerUnavailable as exc:
                    self.model.broker_down(time.time(), str(exc))
                    self._due["refresh"] = 0.0  # ask again at once: the timeout was the wait
                except Exception:  # a bug must not end the thread: the UI would freeze silently
                    log.exception("sync step failed")
                    self._stop.wait(1.0)
        finally:
            if self.sub is not None:
                self.sub.close(0)
            self.client.close()

    def _due_now(self, what: str, every: float, now: float) -> bool:
        if now >= self._due.get(what, 0.0):
            self._due[what] = now + every
            return True
        return False

    def _step(self) -> None:
        assert self.client is not None
        now = time.time()
        if self._last_hb and now - self._last_hb > HB_SILENCE and self.model.conn.up:
            self._due["refresh"] = 0.0  # heartbeats stopped: find out now rather than at the next refresh
            self._last_hb = 0.0
        if self._due_now("refresh", REFRESH_EVERY, now):
            self._refresh(now)
        self._serve_calls()
        if not self.model.conn.up:
            self._stop.wait(0.2)
            return
        self._subscriptions()
        self._events(0.1)
        if self._due_now("active", ACTIVE_EVERY, now):
            self.model.mark_dirty(self.model.active_runs())
        if self._due_now("recent", RECENT_EVERY, now):
            self.model.set_runs(self.client.runs(limit=RECENT_RUNS))
        if self._due_now("dirty", DIRTY_EVERY, now):
            self._refresh_dirty()
            self.model.unwatch_idle(now)

    def _refresh(self, now: float) -> None:
        assert self.client is not None
        workers = self.client.workers()
        stats = self.client.stats()
        if self.model.broker_up(time.time()):
            self._resync()
        self.model.set_workers(workers)
        self.model.set_stats(stats, now)

    def _resync(self) -> None:
        """First contact, or the broker is back: load the run list again and every watched run."""
        assert self.client is not None
        if self.sub is None:
            self.sub = self.client.conn.subscribe(*TOPICS)
            self._subscribed = set()
        self.model.set_runs(self.client.runs(limit=self.model.runs_kept or RUNS_KEPT), replace=True)
        with self.model.lock:
            for w in self.model.watched.values():
                w.loaded = False
            self.model.dirty.update(self.model.watched)  # (the lock is re-entrant)
        self._due["recent"] = time.time() + RECENT_EVERY
        log.info("in sync with the broker at %s: %d runs", self.address, len(self.model.runs))

    def _subscriptions(self) -> None:
        """Apply :meth:`subscribe` calls made by other threads (the SUB socket lives on this one)."""
        if self.sub is None:
            return
        wanted = set(self._handlers)
        for topic in wanted - self._subscribed:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for topic in self._subscribed - wanted:
            self.sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        self._subscribed = wanted

    def _events(self, wait: float) -> None:
        """Apply the events that arrive within ``wait`` seconds (at most a bounded batch)."""
        if self.sub is None or not self.sub.poll(int(wait * 1000)):
            return
        for _ in range(10_000):
            try:
                topic, frame = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                body = decode(frame).body
            except ProtocolError:
                continue
            self._dispatch(topic, body)

    def _dispatch(self, topic: bytes, body: dict[str, Any]) -> None:
        if events.is_topic(topic, events.HEARTBEAT):
            self._last_hb = time.time()
            self.model.broker_up(self._last_hb)
        elif events.is_topic(topic, events.JOB):
            self.model.on_job_event(body)
        elif events.is_topic(topic, events.RUN):
            self.model.on_run_event(body)
        for prefix, handler in list(self._handlers.items()):
            if topic.startswith(prefix.encode()):
                try:
                    handler(topic, body)
                except Exception:
                    log.exception("event handler for %s failed", prefix)

    def _refresh_dirty(self) -> None:
        assert self.client is not None
        now = time.time()
        dirty = self.model.take_dirty()
        later = dirty[DIRTY_BATCH:]
        for run_id in dirty[:DIRTY_BATCH]:
            due = self.model.status_due(run_id, now, WATCHED_FULL_EVERY)
            try:
                if due is None:
                    self.model.set_runs([self.client.status(run_id, summary=True)])
                elif due:
                    self.model.set_status(self.client.status(run_id))
                else:
                    later.append(run_id)  # watched and fresh: its events show the states meanwhile
            except NotFound:
                continue
        self.model.mark_dirty(later)

    def _serve_calls(self) -> None:
        assert self.client is not None
        self._subscriptions()  # a call made after subscribe() (a log's backlog) runs once the topic is subscribed
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self.client))
            except Exception as exc:  # the caller gets it, whatever it is
                fut.set_exception(exc)


_current: BrokerSync | None = None


def install(sync: BrokerSync) -> None:
    """Make ``sync`` the one pages reach through :func:`current` and :func:`model`."""
    global _current
    _current = sync


def current() -> BrokerSync:
    if _current is None:
        raise RuntimeError("no BrokerSync installed (ui.app.create_app does it)")
    return _current


def model() -> Model:
    """The model pages read."""
    return current().model
