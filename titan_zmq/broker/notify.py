"""The notification hook: `titan-broker --notify-url URL` POSTs a small JSON event to each URL.

Events: ``gate_pending`` (a gate started waiting), ``gate_decided`` (approved, rejected, timed out) and
``run_finished``; each is handed over only after the change it reports is journaled. Every body has
``event``, ``id`` (unique: a receiver can drop a repeat, since a POST whose answer was lost is sent again),
``time`` and the run's ``run_id``, ``run_name`` and ``agent_run_id``; gate events add ``gate_id``,
``message``, ``waiting_since``, ``deadline`` and, when decided, ``state``, ``decision``, ``decided_by``,
``decided_at``, ``comment``; ``run_finished`` adds ``state`` and ``finished_at``.

The broker's loop never waits for a receiver: it only puts the event on a bounded queue per URL
(:data:`defaults.NOTIFY_QUEUE`; when full, the oldest event is dropped and counted). One sender thread per
URL posts the events in order; a failed POST (no answer within :data:`defaults.NOTIFY_TIMEOUT`, a refused
connection, a status other than 2xx) is retried with backoff (0.5 s doubling to 8 s) until it succeeds or
the event is older than :data:`defaults.NOTIFY_WINDOW` (an hour), when it is dropped and counted. So a
receiver that is down gets the events, in order, once it is back within the window, and one that is slow
or down delays no other URL. Delivery is at least once, not exactly once.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from titan_zmq import defaults

log = logging.getLogger(__name__)


class Sender:
    """One URL's queue and thread."""

    def __init__(self, url: str, queue_max: int, window: float, timeout: float,
                 backoff: float, backoff_max: float) -> None:
        self.url = url
        self.window, self.timeout, self.backoff, self.backoff_max = window, timeout, backoff, backoff_max
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=queue_max)
        self.cond = threading.Condition()
        self.stopping = False
        self.counts = {"sent": 0, "dropped": 0, "failures": 0}
        self.thread = threading.Thread(target=self._run, name=f"titan-notify-{url}", daemon=True)
        self.thread.start()

    def put(self, body: bytes) -> None:
        """Queue an event (never blocks; a full queue loses its oldest event)."""
        with self.cond:
            if len(self.queue) == self.queue.maxlen:
                self.counts["dropped"] += 1
            self.queue.append((time.monotonic(), body))
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                born, body = self.queue[0]
            if self._deliver(born, body):
                self.counts["sent"] += 1
            else:
                self.counts["dropped"] += 1
            with self.cond:
                if self.queue and self.queue[0][1] is body:
                    self.queue.popleft()

    def _deliver(self, born: float, body: bytes) -> bool:
        """POST until it is taken or the event is too old (or the broker stops)."""
        pause = self.backoff
        while not self.stopping:
            try:
                self._post(body)
                return True
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self.counts["failures"] += 1
                if self.counts["failures"] <= 20 or self.counts["failures"] % 1000 == 0:
                    log.warning("notify %s failed (%s): retrying in %.1fs", self.url, exc, pause)
            if time.monotonic() + pause - born > self.window:
                log.error("notify %s: event dropped after %.0fs of failed attempts", self.url, self.window)
                return False
            with self.cond:
                self.cond.wait_for(lambda: self.stopping, timeout=pause)
            pause = min(self.backoff_max, pause * 2)
        return False

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "titan-broker"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the operator's URL
            resp.read()


class Notifier:
    """Fans events out to every ``--notify-url``; without URLs every call is a no-op."""

    def __init__(self, urls: list[str] | tuple[str, ...] = (), queue_max: int = defaults.NOTIFY_QUEUE,
                 window: float = defaults.NOTIFY_WINDOW, timeout: float = defaults.NOTIFY_TIMEOUT,
                 backoff: float = defaults.NOTIFY_BACKOFF, backoff_max: float = defaults.NOTIFY_BACKOFF_MAX) -> None:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"--notify-url {url!r}: expected an http:// or https:// URL")
        self.senders = [Sender(u, queue_max, window, timeout, backoff, backoff_max) for u in urls]

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (with a fresh ``id``) for every URL; returns at once."""
        if not self.senders:
            return
        body = json.dumps({**event, "id": uuid.uuid4().hex}, default=str).encode()
        for sender in self.senders:
            sender.put(body)

    def stats(self) -> dict[str, int]:
        out = {"notify_sent": 0, "notify_dropped": 0, "notify_failures": 0, "notify_queued": 0}
        for s in self.senders:
            for k, v in s.counts.items():
                out[f"notify_{k}"] += v
            out["notify_queued"] += len(s.queue)
        return out if self.senders else {}

    def close(self) -> None:
        for s in self.senders:
            s.stop()
