"""The broker's event fan-out: an XPUB socket that knows which topics anyone listens to.

Subscribers (``titan logs -f``, ``wait``, the UI) subscribe by topic prefix (``log/<run>/<job>/``,
``job/<run>/``, ``run/<run>/``, ``hb/``).  ZeroMQ tells an XPUB socket about the first subscription
to a prefix and the last unsubscription (including the ones of a subscriber that went away), so the
broker keeps the set of wanted prefixes and does not even encode an event nobody would receive.

Memory: a prefix longer than ``PUB_MAX_PREFIX`` never gets in (the socket's ``MAXMSGSIZE``, see
:func:`titan_zmq.sockets.xpub`), and every event frame stays under ``PUB_EVENT_BYTES`` (a log event
is split by lines), so what queues for one slow subscriber is bounded by ``PUB_HWM`` events and by
``PUB_HWM x PUB_EVENT_BYTES`` bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import zmq

from titan_zmq import defaults, sockets
from titan_zmq.protocol import Op, encode

log = logging.getLogger(__name__)


def split_event(body: dict[str, Any], max_bytes: int) -> Iterator[bytes | None]:
    """``body`` as one or more DATA frames of at most ``max_bytes`` (an event with ``lines`` is split
    between lines); None in place of a piece that still does not fit (the caller counts it)."""
    frame = encode(Op.DATA, body)
    lines = body.get("lines")
    if len(frame) <= max_bytes or not isinstance(lines, list) or len(lines) < 2:
        yield frame if len(frame) <= max_bytes else None
        return
    half = len(lines) // 2  # halving keeps the number of encodes at O(n log n) in the worst case
    yield from split_event({**body, "lines": lines[:half]}, max_bytes)
    yield from split_event({**body, "lines": lines[half:]}, max_bytes)


class EventPublisher:
    def __init__(self, ctx: sockets.Context, addr: str, max_event: int = defaults.PUB_EVENT_BYTES):
        self.sock = sockets.xpub(ctx, addr)
        self.max_event = max_event
        self.prefixes: set[bytes] = set()  # prefixes at least one subscriber listens to
        self.dropped = 0  # events too big to publish even split (subscribers refill logs by GET_LOGS)

    def wanted(self, topic: str) -> bool:
        """Whether any subscriber would receive an event on ``topic``."""
        t = topic.encode()
        return any(t.startswith(p) for p in self.prefixes)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        if not self.wanted(topic):
            return
        for frame in split_event(body, self.max_event):
            if frame is not None:
                self.sock.send_multipart([topic.encode(), frame])
            else:
                self.dropped += 1
                log.warning("an event on %s is over %d bytes even split: not published", topic, self.max_event)

    def on_subscriptions(self) -> None:
        """Take the (un)subscriptions waiting on the socket: ``\\x01prefix`` or ``\\x00prefix``."""
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.prefixes.add(msg[1:])
            elif msg[:1] == b"\x00":
                self.prefixes.discard(msg[1:])

    def close(self) -> None:
        self.sock.close(0)
