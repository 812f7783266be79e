"""The store's append-only file: length + CRC framed msgpack records.

Record layout::

    offset 0  length  u32  big-endian, payload bytes
    offset 4  crc32   u32  big-endian, zlib.crc32 of the payload
    offset 8  payload msgpack (protocol.pack)

Damage at the very end of the file is what a crash mid-write leaves behind (a partial
header, a partial payload, or a CRC mismatch on a record that ends exactly at EOF); it
is cut off with a warning on replay.  Damage with good data after it is not a torn
write, so replay refuses to guess and raises :class:`AOFCorrupt`; ``titan-store
--repair`` (:func:`repair`) then truncates the file at the last good record.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from titan_zmq import protocol
from titan_zmq.defaults import MAX_BODY_BYTES
from titan_zmq.errors import AOFCorrupt

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct(">II")
# No request can produce a record this large, so a length above it is a damaged header,
# not a torn write (which would otherwise silently cut everything after it).
MAX_RECORD_BYTES = 2 * MAX_BODY_BYTES
FSYNC_POLICIES = ("always", "everysec", "no")
EVERYSEC_INTERVAL = 1.0  # seconds between fsyncs under the "everysec" policy


class _Damage(Exception):
    """Where a scan stopped; ``tail`` is True when the damage looks like a torn write."""

    def __init__(self, offset: int, reason: str, tail: bool):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.tail = tail


def encode_record(payload: Any) -> bytes:
    """Frame one payload as header + msgpack bytes."""
    data = protocol.pack(payload)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(data)} bytes exceeds the cap of {MAX_RECORD_BYTES}")
    return RECORD_HEADER.pack(len(data), zlib.crc32(data)) + data


def _scan(f: BinaryIO, size: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(offset, payload)`` for each good record; raise :class:`_Damage` where it stops."""
    offset = 0
    while offset < size:
        header = f.read(RECORD_HEADER.size)
        if len(header) < RECORD_HEADER.size:
            raise _Damage(offset, f"partial record header ({len(header)} of 8 bytes)", tail=True)
        length, crc = RECORD_HEADER.unpack(header)
        end = offset + RECORD_HEADER.size + length
        if length > MAX_RECORD_BYTES:
            raise _Damage(offset, f"implausible record length {length}", tail=False)
        if end > size:
            raise _Damage(
                offset, f"partial record ({size - offset - 8} of {length} payload bytes)", tail=True
            )
        data = f.read(length)
        if zlib.crc32(data) != crc:
            raise _Damage(offset, "CRC mismatch", tail=end == size)
        try:
            payload = protocol.unpack(data)
        except Exception as exc:  # msgpack raises several types
            raise _Damage(offset, f"undecodable record ({exc})", tail=False) from None
        yield offset, payload
        offset = end


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: str | os.PathLike[str]) -> int:
    """Truncate the file at ``path`` after its last good record; return how many bytes were cut."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    good = size
    with open(path, "rb") as f:
        try:
            for _ in _scan(f, size):
                pass
        except _Damage as damage:
            good = damage.offset
    if good < size:
        os.truncate(path, good)
        log.warning("repaired %s: cut %d bytes after offset %d", path, size - good, good)
    return size - good


class AOF:
    """An append-only file of msgpack records with a configurable fsync policy.

    Not thread-safe: the store's single server loop owns it.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: str = "always"):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._tmp.unlink(missing_ok=True)  # left over from a crash mid-rewrite; the old file is intact
        self._file: BinaryIO = open(self.path, "ab")
        self.size = self.path.stat().st_size
        self._dirty = False
        self._last_fsync = time.monotonic()

    # -- reading -------------------------------------------------------------------

    def scan(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(offset, payload)`` for every record; cut a torn tail, raise on corruption."""
        self._file.flush()
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            try:
                yield from _scan(f, size)
            except _Damage as damage:
                if not damage.tail:
                    raise AOFCorrupt(
                        f"{self.path} is corrupt at byte offset {damage.offset}: {damage.reason}, "
                        f"with {size - damage.offset} bytes after it; run `titan-store --repair` "
                        "to truncate it at the last good record"
                    ) from None
                log.warning(
                    "%s: %s at byte offset %d (a write cut short); truncating %d bytes",
                    self.path,
                    damage.reason,
                    damage.offset,
                    size - damage.offset,
                )
                os.truncate(self.path, damage.offset)
        self.size = self.path.stat().st_size

    def replay(self) -> Iterator[Any]:
        """Yield every payload in order (see :meth:`scan` for damage handling)."""
        for _offset, payload in self.scan():
            yield payload

    # -- writing -------------------------------------------------------------------

    def append(self, records: list[Any]) -> None:
        """Write the records of one request, then flush/fsync as the policy says."""
        if not records:
            return
        blob = b"".join(encode_record(r) for r in records)
        self._file.write(blob)
        self._file.flush()
        self.size += len(blob)
        self._dirty = True
        if self.fsync == "always":
            self._sync()
        elif self.fsync == "everysec":
            self.tick()

    def tick(self) -> None:
        """Under ``everysec``, fsync when there are unsynced writes and a second has passed."""
        if self.fsync == "everysec" and self._dirty:
            if time.monotonic() - self._last_fsync >= EVERYSEC_INTERVAL:
                self._sync()

    def _sync(self) -> None:
        os.fsync(self._file.fileno())
        self._dirty = False
        self._last_fsync = time.monotonic()

    def rewrite(self, records: Iterable[Any]) -> int:
        """Atomically replace the file with ``records`` (compaction); return the new size."""
        self._file.flush()
        try:
            with open(self._tmp, "wb") as out:
                for record in records:
                    out.write(encode_record(record))
                out.flush()
                os.fsync(out.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._file.close()
        self._file = open(self.path, "ab")
        self.size = self.path.stat().st_size
        self._dirty = False
        self._last_fsync = time.monotonic()
        return self.size

    def close(self) -> None:
        """Flush, fsync and close; safe to call twice."""
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def __enter__(self) -> AOF:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
