"""RequestLink: blocking request/reply over one DEALER socket, matched by request id.

Used by the client library (to the broker's ROUTER) and by StoreClient (to the store's REP).
Every request carries a fresh ``rid``, first in its body (so a peer that cannot decode the rest can
still echo it, see :func:`titan_zmq.protocol.read_rid`), and a request larger than the peer's frame
cap is refused here (the peer's ZeroMQ would drop the connection and the request would time out);
frames that do not decode and replies with another rid
(left over from a request that timed out) are dropped.  An ERROR reply raises the exception
:func:`titan_zmq.errors.from_reply` maps it to.  A request with no reply within its timeout closes
the socket (so nothing stale stays queued; the next request opens a new one) and raises what
``unavailable`` makes of it.  Not thread-safe: one link per thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from titan_zmq import defaults, sockets
from titan_zmq.errors import InvalidRequest, ProtocolError, TitanError, from_reply
from titan_zmq.protocol import Message, Op, decode, encode

log = logging.getLogger(__name__)

# What a timed-out request raises, given the op and the timeout it had.
Unavailable = Callable[[Op, float], TitanError]


class RequestLink:
    """Requests to ``address`` over a lazily opened DEALER.

    ``envelope`` sends ``[b"", frame]`` so a REP peer sees an ordinary REQ request (and expects the
    same empty delimiter on replies); without it each message is the bare frame, as a ROUTER expects.
    """

    def __init__(
        self,
        address: str,
        timeout: float,
        unavailable: Unavailable,
        *,
        envelope: bool = False,
        context: sockets.Context | None = None,
        max_body: int = defaults.MAX_BODY_BYTES,
    ):
        self.address = address
        self.max_body = max_body
        self.timeout = timeout
        self.ctx: sockets.Context = context or zmq.Context.instance()
        self._unavailable = unavailable
        self._head = [b""] if envelope else []
        self._rids = itertools.count(1)
        self._sock: sockets.Socket | None = None

    def socket(self) -> sockets.Socket:
        """The DEALER, connected on first use (and after a :meth:`reset`)."""
        if self._sock is None:
            self._sock = sockets.dealer(self.ctx, self.address)
        return self._sock

    def request(self, op: Op, body: dict[str, Any] | None = None, timeout: float | None = None) -> Message:
        """Send one request and return the reply carrying its rid; raise on ERROR or timeout."""
        rid = next(self._rids)
        fields: dict[str, Any] = {"rid": rid, **(body or {})}
        fields["rid"] = rid  # first on the wire whatever ``body`` holds
        frame = encode(op, fields)
        if len(frame) > sockets.frame_cap(self.max_body):
            raise InvalidRequest(f"a {op.name} request of {len(frame)} bytes exceeds the frame cap of "
                                 f"{sockets.frame_cap(self.max_body)} bytes")
        sock = self.socket()
        sock.send_multipart([*self._head, frame])
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                self.reset()
                raise self._unavailable(op, wait)
            parts = sock.recv_multipart()
            if len(parts) != len(self._head) + 1 or parts[:-1] != self._head:
                log.warning("discarding a malformed reply of %d frames from %s", len(parts), self.address)
                continue
            try:
                msg = decode(parts[-1])
            except ProtocolError as exc:
                log.warning("discarding an undecodable reply from %s: %s", self.address, exc.message)
                continue
            if msg.rid != rid:
                continue  # the late answer to a request that timed out earlier
            if msg.is_error:
                raise from_reply(str(msg.body.get("code", "internal")), str(msg.body.get("message", "error")))
            return msg

    def reset(self) -> None:
        """Close the socket; the next request opens a fresh one."""
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
