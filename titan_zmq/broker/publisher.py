"""The broker's event fan-out: an XPUB socket that knows which topics anyone listens to.

Subscribers (``titan logs -f``, ``wait``, the UI) subscribe by topic prefix (``log/<run>/<job>/``,
``job/<run>/``, ``run/<run>/``, ``hb/``).  ZeroMQ tells an XPUB socket about the first subscription
to a prefix and the last unsubscription (including the ones of a subscriber that went away), so the
broker keeps the set of wanted prefixes and does not even encode an event nobody would receive.
"""

from __future__ import annotations

from typing import Any

import zmq

from titan_zmq import sockets
from titan_zmq.protocol import Op, encode


class EventPublisher:
    def __init__(self, ctx: sockets.Context, addr: str):
        self.sock = sockets.xpub(ctx, addr)
        self.prefixes: set[bytes] = set()  # prefixes at least one subscriber listens to

    def wanted(self, topic: str) -> bool:
        """Whether any subscriber would receive an event on ``topic``."""
        t = topic.encode()
        return any(t.startswith(p) for p in self.prefixes)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        if self.wanted(topic):
            self.sock.send_multipart([topic.encode(), encode(Op.DATA, body)])

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
