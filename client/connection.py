"""A request/reply link to the broker with request ids and a timeout on every call."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any
from urllib.parse import urlparse

import zmq

from titan_zmq import defaults
from titan_zmq.errors import BrokerUnavailable, from_reply
from titan_zmq.protocol import Message, Op, ProtocolError, decode, encode

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def broker_address(address: str | None = None) -> str:
    """The broker address: the argument, else $TITAN_BROKER, else the default."""
    return address or os.environ.get("TITAN_BROKER") or defaults.BROKER_ADDR


class Connection:
    """One DEALER socket; not thread-safe (use one client per thread)."""

    def __init__(self, address: str, timeout: float = defaults.REQUEST_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.ctx: zmq.Context = zmq.Context.instance()
        self._rid = itertools.count(1)
        self._sock: zmq.Socket | None = None
        self._pub: str | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.address)
            self._sock = sock
        return self._sock

    def request(self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None) -> Message:
        """Send one request and wait for the reply carrying its request id."""
        rid = next(self._rid)
        sock = self._socket()
        sock.send(encode(op, {**(body or {}), "rid": rid}))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                self.reset()
                raise BrokerUnavailable(
                    f"no answer from the broker at {self.address} within {self.timeout if timeout is None else timeout:g}s"
                    " (is it running? set --broker or TITAN_BROKER)"
                )
            try:
                msg = decode(sock.recv())
            except ProtocolError:
                continue
            if msg.rid != rid:
                continue  # the late answer to a request that timed out earlier
            if msg.is_error:
                raise from_reply(str(msg.body.get("code", "internal")), str(msg.body.get("message", "error")))
            return msg

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

    def subscribe(self, *topics: str) -> zmq.Socket:
        """A SUB socket on the broker's PUB, subscribed to ``topics`` (prefixes)."""
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 2000)  # a slow reader loses live lines, then fills the gap by GET_LOGS
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(self.pub_address())
        return sock

    def reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self._pub = None

    def close(self) -> None:
        self.reset()
