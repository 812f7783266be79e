"""The titan store: a KV/set/TTL engine behind a REP socket, journaled to an append-only file."""

from __future__ import annotations

from titan_zmq.store.aof import AOF, repair
from titan_zmq.store.client import StoreClient
from titan_zmq.store.engine import Engine
from titan_zmq.store.server import StoreServer
from titan_zmq.store.service import StoreService

__all__ = ["AOF", "Engine", "StoreClient", "StoreServer", "StoreService", "repair"]
