"""Refused frames: every one counted, and logged without letting a flood of them fill the log.

The broker and the store refuse what they cannot decode or serve with an ERROR reply; this is the
one place that counts them (``bad_frames`` in the stats) and says so in the process's log: each
refusal with its peer and reason, at most ``burst`` lines per ``window`` seconds, then one line
saying how many more were not logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

BURST = 10  # refusals logged one by one per window...
WINDOW = 10.0  # ...of this many seconds; the rest are summed up in one line


class RefusalLog:
    """Counts refused frames in ``counters[key]`` and logs them (rate-limited)."""

    def __init__(self, logger: logging.Logger, counters: dict[str, int], key: str = "bad_frames",
                 burst: int = BURST, window: float = WINDOW, clock: Callable[[], float] = time.monotonic):
        self.log, self.counters, self.key = logger, counters, key
        self.burst, self.window, self.clock = burst, window, clock
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0

    def refused(self, peer: str, code: str, message: str) -> None:
        self.counters[self.key] = self.counters.get(self.key, 0) + 1
        now = self.clock()
        if now - self._window_start >= self.window:
            if self._suppressed:
                self.log.warning("%d more refused frames were not logged", self._suppressed)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.log.warning("refused a frame from %s: %s [%s]", peer, message[:200], code)
        else:
            self._suppressed += 1
