"""Project archives the broker keeps at hand to ship with dispatches.

An archive is stored once under its sha256 (``blob/<sha256>``) when its run is submitted; the
broker keeps the last few in memory and reads any other back from the store when a worker that
does not have it yet gets one of its jobs.
"""

from __future__ import annotations

from collections import OrderedDict

from titan_zmq import defaults, keys
from titan_zmq.errors import StoreUnavailable
from titan_zmq.store.client import StoreClient


class BlobCache:
    """The most recently used project archives, by id, backed by the store."""

    def __init__(self, store: StoreClient, size: int = defaults.BLOB_CACHE):
        self.store = store
        self.size = size
        self._blobs: OrderedDict[str, bytes] = OrderedDict()

    def remember(self, blob_id: str, data: bytes) -> None:
        self._blobs[blob_id] = data
        self._blobs.move_to_end(blob_id)
        while len(self._blobs) > self.size:
            self._blobs.popitem(last=False)

    def get(self, blob_id: str) -> bytes | None:
        """The archive's bytes; None when the store does not have it or cannot be reached now."""
        if blob_id in self._blobs:
            self._blobs.move_to_end(blob_id)
            return self._blobs[blob_id]
        try:
            data = self.store.get(keys.blob_key(blob_id))
        except StoreUnavailable:
            return None
        if isinstance(data, bytes):
            self.remember(blob_id, data)
            return data
        return None
