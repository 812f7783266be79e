"""StoreClient: the broker's (and tools') blocking client for the store's REP socket.

A :class:`~titan_zmq.reqlink.RequestLink` with the REQ envelope (``[b"", frame]``), so the REP
side sees an ordinary request; stale and undecodable replies are dropped there.  A request that
gets no reply within ``timeout`` drops the socket (so nothing stale is queued) and raises
:class:`~titan_zmq.errors.StoreUnavailable`.  Not thread-safe: one client per thread.
"""

from __future__ import annotations

from typing import Any

from titan_zmq import defaults, errors, sockets
from titan_zmq.protocol import Op
from titan_zmq.reqlink import RequestLink

Value = bytes | str


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
        """Sorted KV keys and set names starting with ``prefix``."""
        return list(self.request(Op.KV_KEYS, {"prefix": prefix})["keys"])

    def items(self, prefix: str = "") -> dict[str, Value]:
        """KV keys starting with ``prefix`` with their values (sets not included)."""
        return dict(self.request(Op.KV_KEYS, {"prefix": prefix, "values": True})["items"])

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
