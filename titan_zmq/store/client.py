"""StoreClient: the broker's (and tools') blocking client for the store's REP socket.

A DEALER socket sends ``[b"", frame]`` so the REP side sees an ordinary request; every
request carries a fresh ``rid`` and replies with any other rid (left over from an
earlier request) are discarded.  A request that gets no reply within ``timeout``
closes and recreates the socket (so nothing stale is queued) and raises
:class:`~titan_zmq.errors.StoreUnavailable`.  Not thread-safe: one client per thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import zmq

from titan_zmq import defaults, errors, protocol
from titan_zmq.protocol import Op

log = logging.getLogger(__name__)

Value = bytes | str


class StoreClient:
    """Blocking request/reply client for the titan store."""

    def __init__(
        self,
        addr: str = defaults.STORE_ADDR,
        timeout: float = defaults.REQUEST_TIMEOUT,
        *,
        context: zmq.Context | None = None,
    ):
        self.addr = addr
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._rids = itertools.count(1)
        self._socket: zmq.Socket | None = None
        self._connect()

    def _connect(self) -> None:
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.addr)

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
        self._connect()

    def request(
        self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return the reply body; raise on ERROR or timeout."""
        if self._socket is None:
            raise errors.TitanError("the store client is closed")
        rid = next(self._rids)
        self._socket.send_multipart([b"", protocol.encode(op, {**(body or {}), "rid": rid})])
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                self._reset()
                raise errors.StoreUnavailable(
                    f"the store at {self.addr} did not answer {op.name} within {wait:g}s"
                )
            parts = self._socket.recv_multipart()
            if len(parts) != 2 or parts[0] != b"":
                log.warning("discarding a malformed reply of %d frames from the store", len(parts))
                continue
            try:
                reply = protocol.decode(parts[1])
            except protocol.ProtocolError as exc:
                log.warning("discarding an undecodable reply from the store: %s", exc.message)
                continue
            if reply.rid != rid:
                continue  # a reply to a request we already gave up on
            if reply.is_error:
                raise errors.from_reply(str(reply.body.get("code")), str(reply.body.get("message")))
            return reply.body

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
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
