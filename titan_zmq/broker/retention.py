"""Retention: which finished runs leave the broker, decided without I/O.

A finished run leaves the broker's memory, the store (its journal keys) and the log directory
once it finished more than ``max_age`` seconds ago, or once more than ``max_runs`` finished runs
are kept (the oldest go first).  Runs still running are never touched.  The broker asks for a
slice at a time (:meth:`Retention.take`, bounded by the journal keys it will delete), so a big
backlog (a restart with a long history) leaves over many loop iterations, never in one pause.
Runs leave in the order they finished (a clock step backwards does not reorder them).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from titan_zmq import defaults

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smhdw]?)\s*")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FOREVER = ("0", "none", "forever", "off")


def parse_duration(text: str) -> float | None:
    """Seconds in ``7d``, ``12h``, ``30m``, ``45s`` or ``3600``; None (no age limit) for ``0``,
    ``none``, ``forever`` or ``off``.  ValueError for anything else."""
    if text.strip().lower() in FOREVER:
        return None
    match = _DURATION.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"expected a duration such as 7d, 12h, 30m, 45s or 3600, got {text!r:.40}")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    return seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class Policy:
    """How long finished runs stay: ``max_age`` seconds and ``max_runs`` runs (None: no limit)."""

    max_age: float | None = defaults.RETAIN_SECONDS
    max_runs: int | None = defaults.RETAIN_RUNS


class Retention:
    """The finished runs the broker keeps, oldest finished first, and which of them are due to go."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._finished: OrderedDict[str, float] = OrderedDict()  # run id -> finished at

    def __len__(self) -> int:
        return len(self._finished)

    def finished(self, run_id: str, at: float) -> None:
        """A run finished at ``at`` (a second report of the same run is ignored)."""
        self._finished.setdefault(run_id, at)

    def restored(self, runs: Iterable[tuple[str, float]]) -> None:
        """Finished runs read back at start-up, as (run id, finished at)."""
        for run_id, at in sorted(runs, key=lambda run: run[1]):
            self.finished(run_id, at)

    def due(self, now: float) -> bool:
        """Whether the oldest finished run must go now."""
        if not self._finished:
            return False
        max_age, max_runs = self.policy.max_age, self.policy.max_runs
        if max_runs is not None and len(self._finished) > max_runs:
            return True
        return max_age is not None and next(iter(self._finished.values())) <= now - max_age

    def take(self, now: float, budget: int, cost: Callable[[str], int]) -> list[str]:
        """Pop the runs due to leave, oldest first, until ``budget`` is spent (``cost`` of a run: the
        journal keys its removal deletes); at least one when any is due."""
        out: list[str] = []
        while budget > 0 and self.due(now):
            run_id, _ = self._finished.popitem(last=False)
            budget -= max(1, cost(run_id))
            out.append(run_id)
        return out
