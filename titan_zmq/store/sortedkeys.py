"""SortedKeys: the store's ordered key index, a sorted set of str kept in chunks.

A single sorted list would make every insert a memmove of the whole index (a store of a million
keys pays ~1 ms per new key, and replaying a big AOF becomes quadratic); a tree costs a Python
object per key.  Chunks of at most ``LOAD * 2`` keys, found by bisecting the list of each chunk's
last key, keep an insert or a removal at O(log n + LOAD) and a range scan at O(log n + k), in the
manner of ``sortedcontainers.SortedList`` (not a dependency for the one use we have).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

LOAD = 512  # keys per chunk at a split (a chunk splits at twice this)


class SortedKeys:
    """A sorted set of keys with range scans from any point."""

    def __init__(self) -> None:
        self._chunks: list[list[str]] = []
        self._maxes: list[str] = []  # the last key of each chunk
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: str) -> bool:
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        return j < len(chunk) and chunk[j] == key

    def add(self, key: str) -> None:
        """Insert ``key`` (no-op when present)."""
        if not self._chunks:
            self._chunks.append([key])
            self._maxes.append(key)
            self._len = 1
            return
        i = min(bisect_left(self._maxes, key), len(self._maxes) - 1)
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if j < len(chunk) and chunk[j] == key:
            return
        insort(chunk, key)
        self._maxes[i] = chunk[-1]
        self._len += 1
        if len(chunk) > 2 * LOAD:
            self._chunks[i:i + 1] = [chunk[:LOAD], chunk[LOAD:]]
            self._maxes[i:i + 1] = [chunk[LOAD - 1], chunk[-1]]

    def discard(self, key: str) -> None:
        """Remove ``key`` (no-op when absent)."""
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return
        del chunk[j]
        self._len -= 1
        if chunk:
            self._maxes[i] = chunk[-1]
        else:
            del self._chunks[i]
            del self._maxes[i]

    def irange(self, start: str = "", *, after: bool = False) -> Iterator[str]:
        """Keys from ``start`` on, in order (``after``: strictly greater than ``start``).

        The caller must not change the set while iterating (collect, then change).
        """
        find = bisect_right if after else bisect_left
        i = find(self._maxes, start)
        if i == len(self._maxes):
            return
        j = find(self._chunks[i], start)
        for chunk in self._chunks[i:]:
            yield from chunk[j:] if j else chunk
            j = 0
