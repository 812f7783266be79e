"""Ready queues and the dispatch choice: which queued job goes to which worker next.

Part of the scheduler (no I/O, no clock): the scheduler owns the job records and decides *when* a
job is ready; this module keeps the ready jobs in order and picks, each time a slot is free, the
best one and its worker:

- one heap per capability tag (a job nobody can run never blocks the others), plus one heap per
  worker for jobs pinned to it by affinity;
- order: highest priority first, FIFO among equals (``queue_seq``, global across runs);
- least connection: among the capable workers with a free slot, the least busy one (ties go to the
  worker that registered first); never more attempts than slots, no prefetch.

Entries are never removed from the middle of a heap: an entry whose job has left QUEUED (or was
queued again, with a new ``queue_seq``) is dropped when it reaches the top (``is_live``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from titan_zmq.attempt import AttemptKey

Entry = tuple[int, int, str, str]  # (-priority, queue_seq, run_id, job_id): heap order is dispatch order


@dataclass(slots=True)
class WorkerSlots:
    """What the scheduler knows of a worker: what it can run and what it is running."""

    name: str
    caps: frozenset[str]
    slots: int
    order: int  # registration order, the tie-break among equally loaded workers
    running: set[AttemptKey] = field(default_factory=set)
    finishing: set[AttemptKey] = field(default_factory=set)  # over, outcome not yet received
    draining: bool = False  # leaving: gets no new attempts (its running ones finish)

    @property
    def free(self) -> int:
        return self.slots - len(self.running)


class ReadyQueues:
    """The queued jobs, by capability and by pinned worker, and the least-connection choice."""

    def __init__(self, is_live: Callable[[Entry], bool]):
        self.is_live = is_live  # whether an entry still stands for a QUEUED job
        self.by_cap: dict[str, list[Entry]] = {}  # capability -> heap
        self.pinned: dict[str, list[Entry]] = {}  # worker -> heap (affinity)

    def push(self, entry: Entry, requirement: str, worker: str | None = None) -> None:
        """Queue an entry for any worker with ``requirement``, or for ``worker`` only (affinity)."""
        heap = self.pinned[worker] if worker is not None else self.by_cap.setdefault(requirement, [])
        heapq.heappush(heap, entry)

    def add_worker(self, name: str) -> None:
        self.pinned.setdefault(name, [])

    def unpin(self, name: str, requirement_of: Callable[[Entry], str]) -> None:
        """The jobs waiting for this worker (affinity) fall back to any capable worker."""
        for entry in self.pinned.pop(name, []):
            if self.is_live(entry):
                heapq.heappush(self.by_cap.setdefault(requirement_of(entry), []), entry)

    def pop_next(self, workers: list[WorkerSlots]) -> tuple[Entry, WorkerSlots] | None:
        """The best live entry any of ``workers`` (those with a free slot) can take, and its worker."""
        best: tuple[Entry, list[Entry], WorkerSlots] | None = None
        for w in workers:
            heap = self.pinned[w.name]
            head = self._head(heap)
            if head is not None and (best is None or head < best[0]):
                best = (head, heap, w)
        for cap, heap in self.by_cap.items():
            capable = [w for w in workers if cap in w.caps]
            if not capable:
                continue
            head = self._head(heap)
            if head is not None and (best is None or head < best[0]):
                best = (head, heap, min(capable, key=lambda w: (len(w.running), w.order)))
        if best is None:
            return None
        entry, heap, worker = best
        heapq.heappop(heap)
        return entry, worker

    def live_entries(self) -> list[tuple[str | None, Entry]]:
        """Every live entry with its capability heap (None: pinned to a worker); O(queued)."""
        out: list[tuple[str | None, Entry]] = []
        for cap, heap in self.by_cap.items():
            out += [(cap, e) for e in heap if self.is_live(e)]
        for heap in self.pinned.values():
            out += [(None, e) for e in heap if self.is_live(e)]
        return out

    def _head(self, heap: list[Entry]) -> Entry | None:
        while heap and not self.is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0] if heap else None
