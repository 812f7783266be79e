"""Where a log follower is in each job's output: every line yielded once, in order, gaps spotted.

Live lines come from the broker's PUB socket, which may drop messages for a slow reader (or lose
them across a broker restart); each line carries its number, so a follower that sees a line ahead
of the one it expects knows it missed some and fetches them by number (GET_LOGS) instead.
"""

from __future__ import annotations

from typing import Any

LogLine = list[Any]  # [n, attempt, stream, text, ts]


class LogCursor:
    """The next line number expected from each job."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def at(self, job_id: str) -> int:
        """The number of the next line to yield for ``job_id``."""
        return self._next.get(job_id, 0)

    def backlog(self, job_id: str, page: dict[str, Any]) -> list[LogLine]:
        """The lines of a GET_LOGS page fetched from :meth:`at`; the cursor moves past the page."""
        self._next[job_id] = max(self.at(job_id), int(page["next"]))
        return list(page["lines"])

    def fetched(self, job_id: str, lines: list[LogLine]) -> list[LogLine]:
        """Of lines fetched by number, the ones not yet yielded; the cursor moves past them."""
        out = [rec for rec in lines if rec[0] >= self.at(job_id)]
        if out:
            self._next[job_id] = out[-1][0] + 1
        return out

    def live(self, job_id: str, lines: list[LogLine]) -> tuple[list[LogLine], bool]:
        """The live lines that come next, and whether lines were missed before them (a gap to fetch)."""
        n = self.at(job_id)
        if lines and lines[0][0] > n:
            return [], True
        out = []
        for rec in lines:
            if rec[0] == n:
                out.append(rec)
                n += 1
        self._next[job_id] = n
        return out, False
