"""Work that grows with user data, done off the worker's loop.

Preparing an attempt (saving a project archive, extracting it, writing a script) and removing
workspaces take time in proportion to what users ship; done on the loop they would stop the
heartbeats.  :class:`Offload` runs them on a few daemon threads and hands each outcome back to
the loop through a pipe the loop polls: the callbacks run on the loop's thread, so every piece of
the worker's state is still touched by one thread only.

Two lanes: ``prepare`` (several threads: attempts start in parallel) and ``clean`` (one thread:
removals run in the order they were asked for, so the end of an attempt is always dealt with
before the end of its run).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]  # (result, error) -> None, called on the loop's thread
_Task = tuple[Callable[[], Any], Done | None]


class Offload:
    def __init__(self, prepare_threads: int = 2):
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._results: queue.SimpleQueue[tuple[Done, Any, BaseException | None]] = queue.SimpleQueue()
        self._lanes: dict[str, queue.SimpleQueue[_Task | None]] = {}
        self._threads: list[threading.Thread] = []
        for lane, count in (("prepare", max(1, prepare_threads)), ("clean", 1)):
            q: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
            self._lanes[lane] = q
            for i in range(count):
                t = threading.Thread(target=self._work, args=(q,), name=f"titan-{lane}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    @property
    def fd(self) -> int:
        """Readable when outcomes wait for :meth:`deliver`."""
        return self._rfd

    def submit(self, lane: str, fn: Callable[[], Any], done: Done | None = None) -> None:
        """Run ``fn()`` on ``lane``; ``done(result, error)`` runs later on the loop, in :meth:`deliver`
        (without ``done``, nothing comes back and the loop is not woken; a failure is logged)."""
        self._lanes[lane].put((fn, done))

    def deliver(self) -> int:
        """Run the callbacks of finished tasks (on the calling thread, the loop's); returns how many."""
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        n = 0
        while True:
            try:
                done, result, error = self._results.get_nowait()
            except queue.Empty:
                return n
            n += 1
            try:
                done(result, error)
            except Exception:
                log.exception("error handling the outcome of off-loop work")

    def close(self) -> None:
        """Stop taking work; threads still busy finish in the background (daemons: they never hold up exit)."""
        for lane, q in self._lanes.items():
            for t in self._threads:
                if t.name.startswith(f"titan-{lane}-"):
                    q.put(None)
        os.close(self._rfd)
        os.close(self._wfd)

    def _work(self, q: queue.SimpleQueue[_Task | None]) -> None:
        while (task := q.get()) is not None:
            fn, done = task
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the loop, which decides
                error = exc
            if done is None:
                if error is not None:
                    log.warning("off-loop work failed: %s", error)
                continue
            self._results.put((done, result, error))
            try:
                os.write(self._wfd, b"x")
            except (BlockingIOError, OSError):  # full: a wake-up is pending anyway; closed: stopping
                pass
