"""The store's REP socket loop: receive a frame, let :class:`StoreService` answer, reply.

The loop polls with a timeout so the everysec fsync, the TTL sweep and a stop request
(STOP, SIGTERM) are handled even when no request arrives.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import zmq

from titan_zmq import defaults, protocol, sockets
from titan_zmq.errors import ErrorCode
from titan_zmq.store.service import StoreService

log = logging.getLogger(__name__)

POLL_MS = 100  # loop wake-up interval: bounds stop latency and everysec fsync jitter
STOP_LINGER_MS = 500  # on close, give the STOP reply this long to get out
# Replied when even building an error reply failed, so the REP socket still answers once.
_FALLBACK = protocol.error(ErrorCode.INTERNAL, "internal error while building the reply")


def peer_address(frame: zmq.Frame) -> str:
    """The address a request came from, as ZeroMQ knows it (for the log)."""
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:  # not over TCP (ipc, inproc): ZeroMQ does not know
        return "unknown peer"


class StoreServer:
    """A REP socket bound to ``bind`` serving a :class:`StoreService` on ``data_dir``.

    The AOF is replayed before the socket is bound, so a corrupt file
    (:class:`~titan_zmq.errors.AOFCorrupt`) fails construction and nothing listens.
    """

    def __init__(
        self,
        bind: str = defaults.STORE_ADDR,
        data_dir: str | Path = defaults.DATA_DIR,
        fsync: str = defaults.FSYNC,
        *,
        context: sockets.Context | None = None,
        compact_min_bytes: int = defaults.COMPACT_MIN_BYTES,
        compact_ratio: float = defaults.COMPACT_RATIO,
        insecure: bool = False,
    ):
        self.bind = bind
        self.service = StoreService(
            data_dir, fsync, compact_min_bytes=compact_min_bytes, compact_ratio=compact_ratio
        )
        self.service.insecure = insecure
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._stop_requested = False
        try:
            # a blocking recv with a timeout: one call per request, and the loop still wakes for timers
            self.socket = sockets.rep(self.context, bind, recv_timeout_ms=POLL_MS)
        except zmq.ZMQError:
            self.service.close()
            if self._own_context:
                self.context.term()
            raise

    def stop(self) -> None:
        """Ask the loop to exit after the current request (safe from a signal handler)."""
        self._stop_requested = True

    @property
    def failed(self) -> bool:
        """True when the loop stopped because the journal could not be written."""
        return self.service.failed

    def serve(self) -> None:
        """Serve until STOP, :meth:`stop` or a journal failure, then :meth:`close`."""
        log.info("titan-store listening on %s (fsync=%s)", self.bind, self.service.aof.fsync)
        try:
            while not (self._stop_requested or self.service.stopped):
                try:
                    parts = self.socket.recv_multipart(copy=False)  # frames: they know their peer
                except zmq.Again:
                    parts = None
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:  # a signal (SIGTERM) arrived: look at the stop flag
                        continue
                    raise
                if parts is not None:
                    self.socket.send(self._answer(parts))
                self.service.tick()
        finally:
            self.close()

    def _answer(self, parts: list[zmq.Frame]) -> bytes:
        peer = peer_address(parts[0])
        if len(parts) != 1:
            self.service.counters["requests"] += 1
            message = f"expected one frame per request, got {len(parts)}"
            self.service.refusals.refused(peer, ErrorCode.BAD_REQUEST, message)
            return protocol.error(ErrorCode.BAD_REQUEST, message)
        try:
            return self.service.handle(parts[0].bytes, peer)
        except Exception:
            log.exception("failed to build a reply")
            return _FALLBACK

    def close(self) -> None:
        """Flush and fsync the AOF, close the socket; safe to call twice."""
        self.service.close()
        if not self.socket.closed:
            self.socket.close(linger=STOP_LINGER_MS)
        if self._own_context and not self.context.closed:
            self.context.term()

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
