"""Every titan socket is made here, one function per role, so none exists without its limits.

Each function sets the options before the socket binds or connects: LINGER 0 (closing never
blocks on unsent frames), the high-water marks from :mod:`titan_zmq.defaults`, and on every bound
socket ``ZMQ_MAXMSGSIZE`` = :func:`frame_cap` (the XPUB: the longest subscription prefix), so libzmq
drops a peer that sends a larger frame before it is read into memory (libzmq reports that only as a
disconnect, so the process cannot count it; clients refuse to send such a frame in the first place,
see :mod:`titan_zmq.reqlink`); smaller oversize lies in the header get an ERROR reply from
:func:`titan_zmq.protocol.decode`.  ROUTER sockets use ROUTER_MANDATORY, so a send to a peer that
is gone fails instead of vanishing.

CURVE: :func:`_secure` is the single place where keys will be applied (server keys on the bound
sockets, client keys on the connecting ones); nothing else creates a socket, so nothing can skip it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import zmq

from titan_zmq import defaults
from titan_zmq.protocol import HEADER_SIZE

Socket: TypeAlias = "zmq.Socket[bytes]"
Context: TypeAlias = "zmq.Context[Any]"


def frame_cap(max_body: int = defaults.MAX_BODY_BYTES) -> int:
    """The largest valid frame: the 8-byte header plus a body of ``max_body`` bytes."""
    return max_body + HEADER_SIZE


def _secure(sock: Socket, server: bool) -> None:
    """Apply CURVE keys to ``sock`` (not yet: every link is plain TCP on loopback by default).

    When keys land, a server socket (one that binds: ROUTER, XPUB, REP) gets ``CURVE_SERVER`` and
    the server secret key; a client socket (DEALER, SUB) the server's public key and its own key
    pair.  Refusing to bind another interface without keys is the commands' job, not this one's.
    """


def _make(ctx: Context, kind: int, server: bool) -> Socket:
    sock: Socket = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    _secure(sock, server)
    return sock


def _bind(sock: Socket, addr: str, cap: int) -> Socket:
    """Cap the frame size and bind; a socket that cannot bind is closed before the error goes up."""
    sock.setsockopt(zmq.MAXMSGSIZE, cap)
    try:
        sock.bind(addr)
    except zmq.ZMQError:
        sock.close(0)
        raise
    return sock


def router(ctx: Context, bind: str, max_body: int = defaults.MAX_BODY_BYTES) -> Socket:
    """The broker's ROUTER for clients and workers; sends to a gone peer raise (ROUTER_MANDATORY)."""
    sock = _make(ctx, zmq.ROUTER, server=True)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return _bind(sock, bind, frame_cap(max_body))


SUBSCRIBE_OVERHEAD = 16  # bytes a subscription message adds to its prefix (ZMTP 3.1: "\x09SUBSCRIBE" + prefix)


def xpub(ctx: Context, bind: str, max_prefix: int = defaults.PUB_MAX_PREFIX) -> Socket:
    """The broker's event fan-out; a slow subscriber loses events past ``PUB_HWM``.

    The only frames an XPUB receives are (un)subscriptions, so its ``MAXMSGSIZE`` is the longest
    prefix accepted: ZeroMQ keeps every prefix in a trie costing ~50 bytes per prefix byte, and a
    peer sending a longer one is disconnected before the prefix is read into memory.
    """
    sock = _make(ctx, zmq.XPUB, server=True)
    sock.setsockopt(zmq.SNDHWM, defaults.PUB_HWM)
    return _bind(sock, bind, max_prefix + SUBSCRIBE_OVERHEAD)


def rep(
    ctx: Context,
    bind: str,
    max_body: int = defaults.MAX_BODY_BYTES,
    recv_timeout_ms: int = -1,
) -> Socket:
    """The store's REP socket; ``recv_timeout_ms`` lets a blocking recv wake up for timers."""
    sock = _make(ctx, zmq.REP, server=True)
    sock.setsockopt(zmq.RCVTIMEO, recv_timeout_ms)
    return _bind(sock, bind, frame_cap(max_body))


def dealer(
    ctx: Context,
    connect: str,
    *,
    identity: bytes | None = None,
    sndhwm: int | None = None,
) -> Socket:
    """A DEALER connected to ``connect`` (clients, workers, the broker's store link).

    ``identity`` must be fresh for every connection (a reused one would inherit the old peer's
    queue on the ROUTER); ``sndhwm`` bounds what queues while the peer is slow or gone.
    """
    sock = _make(ctx, zmq.DEALER, server=False)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.connect(connect)
    return sock


def sub(ctx: Context, connect: str, topics: Iterable[str]) -> Socket:
    """A SUB on the broker's PUB, subscribed to each topic prefix; buffers at most ``SUB_HWM``."""
    sock = _make(ctx, zmq.SUB, server=False)
    sock.setsockopt(zmq.RCVHWM, defaults.SUB_HWM)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(connect)
    return sock
