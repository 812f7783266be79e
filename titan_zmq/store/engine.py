"""The store's data model: a KV map with TTLs plus named sets, in memory, with no I/O.

Mutations are lists, the same shape on the wire (KV_BATCH), in the AOF and in
snapshots::

    ["set", key, value, expire_at_or_None]   expire_at is absolute (time.time() seconds)
    ["del", key]                             removes the KV key and the set of that name
    ["incr", key, by]
    ["sadd", key, member]
    ["srem", key, member]

Keys are ``str``; values and set members are ``bytes`` or ``str`` and come back with the
type they went in with.  KV keys and set names are separate namespaces (``del`` clears
both, ``keys`` lists both).  :meth:`Engine.execute` also returns the *effects* to journal:
an ``incr`` is journaled as the ``set`` it produced, so replaying the file gives the same
state whatever the clock says at replay time, and no-ops are not journaled at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from titan_zmq.errors import InvalidRequest
from titan_zmq.store.sortedkeys import SortedKeys

Value = bytes | str
Op = list[Any]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT_STR = re.compile(r"-?[0-9]+")
_INT_BYTES = re.compile(rb"-?[0-9]+")
# op name -> the argument counts it accepts after its name
_ARITY = {"set": (2, 3), "del": (1,), "incr": (2,), "sadd": (2,), "srem": (2,)}


def _describe(value: Any) -> str:
    return type(value).__name__


def validate_op(op: Any, index: int = 0) -> Op:
    """Check one op's shape and types; return it normalised (``set`` always has expire_at)."""
    where = f"op {index}"
    if not isinstance(op, list | tuple) or not op or not isinstance(op[0], str):
        raise InvalidRequest(f"{where}: an op must be a list starting with its name, got {op!r:.80}")
    name = op[0]
    if name not in _ARITY:
        raise InvalidRequest(f"{where}: unknown op {name!r} (want one of {', '.join(_ARITY)})")
    if len(op) - 1 not in _ARITY[name]:
        raise InvalidRequest(f"{where}: {name!r} takes {' or '.join(map(str, _ARITY[name]))} arguments")
    if not isinstance(op[1], str):
        raise InvalidRequest(f"{where}: key must be a str, got {_describe(op[1])}")
    if name == "set":
        expire_at = op[3] if len(op) > 3 else None
        if not isinstance(op[2], bytes | str):
            raise InvalidRequest(f"{where}: value must be bytes or str, got {_describe(op[2])}")
        if expire_at is not None and (isinstance(expire_at, bool) or not isinstance(expire_at, int | float)):
            raise InvalidRequest(f"{where}: expire_at must be a number or None, got {_describe(expire_at)}")
        return ["set", op[1], op[2], expire_at]
    if name == "incr":
        by = op[2]
        if isinstance(by, bool) or not isinstance(by, int) or not INT64_MIN <= by <= INT64_MAX:
            raise InvalidRequest(f"{where}: increment must be a 64-bit int, got {by!r:.40}")
    if name in ("sadd", "srem") and not isinstance(op[2], bytes | str):
        raise InvalidRequest(f"{where}: member must be bytes or str, got {_describe(op[2])}")
    return list(op)


def _incremented(current: Value | None, by: int, index: int) -> Value:
    """The value an incr stores: same type as before (str for a new key)."""
    if current is None:
        number = 0
    elif isinstance(current, bytes) and _INT_BYTES.fullmatch(current):
        number = int(current)
    elif isinstance(current, str) and _INT_STR.fullmatch(current):
        number = int(current)
    else:
        raise InvalidRequest(f"op {index}: cannot incr, the value {current!r:.40} is not an integer")
    result = number + by
    if not INT64_MIN <= result <= INT64_MAX:
        raise InvalidRequest(f"op {index}: incr would overflow a 64-bit integer")
    return str(result).encode() if isinstance(current, bytes) else str(result)


def _member_order(member: Value) -> tuple[bool, Value]:
    return (isinstance(member, bytes), member)


@dataclass(slots=True)
class Scan:
    """One page of a prefix query (:meth:`Engine.scan`)."""

    keys: list[str] = field(default_factory=list)  # keys mode: KV keys and set names, in order
    items: dict[str, Value] = field(default_factory=dict)  # values mode: KV keys and their values
    oversize: dict[str, int] = field(default_factory=dict)  # values mode: keys whose value passed max_value
    next: str | None = None  # pass as ``after`` for the next page; None: this was the last page

    def take(self, key: str, value: Value, max_value: int | None) -> int:
        """Add one KV key to the page; return the bytes it adds to the reply."""
        if max_value is not None and len(value) > max_value:
            self.oversize[key] = len(value)
            return len(key)
        self.items[key] = value
        return len(key) + len(value)


class Engine:
    """In-memory KV + sets + TTL.  ``clock`` (default ``time.time``) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._kv: dict[str, Value] = {}
        self._expiry: dict[str, float] = {}
        self._sets: dict[str, set[Value]] = {}
        self._index = SortedKeys()  # every KV key and set name, in order: prefix queries never sort

    # -- reads ---------------------------------------------------------------------

    def _live(self, key: str, now: float) -> Value | None:
        expire_at = self._expiry.get(key)
        if expire_at is not None and expire_at <= now:
            self._drop_kv(key)
            return None
        return self._kv.get(key)

    def _drop_kv(self, key: str) -> None:
        self._kv.pop(key, None)
        self._expiry.pop(key, None)
        if key not in self._sets:
            self._index.discard(key)

    def get(self, key: str) -> Value | None:
        return self._live(key, self.clock())

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires, or None (missing or no TTL)."""
        now = self.clock()
        if self._live(key, now) is None or key not in self._expiry:
            return None
        return self._expiry[key] - now

    def smembers(self, key: str) -> list[Value]:
        """Members sorted (str before bytes) so output is stable."""
        return sorted(self._sets.get(key, ()), key=_member_order)

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted union of live KV keys and set names starting with ``prefix``."""
        return self.scan(prefix).keys

    def items(self, prefix: str = "") -> dict[str, Value]:
        """Live KV keys starting with ``prefix`` and their values, in key order (sets are not included)."""
        return self.scan(prefix, values=True).items

    def scan(self, prefix: str = "", after: str | None = None, *, values: bool = False,
             limit: int | None = None, max_bytes: int | None = None, max_value: int | None = None) -> Scan:
        """One page of the keys starting with ``prefix`` and greater than ``after``, in key order,
        read from the ordered index (the cost is the page's, not the store's size).

        The page stops after ``limit`` keys or once it holds ``max_bytes`` of keys and values (always
        at least one key); ``next`` is then the cursor for the following page.  With ``values``, only
        KV keys count, and a value longer than ``max_value`` is reported in ``oversize`` (its length)
        instead of being returned.
        """
        now = self.clock()
        page = Scan()
        expired: list[str] = []
        count = size = 0
        last = ""
        strict = after is not None and after >= prefix
        for key in self._index.irange(after if strict and after is not None else prefix, after=strict):
            if not key.startswith(prefix):
                break
            if count and ((limit is not None and count >= limit) or (max_bytes is not None and size >= max_bytes)):
                page.next = last
                break
            value = self._kv.get(key)
            if value is not None and self._expiry.get(key, now + 1) <= now:
                expired.append(key)
                value = None
            if values and value is not None:
                size += page.take(key, value, max_value)
            elif not values and (value is not None or key in self._sets):
                page.keys.append(key)
                size += len(key)
            else:
                continue
            count += 1
            last = key
        for key in expired:
            self._drop_kv(key)
        return page

    def size(self) -> int:
        """KV keys and set names held (expired keys included until they are swept): O(1)."""
        return len(self._index)

    def counts(self) -> tuple[int, int]:
        """(live KV keys, sets)."""
        self.sweep()
        return len(self._kv), len(self._sets)

    # -- mutations -----------------------------------------------------------------

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        self.apply(["set", key, value, None if ttl is None else self.clock() + ttl])

    def delete(self, key: str) -> int:
        return int(self.apply(["del", key]))

    def incr(self, key: str, by: int = 1) -> int:
        return int(self.apply(["incr", key, by]))

    def sadd(self, key: str, member: Value) -> int:
        return int(self.apply(["sadd", key, member]))

    def srem(self, key: str, member: Value) -> int:
        return int(self.apply(["srem", key, member]))

    def apply(self, op: Op) -> Any:
        """Validate and apply one mutation; return its result."""
        return self.batch([op])[0]

    def batch(self, ops: list[Op]) -> list[Any]:
        """Validate every op, then apply them all (all or nothing); return their results."""
        return self.execute(ops)[0]

    def execute(self, ops: list[Op]) -> tuple[list[Any], list[Op]]:
        """Like :meth:`batch`, also returning the deterministic effects to journal."""
        now = self.clock()
        checked = [validate_op(op, i) for i, op in enumerate(ops)]
        self._dry_run(checked, now)
        results: list[Any] = []
        effects: list[Op] = []
        for op in checked:
            result, effect = self._apply(op, now)
            results.append(result)
            if effect is not None:
                effects.append(effect)
        return results, effects

    def _dry_run(self, ops: list[Op], now: float) -> None:
        """Raise on the first op that would fail (only incr can), without changing anything."""
        pending: dict[str, Value | None] = {}
        for index, op in enumerate(ops):
            name, key = op[0], op[1]
            if name == "set":
                pending[key] = op[2] if op[3] is None or op[3] > now else None
            elif name == "del":
                pending[key] = None
            elif name == "incr":
                current = pending[key] if key in pending else self._live(key, now)
                pending[key] = _incremented(current, op[2], index)

    def _apply(self, op: Op, now: float) -> tuple[Any, Op | None]:
        name, key = op[0], op[1]
        if name == "set":
            self._store(key, op[2], op[3])
            return None, op
        if name == "del":
            existed = self._live(key, now) is not None or key in self._sets
            self._sets.pop(key, None)
            self._drop_kv(key)
            return int(existed), (op if existed else None)
        if name == "incr":
            value = _incremented(self._live(key, now), op[2], 0)
            expire_at = self._expiry.get(key)  # incr keeps the TTL, as Redis does
            self._store(key, value, expire_at)
            return int(value), ["set", key, value, expire_at]
        members = self._sets.get(key)
        if name == "sadd":
            if members is None:
                members = self._sets[key] = set()
                self._index.add(key)
            if op[2] in members:
                return 0, None
            members.add(op[2])
            return 1, op
        # srem
        if members is None or op[2] not in members:
            return 0, None
        members.discard(op[2])
        if not members:
            del self._sets[key]
            if key not in self._kv:
                self._index.discard(key)
        return 1, op

    def _store(self, key: str, value: Value, expire_at: float | None) -> None:
        if key not in self._kv:
            self._index.add(key)
        self._kv[key] = value
        if expire_at is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = expire_at

    # -- housekeeping --------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Drop expired keys; return how many were dropped."""
        now = self.clock() if now is None else now
        dead = [k for k, at in self._expiry.items() if at <= now]
        for key in dead:
            self._drop_kv(key)
        return len(dead)

    def snapshot(self) -> Iterator[Op]:
        """Yield mutations that rebuild the current live state (for compaction)."""
        now = self.clock()
        for key in list(self._kv):
            value = self._live(key, now)
            if value is not None:
                yield ["set", key, value, self._expiry.get(key)]
        for name, members in self._sets.items():
            for member in members:
                yield ["sadd", name, member]
