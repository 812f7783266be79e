"""A request/reply link to the broker with request ids and a timeout on every call."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from titan_zmq import defaults, sockets
from titan_zmq.errors import BrokerUnavailable, TitanError
from titan_zmq.protocol import Message, Op
from titan_zmq.reqlink import RequestLink

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def broker_address(address: str | None = None) -> str:
    """The broker address: the argument, else $TITAN_BROKER, else the default."""
    return address or os.environ.get("TITAN_BROKER") or defaults.BROKER_ADDR


class Connection:
    """A request link to the broker plus its PUB address; not thread-safe (use one client per thread)."""

    def __init__(self, address: str, timeout: float = defaults.REQUEST_TIMEOUT):
        self.address = address
        self.timeout = timeout
        # the broker's frame cap (its --max-body / TITAN_MAX_BODY): larger requests are refused here
        max_body = int(os.environ.get("TITAN_MAX_BODY") or defaults.MAX_BODY_BYTES)
        self._link = RequestLink(address, timeout, self._unavailable, max_body=max_body)
        self.ctx = self._link.ctx
        self._pub: str | None = None

    def _unavailable(self, op: Op, wait: float) -> TitanError:
        return BrokerUnavailable(
            f"no answer from the broker at {self.address} within {wait:g}s (is it running? set --broker or TITAN_BROKER)"
        )

    def request(self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None) -> Message:
        """Send one request and wait for the reply carrying its request id."""
        return self._link.request(op, body, self.timeout if timeout is None else timeout)

    def pub_address(self) -> str:
        """The broker's PUB address, as reachable from here."""
        if self._pub is None:
            self._pub = self._reachable(str(self.request(Op.HEARTBEAT).body["pub"]))
        return self._pub

    def store_address(self) -> str:
        """The store's address as the broker knows it, made reachable from here."""
        return self._reachable(str(self.request(Op.HEARTBEAT).body["store"]))

    def _reachable(self, reported: str) -> str:
        """A wildcard or loopback host the broker reports means "the broker's host" from here."""
        addr, mine = urlparse(reported), urlparse(self.address)
        host = addr.hostname
        if host in (None, "*", "0.0.0.0", "::") or (host in LOOPBACK and mine.hostname not in LOOPBACK):
            host = mine.hostname
        return f"{addr.scheme}://{host}:{addr.port}"

    def subscribe(self, *topics: str) -> sockets.Socket:
        """A SUB socket on the broker's PUB, subscribed to ``topics`` (prefixes)."""
        return sockets.sub(self.ctx, self.pub_address(), topics)

    def reset(self) -> None:
        """Drop the socket (the next request opens a new one) and forget the PUB address."""
        self._link.reset()
        self._pub = None

    def close(self) -> None:
        self.reset()
