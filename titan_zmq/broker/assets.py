"""Named assets and artifacts, moved in pieces so no side holds a whole file in memory.

An upload is a series of UPLOAD_ASSET requests, each carrying the next piece (``offset``, ``data``)
and the total ``size``; the first one (offset 0) is refused at once when ``size`` is over the
broker's ``--max-asset-bytes``, and every later one names the upload id the first reply gave.  Each
piece goes to the store as it arrives (``chunk/<upload id>/<n>``); the asset becomes visible only
with the last piece, when its manifest (``asset/<name>``: id, size, sha256, pieces) is written in
the same store batch (which also deletes the pieces of the version it replaces).  A half-uploaded
asset is therefore never served; an upload left silent for ``UPLOAD_IDLE`` seconds is given up and
its pieces deleted when the next upload starts.

A download asks for piece after piece (FETCH_ASSET with ``index``) naming the version (``id``) the
first reply gave, so a replaced asset is noticed instead of mixed.  A request without ``index`` is
the old single-frame form: it gets the whole asset when it is one piece.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from titan_zmq import defaults, keys
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.protocol import Message, pack, unpack
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass
class Upload:
    """An upload in progress."""

    name: str
    size: int
    received: int = 0
    pieces: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    touched: float = 0.0


def manifest_of(value: Any) -> dict[str, Any] | None:
    """The manifest stored under ``asset/<name>``; None for a value stored whole by an older version."""
    if not isinstance(value, bytes):
        return None
    try:
        doc = unpack(value)
    except Exception:  # raw bytes of an asset stored whole
        return None
    if isinstance(doc, dict) and doc.get("v") == MANIFEST_VERSION and isinstance(doc.get("id"), str):
        return doc
    return None


class Assets:
    """Uploads in progress and piecewise downloads, over the store link."""

    def __init__(self, store: StoreClient, max_asset: int = defaults.MAX_ASSET_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.max_asset = max_asset
        self.clock = clock
        self.uploads: dict[str, Upload] = {}

    # ---- upload ------------------------------------------------------------------------------

    def upload(self, msg: Message) -> dict[str, Any]:
        """Take one piece; returns the reply body (``done`` with the manifest once complete)."""
        name, data = msg.field("name", str), msg.field("data", bytes)
        size = msg.field("size", int, len(data))  # without a size: the whole asset in one request
        offset = msg.field("offset", int, 0)
        upload_id = msg.field("upload", (str, type(None)), None)
        if upload_id is None:
            upload_id, up = self._begin(name, size, offset)
        else:
            up = self._upload(upload_id, name)
        if offset != up.received:
            raise InvalidRequest(f"upload of {name!r}: piece at offset {offset}, expected {up.received}")
        if up.received + len(data) > up.size:
            self._abort(upload_id)
            raise InvalidRequest(f"upload of {name!r}: more than the announced {up.size} bytes")
        ops: list[list[Any]] = []
        if data:
            ops.append(["set", keys.chunk_key(upload_id, up.pieces), data, None])
            up.pieces += 1
            up.received += len(data)
            up.sha.update(data)
        up.touched = self.clock()
        done = up.received == up.size
        body: dict[str, Any] = {"name": name, "upload": upload_id, "received": up.received, "done": done}
        if done:
            manifest = {"v": MANIFEST_VERSION, "id": upload_id, "size": up.size, "sha256": up.sha.hexdigest(),
                        "pieces": up.pieces}
            ops += self._replace_ops(name) + [["set", keys.asset_key(name), pack(manifest), None]]
            body.update(size=up.size, sha256=manifest["sha256"])
        try:
            self.store.batch(ops, journal=True)
        except Exception:
            self._abort(upload_id)  # the client starts again; pieces already in are deleted
            raise
        if done:
            del self.uploads[upload_id]
        return body

    def _begin(self, name: str, size: int, offset: int) -> tuple[str, Upload]:
        if size < 0 or offset != 0:
            raise InvalidRequest(f"upload of {name!r}: a new upload starts at offset 0 with a size >= 0")
        if size > self.max_asset:
            raise InvalidRequest(f"asset {name!r} is {size} bytes, over the broker's limit of {self.max_asset} "
                                 "bytes (--max-asset-bytes / TITAN_MAX_ASSET_BYTES)")
        self._expire()
        upload_id = secrets.token_hex(8)
        self.uploads[upload_id] = Upload(name, size, touched=self.clock())
        return upload_id, self.uploads[upload_id]

    def _upload(self, upload_id: str, name: str) -> Upload:
        up = self.uploads.get(upload_id)
        if up is None or up.name != name:
            raise NotFound(f"no upload {upload_id!r} of {name!r} in progress (given up, or the broker restarted): "
                           "upload again")
        return up

    def _expire(self) -> None:
        """Give up uploads silent for too long, and the oldest one when too many are open."""
        now = self.clock()
        idle = [u for u, up in self.uploads.items() if now - up.touched > defaults.UPLOAD_IDLE]
        if len(self.uploads) - len(idle) >= defaults.UPLOADS_MAX:
            idle.append(min(self.uploads, key=lambda u: self.uploads[u].touched))
        for upload_id in set(idle):
            log.warning("giving up the unfinished upload %s of %r", upload_id, self.uploads[upload_id].name)
            self._abort(upload_id)

    def _abort(self, upload_id: str) -> None:
        up = self.uploads.pop(upload_id, None)
        if up is not None and up.pieces:
            try:
                self.store.batch([["del", keys.chunk_key(upload_id, n)] for n in range(up.pieces)], journal=True)
            except Exception:  # the store is away: the pieces stay, unreferenced (logged)
                log.warning("could not delete the %d pieces of upload %s", up.pieces, upload_id)

    def _replace_ops(self, name: str) -> list[list[Any]]:
        """Deletes of the pieces of the version of ``name`` being replaced."""
        old = manifest_of(self.store.get(keys.asset_key(name)))
        if old is None:
            return []
        return [["del", keys.chunk_key(old["id"], n)] for n in range(int(old.get("pieces", 0)))]

    # ---- download ----------------------------------------------------------------------------

    def fetch(self, msg: Message) -> dict[str, Any]:
        """One piece of an asset with its manifest (``index`` absent: the whole of a one-piece asset)."""
        name = msg.field("name", str)
        index = msg.field("index", (int, type(None)), None)
        version = msg.field("id", (str, type(None)), None)
        value = self.store.get(keys.asset_key(name))
        if value is None:
            raise NotFound(f"no asset named {name!r}")
        manifest = manifest_of(value)
        data: Any = value.encode() if isinstance(value, str) else value
        if manifest is None:  # stored whole by an older version: one piece
            manifest = {"id": "", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pieces": 1}
        elif version is not None and version != manifest["id"]:
            raise NotFound(f"asset {name!r} was replaced during the download: fetch it again")
        pieces = int(manifest["pieces"])
        if index is None and pieces > 1:
            raise InvalidRequest(f"asset {name!r} is {manifest['size']} bytes in {pieces} pieces: fetch it by "
                                 "piece ('index'), as `titan download` does")
        at = index or 0
        if not (0 <= at < max(1, pieces)):
            raise InvalidRequest(f"asset {name!r} has no piece {at}")
        if manifest["id"] and pieces:
            data = self.store.get(keys.chunk_key(manifest["id"], at))
            if not isinstance(data, bytes):
                raise NotFound(f"asset {name!r}: piece {at} is missing from the store")
        elif manifest["id"]:
            data = b""  # an empty asset
        return {"name": name, **{k: manifest[k] for k in ("id", "size", "sha256", "pieces")}, "index": at,
                "data": data}
