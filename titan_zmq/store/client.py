"""StoreClient: the broker's (and tools') blocking client for the store's REP socket.

A :class:`~titan_zmq.reqlink.RequestLink` with the REQ envelope (``[b"", frame]``), so the REP
side sees an ordinary request; stale and undecodable replies are dropped there.  A request that
gets no reply within ``timeout`` drops the socket (so nothing stale is queued) and raises
:class:`~titan_zmq.errors.StoreUnavailable`.  Not thread-safe: one client per thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from titan_zmq import defaults, errors, sockets
from titan_zmq.protocol import Op
from titan_zmq.reqlink import RequestLink

Value = bytes | str


@dataclass(frozen=True, slots=True)
class Page:
    """One reply of a prefix query (see :meth:`StoreClient.pages`)."""

    keys: list[str]  # the keys of this page, in order (with values: the KV keys returned)
    items: dict[str, Value] = field(default_factory=dict)  # with values: key -> value
    oversize: dict[str, int] = field(default_factory=dict)  # with max_value: keys left out -> value length


class StoreClient:
    """Blocking request/reply client for the titan store."""

    def __init__(
        self,
        addr: str = defaults.STORE_ADDR,
        timeout: float = defaults.REQUEST_TIMEOUT,
        *,
        context: sockets.Context | None = None,
    ):
        self.addr = addr
        self.timeout = timeout
        self._link: RequestLink | None = RequestLink(
            addr, timeout, self._unavailable, envelope=True, context=context)

    def _unavailable(self, op: Op, wait: float) -> errors.TitanError:
        return errors.StoreUnavailable(f"the store at {self.addr} did not answer {op.name} within {wait:g}s")

    def request(
        self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return the reply body; raise on ERROR or timeout."""
        if self._link is None:
            raise errors.TitanError("the store client is closed")
        return self._link.request(op, body, self.timeout if timeout is None else timeout).body

    # -- operations ----------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> bool:
        """True when the store answers (raises StoreUnavailable otherwise)."""
        self.request(Op.HEARTBEAT, timeout=timeout)
        return True

    def get(self, key: str) -> Value | None:
        reply = self.request(Op.KV_GET, {"key": key})
        return reply.get("value") if reply.get("found") else None

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        body: dict[str, Any] = {"key": key, "value": value}
        if ttl is not None:
            body["ttl"] = ttl
        self.request(Op.KV_SET, body)

    def delete(self, key: str) -> bool:
        """Delete a key (and a set of that name); True when something was there."""
        return bool(self.request(Op.KV_DEL, {"key": key})["deleted"])

    def incr(self, key: str, by: int = 1) -> int:
        return int(self.request(Op.KV_INCR, {"key": key, "by": by})["value"])

    def sadd(self, key: str, member: Value) -> int:
        """1 when ``member`` was added, 0 when it was already there."""
        return int(self.request(Op.KV_SADD, {"key": key, "member": member})["added"])

    def srem(self, key: str, member: Value) -> int:
        """1 when ``member`` was removed, 0 when it was not there."""
        return int(self.request(Op.KV_SREM, {"key": key, "member": member})["removed"])

    def smembers(self, key: str) -> list[Value]:
        return list(self.request(Op.KV_SMEMBERS, {"key": key})["members"])

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted KV keys and set names starting with ``prefix`` (every page)."""
        return [key for page in self.pages(prefix) for key in page.keys]

    def items(self, prefix: str = "") -> dict[str, Value]:
        """KV keys starting with ``prefix`` with their values, in key order (sets not included; every page)."""
        return {key: value for page in self.pages(prefix, values=True) for key, value in page.items.items()}

    def pages(self, prefix: str = "", *, values: bool = False, after: str | None = None,
              limit: int = defaults.KEYS_PAGE, max_bytes: int = defaults.KEYS_PAGE_BYTES,
              max_value: int | None = None, timeout: float | None = None) -> Iterator[Page]:
        """The keys starting with ``prefix`` (after ``after``), one bounded reply at a time, in key order.

        Each page holds at most ``limit`` keys and about ``max_bytes`` bytes (the store caps both);
        with ``values`` it carries the values too, except those longer than ``max_value``, which come
        in ``oversize`` with their length instead.
        """
        body: dict[str, Any] = {"prefix": prefix, "values": values, "limit": limit, "max_bytes": max_bytes}
        if max_value is not None:
            body["max_value"] = max_value
        while True:
            reply = self.request(Op.KV_KEYS, {**body, "after": after}, timeout)
            if values:
                items = dict(reply["items"])
                oversize = dict(reply.get("oversize") or {})
                yield Page(sorted([*items, *oversize]), items, oversize)
            else:
                yield Page(list(reply["keys"]))
            after = reply.get("next")
            if after is None:
                return

    def batch(self, ops: list[list[Any]], journal: bool = False) -> list[Any]:
        """Apply mutations atomically, journaled as one unit; ``set`` takes a ttl in seconds.

        ``journal``: the writes are the broker's journal (the store refuses reserved keys otherwise).
        """
        body: dict[str, Any] = {"ops": ops, "journal": True} if journal else {"ops": ops}
        return list(self.request(Op.KV_BATCH, body)["results"])

    def compact(self) -> dict[str, int]:
        """Rewrite the AOF; returns ``{"before": bytes, "after": bytes}``."""
        reply = self.request(Op.KV_COMPACT)
        return {"before": reply["before"], "after": reply["after"]}

    def stats(self) -> dict[str, Any]:
        reply = self.request(Op.STATS)
        reply.pop("rid", None)
        return reply

    def stop(self) -> None:
        """Ask the store process to exit cleanly."""
        self.request(Op.STOP)

    def close(self) -> None:
        if self._link is not None:
            self._link.reset()
            self._link = None

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
