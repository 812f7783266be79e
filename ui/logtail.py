"""Job logs in the UI: the live tail the Run page's side panel shows, and the full-log download.

A :class:`LogTail` per job someone is looking at: it subscribes to that job's log topic (never to
every job's), takes the newest ``PANEL_LINES`` lines of the backlog, then every new line as it is
published, in order, through a :class:`client.logcursor.LogCursor` (a line ahead of the next expected
one is a gap, filled by number with GET_LOGS). Events only fill an inbox on the sync thread; the work
(and any request to the broker, through :meth:`ui.data.BrokerSync.call`) happens when a page polls.
A tail nobody polled for ``IDLE`` seconds is closed and unsubscribed.

The download (``/download/log/<run>/<job>``) streams the whole log, page by page, behind the same
token guard as every other request of the UI's server.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, stream_with_context

from client.logcursor import LogCursor, LogLine
from titan_zmq import events
from titan_zmq.errors import NotFound
from titan_zmq.states import TERMINAL_JOB_STATES
from ui import data

PANEL_LINES = 2000  # lines a panel keeps and shows (the newest); the download has them all
IDLE = 60.0  # seconds without a poll after which a tail is closed
QUIET_CHECK = 3.0  # seconds of silence after which a running job's log is asked for (a dropped event)
DOWNLOAD_PATH = "/download/log/<run_id>/<job_id>"
TERMINAL = {s.value for s in TERMINAL_JOB_STATES}


class LogTail:
    """One job's newest lines, kept current from its log events (see the module's docstring)."""

    def __init__(self, run_id: str, job_id: str, keep: int = PANEL_LINES) -> None:
        self.run_id, self.job_id = run_id, job_id
        self.lines: deque[LogLine] = deque(maxlen=keep)
        self.cursor = LogCursor()
        self.first = 0  # number of the first line the backlog fetch started from
        self.loaded = False
        self.done = False  # the job ended and every line is here
        self.seen_at = time.time()
        self.checked_at = 0.0
        self._inbox: list[LogLine] = []
        self._inbox_lock = threading.Lock()
        self._lock = threading.Lock()  # one poll at a time does the work

    @property
    def topic(self) -> str:
        return events.log_topic(self.run_id, self.job_id)

    @property
    def next(self) -> int:
        """The number of the next line expected: what a page compares to know whether lines came."""
        return self.cursor.at(self.job_id)

    def on_event(self, _topic: bytes, body: dict[str, Any]) -> None:
        """A LogEvent (on the sync thread: only queued here)."""
        lines = body.get("lines")
        if isinstance(lines, list):
            with self._inbox_lock:
                self._inbox.extend(lines)

    def poll(self, fetch: Any, now: float | None = None) -> None:
        """Bring the tail up to date; ``fetch(start, limit)`` returns a GET_LOGS page."""
        now = time.time() if now is None else now
        self.seen_at = now
        with self._lock:
            if not self.loaded:
                self._backlog(fetch)
                self.checked_at = now
            with self._inbox_lock:
                inbox, self._inbox = self._inbox, []
            if inbox:
                self.checked_at = now
                fresh, gap = self.cursor.live(self.job_id, inbox)
                if gap:
                    self._fill(fetch)
                    fresh, _ = self.cursor.live(self.job_id, [r for r in inbox if r[0] >= self.next])
                self.lines.extend(fresh)
            elif not self.done and now - self.checked_at > QUIET_CHECK:
                self.checked_at = now
                self._fill(fetch)

    def _backlog(self, fetch: Any) -> None:
        head = fetch(0, 1)
        self.first = max(0, int(head["total"]) - (self.lines.maxlen or PANEL_LINES))
        self.cursor.backlog(self.job_id, {"next": self.first, "lines": []})
        self._fill(fetch)
        self.loaded = True

    def _fill(self, fetch: Any) -> None:
        """Fetch lines by number from the cursor up to the end of what the broker has."""
        while True:
            page = fetch(self.next, None)
            self.lines.extend(self.cursor.fetched(self.job_id, page["lines"]))
            self.done = bool(page.get("done")) or (page.get("state") in TERMINAL and self.next >= page["total"])
            if not page["lines"] or self.next >= int(page["total"]):
                return

    def since(self, n: int) -> list[LogLine]:
        """The kept lines numbered ``n`` and up."""
        with self._lock:
            return [r for r in self.lines if r[0] >= n]


class LogTails:
    """The open tails of one UI process, by (run, job)."""

    def __init__(self) -> None:
        self._tails: dict[tuple[str, str], LogTail] = {}
        self._lock = threading.Lock()

    def get(self, run_id: str, job_id: str) -> LogTail:
        """The job's tail, opened (and subscribed) on first use, brought up to date."""
        sync = data.current()
        now = time.time()
        with self._lock:
            tail = self._tails.get((run_id, job_id))
            if tail is None:
                tail = self._tails[(run_id, job_id)] = LogTail(run_id, job_id)
                sync.subscribe(tail.topic, tail.on_event)
            for key, idle in list(self._tails.items()):
                if idle.seen_at < now - IDLE and key != (run_id, job_id):
                    sync.unsubscribe(idle.topic)
                    del self._tails[key]
        tail.poll(lambda start, limit: sync.call(lambda c: c.log_page(run_id, job_id, start, limit)), now)
        return tail


tails = LogTails()


def install(server: Flask) -> None:
    """Add the full-log download route to the UI's server (the token guard is already in front of it)."""
    server.add_url_rule(DOWNLOAD_PATH, "download_log", download)


def download(run_id: str, job_id: str) -> Response:
    sync = data.current()
    try:
        first = sync.call(lambda c: c.log_page(run_id, job_id, 0))
    except NotFound as exc:
        return Response(f"{exc}\n", status=404, mimetype="text/plain")

    def page_from(start: int) -> dict[str, Any]:
        return sync.call(lambda c: c.log_page(run_id, job_id, start))

    def lines() -> Iterator[str]:
        page = first
        while True:
            yield "".join(f"{rec[3]}\n" for rec in page["lines"])
            start = int(page["next"])
            if not page["lines"] or start >= int(page["total"]):
                return
            page = page_from(start)

    name = f"{run_id}.{job_id}.log".replace("/", "_")
    return Response(stream_with_context(lines()), mimetype="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def download_href(run_id: str, job_id: str) -> str:
    from urllib.parse import quote

    return f"/download/log/{quote(run_id, safe='')}/{quote(job_id, safe='')}"
