"""Request handling for the store: frame in, reply frame out, journal in between.

No sockets here (the REP loop is in ``server.py``), so every op is unit-testable.  Each
AOF record is the list of effects of one request (see ``engine.Engine.execute``), so a
KV_BATCH is journaled, replayed and lost to a torn write as one unit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from titan_zmq import defaults, keys, protocol
from titan_zmq.errors import (
    AOFCorrupt,
    BadField,
    ErrorCode,
    InvalidRequest,
    JournalFailed,
    ProtocolError,
    TitanError,
)
from titan_zmq.protocol import Message, Op
from titan_zmq.protocol import body_field as field
from titan_zmq.refusals import RefusalLog
from titan_zmq.store.aof import AOF
from titan_zmq.store.engine import Engine

log = logging.getLogger(__name__)

AOF_NAME = "store.aof"
SWEEP_INTERVAL = 1.0  # seconds between sweeps of expired keys
SNAPSHOT_RECORD_OPS = 1000  # compaction groups at most this many ops per record...
SNAPSHOT_RECORD_BYTES = 1 << 20  # ...or about this many value bytes

Handler = Callable[[Message], bytes]


def check_ttl(ttl: Any, where: str) -> float | None:
    """A ttl is None or a positive number of seconds."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise BadField(f"{where} must be a positive number of seconds, got {ttl!r:.40}")
    return float(ttl)


def chunked(ops: Iterable[list[Any]]) -> Iterator[list[list[Any]]]:
    """Group snapshot ops into AOF records of bounded size."""
    record: list[list[Any]] = []
    size = 0
    for op in ops:
        record.append(op)
        size += sum(len(x) for x in op if isinstance(x, bytes | str))
        if len(record) >= SNAPSHOT_RECORD_OPS or size >= SNAPSHOT_RECORD_BYTES:
            yield record
            record, size = [], 0
    if record:
        yield record


class StoreService:
    """The store's state plus its journal, driven one request frame at a time."""

    def __init__(
        self,
        data_dir: str | Path,
        fsync: str = defaults.FSYNC,
        *,
        clock: Callable[[], float] = time.time,
        compact_min_bytes: int = defaults.COMPACT_MIN_BYTES,
        compact_ratio: float = defaults.COMPACT_RATIO,
    ):
        self.engine = Engine(clock)
        self.aof = AOF(Path(data_dir) / AOF_NAME, fsync)
        try:
            self._load()
        except BaseException:
            self.aof.close()
            raise
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self._compacted_size = 0  # live size at the last compaction; 0 = not known yet
        self._deleted = 0  # keys deleted since the last compaction
        self._last_sweep = time.monotonic()
        self.stopped = False  # set by STOP or a journal failure; the loop exits
        self.failed = False  # the journal failed: exit non-zero
        self.counters = {"requests": 0, "bad_frames": 0, "errors": 0, "compactions": 0}
        self.refusals = RefusalLog(log, self.counters)
        self.insecure = False  # bound to a non-loopback address with --insecure (shown in the stats)
        self.peer = "unknown peer"  # where the request being handled comes from (for the log)
        self.handlers: dict[Op, Handler] = {
            Op.HEARTBEAT: self.on_ping,
            Op.STOP: self.on_stop,
            Op.STATS: self.on_stats,
            Op.KV_SET: self.on_set,
            Op.KV_GET: self.on_get,
            Op.KV_DEL: self.on_del,
            Op.KV_INCR: self.on_incr,
            Op.KV_SADD: self.on_sadd,
            Op.KV_SREM: self.on_srem,
            Op.KV_SMEMBERS: self.on_smembers,
            Op.KV_KEYS: self.on_keys,
            Op.KV_BATCH: self.on_batch,
            Op.KV_COMPACT: self.on_compact,
        }

    def _load(self) -> None:
        records = 0
        for offset, record in self.aof.scan():
            try:
                if not isinstance(record, list):
                    raise InvalidRequest(f"a record must be a list of ops, got {type(record).__name__}")
                self.engine.execute(record)
            except InvalidRequest as exc:
                raise AOFCorrupt(
                    f"{self.aof.path}: the record at byte offset {offset} is not a valid mutation "
                    f"({exc}); run `titan-store --repair` to truncate it at the last good record"
                ) from None
            records += 1
        keys, sets = self.engine.counts()
        log.info("replayed %d records from %s: %d keys, %d sets", records, self.aof.path, keys, sets)

    # -- the request path ----------------------------------------------------------

    def handle(self, frame: bytes, peer: str | None = None) -> bytes:
        """Decode one request frame and return exactly one reply frame.

        A frame that cannot be decoded is answered with the request id when one can be read, so the
        sender's link raises at once (a broker would otherwise wait and call the store down).
        """
        self.counters["requests"] += 1
        self.peer = peer or "unknown peer"
        try:
            msg = protocol.decode(frame)
        except ProtocolError as exc:
            self.refusals.refused(self.peer, exc.code, exc.message)
            return protocol.error_for(exc)
        handler = self.handlers.get(msg.op)
        if handler is None:
            message = f"the store does not serve {msg.op.name}"
            self.refusals.refused(self.peer, ErrorCode.UNKNOWN_OP, message)
            return protocol.error(ErrorCode.UNKNOWN_OP, message, msg.rid)
        try:
            return handler(msg)
        except BadField as exc:
            self.counters["errors"] += 1
            return protocol.error(ErrorCode.BAD_REQUEST, f"{msg.op.name}: {exc}", msg.rid)
        except TitanError as exc:
            self.counters["errors"] += 1
            return protocol.error(exc.code, exc.message, msg.rid)
        except Exception as exc:  # a bug must not take the store down; the REP socket must reply
            self.counters["errors"] += 1
            log.exception("internal error handling %s", msg.op.name)
            return protocol.error(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", msg.rid)

    def _mutate(self, msg: Message, ops: list[list[Any]]) -> list[Any]:
        """Apply ops atomically and journal their effects as one record before replying.

        Keys of the broker's journal (:data:`titan_zmq.keys.RESERVED`) are written only by requests
        that say they are the journal's (``journal: true``, sent by the broker's store link): a guard
        against mistakes, so no tool or direct client link can corrupt the state the broker rebuilds from.
        """
        if msg.body.get("journal") is not True:
            for op in ops:
                if isinstance(op, list) and len(op) > 1 and isinstance(op[1], str) and keys.is_reserved(op[1]):
                    raise InvalidRequest(keys.reserved_message(op[1]))
        results, effects = self.engine.execute(ops)
        self._deleted += sum(1 for effect in effects if effect[0] == "del")
        if effects:
            try:
                self.aof.append([effects])
            except Exception as exc:
                self.stopped = self.failed = True
                log.critical("cannot write %s: %s; stopping", self.aof.path, exc)
                raise JournalFailed(
                    f"journal write failed ({exc}); the store is stopping rather than serve state it "
                    "could not persist"
                ) from exc
        return results

    def tick(self) -> None:
        """Periodic work: everysec fsync, TTL sweep, auto-compaction."""
        self.aof.tick()
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = now
            self.engine.sweep()
        if self._compaction_due():
            size = self.aof.size
            try:
                before, after = self.compact()
                log.info("auto-compacted %s: %d -> %d bytes", self.aof.path, before, after)
            except Exception:
                log.exception("auto-compaction failed; the old file is intact")
                self._compacted_size, self._deleted = size, 0  # do not retry on every tick

    def _compaction_due(self) -> bool:
        """The file is big and mostly dead, or more keys were deleted since the last compaction than
        are live (finished runs leaving under retention): then most of it is history."""
        size = self.aof.size
        if size >= self.compact_min_bytes and size >= self.compact_ratio * self._compacted_size:
            return True
        return self._deleted >= defaults.COMPACT_MIN_DELETES and self._deleted >= self.engine.size()

    def compact(self) -> tuple[int, int]:
        """Rewrite the AOF from a snapshot; return (bytes before, bytes after)."""
        before = self.aof.size
        after = self.aof.rewrite(chunked(self.engine.snapshot()))
        self._compacted_size = after
        self._deleted = 0
        self.counters["compactions"] += 1
        return before, after

    def close(self) -> None:
        self.aof.close()

    # -- handlers ------------------------------------------------------------------

    def _expire_at(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.engine.clock() + ttl

    def on_ping(self, msg: Message) -> bytes:
        return protocol.reply(msg, {}, Op.ACK)

    def on_stop(self, msg: Message) -> bytes:
        log.warning("STOP requested by %s: stopping", self.peer)
        self.stopped = True
        return protocol.reply(msg, {}, Op.ACK)

    def on_stats(self, msg: Message) -> bytes:
        keys, sets = self.engine.counts()
        body = {
            "keys": keys,
            "sets": sets,
            "aof_bytes": self.aof.size,
            "fsync": self.aof.fsync,
            "insecure": self.insecure,
            **self.counters,
        }
        return protocol.reply(msg, body, Op.DATA)

    def on_set(self, msg: Message) -> bytes:
        key = field(msg.body, "key", str)
        value = field(msg.body, "value", (bytes, str))
        ttl = check_ttl(msg.body.get("ttl"), "field 'ttl'")
        self._mutate(msg, [["set", key, value, self._expire_at(ttl)]])
        return protocol.reply(msg, {}, Op.ACK)

    def on_get(self, msg: Message) -> bytes:
        value = self.engine.get(field(msg.body, "key", str))
        return protocol.reply(msg, {"found": value is not None, "value": value}, Op.DATA)

    def on_del(self, msg: Message) -> bytes:
        (deleted,) = self._mutate(msg, [["del", field(msg.body, "key", str)]])
        return protocol.reply(msg, {"deleted": deleted}, Op.ACK)

    def on_incr(self, msg: Message) -> bytes:
        key = field(msg.body, "key", str)
        by = field(msg.body, "by", int, 1)
        (value,) = self._mutate(msg, [["incr", key, by]])
        return protocol.reply(msg, {"value": value}, Op.DATA)

    def on_sadd(self, msg: Message) -> bytes:
        op = ["sadd", field(msg.body, "key", str), field(msg.body, "member", (bytes, str))]
        (added,) = self._mutate(msg, [op])
        return protocol.reply(msg, {"added": added}, Op.DATA)

    def on_srem(self, msg: Message) -> bytes:
        op = ["srem", field(msg.body, "key", str), field(msg.body, "member", (bytes, str))]
        (removed,) = self._mutate(msg, [op])
        return protocol.reply(msg, {"removed": removed}, Op.DATA)

    def on_smembers(self, msg: Message) -> bytes:
        members = self.engine.smembers(field(msg.body, "key", str))
        return protocol.reply(msg, {"members": members}, Op.DATA)

    def on_keys(self, msg: Message) -> bytes:
        """One page of a prefix query: at most ``limit`` keys (capped by :data:`defaults.KEYS_PAGE`) and
        about ``max_bytes`` (capped by :data:`defaults.KEYS_PAGE_BYTES`), from after ``after``; the
        reply's ``next`` is the cursor of the following page (None after the last one)."""
        prefix = field(msg.body, "prefix", str, "")
        after = field(msg.body, "after", (str, type(None)), None)
        limit = min(max(1, field(msg.body, "limit", int, defaults.KEYS_PAGE)), defaults.KEYS_PAGE)
        max_bytes = min(max(1, field(msg.body, "max_bytes", int, defaults.KEYS_PAGE_BYTES)), defaults.KEYS_PAGE_BYTES)
        max_value = field(msg.body, "max_value", (int, type(None)), None)
        values = field(msg.body, "values", bool, False)
        page = self.engine.scan(prefix, after, values=values, limit=limit, max_bytes=max_bytes, max_value=max_value)
        if values:
            return protocol.reply(msg, {"items": page.items, "oversize": page.oversize, "next": page.next}, Op.DATA)
        return protocol.reply(msg, {"keys": page.keys, "next": page.next}, Op.DATA)

    def on_batch(self, msg: Message) -> bytes:
        ops = field(msg.body, "ops", list)
        converted = []
        for index, op in enumerate(ops):
            if isinstance(op, list) and len(op) == 4 and op[0] == "set":
                try:
                    ttl = check_ttl(op[3], "ttl")
                except BadField as exc:
                    raise InvalidRequest(f"op {index}: {exc}") from None
                op = ["set", op[1], op[2], self._expire_at(ttl)]
            converted.append(op)
        results = self._mutate(msg, converted)
        return protocol.reply(msg, {"results": results}, Op.DATA)

    def on_compact(self, msg: Message) -> bytes:
        before, after = self.compact()
        return protocol.reply(msg, {"before": before, "after": after}, Op.ACK)
