"""StoreClient against a scripted fake store: stale replies, garbage replies, timeouts, errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from titan_zmq import protocol
from titan_zmq.defaults import KEYS_PAGE, KEYS_PAGE_BYTES
from titan_zmq.errors import NotFound, RemoteError, StoreUnavailable
from titan_zmq.protocol import Op
from titan_zmq.store.client import StoreClient

# script(request) -> frames to send back, each sent as [identity, b"", frame]
Script = Callable[[protocol.Message], list[bytes]]


class FakeStore:
    """A ROUTER socket in a thread answering each request with whatever the test scripts."""

    def __init__(self, script: Script):
        self.script = script
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.addr = f"tcp://127.0.0.1:{port}"
        self.seen: list[protocol.Message] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(50):
                continue
            identity, _empty, frame = self.socket.recv_multipart()
            request = protocol.decode(frame)
            self.seen.append(request)
            for reply in self.script(request):
                self.socket.send_multipart([identity, b"", reply])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def fake() -> Iterator[Callable[[Script], FakeStore]]:
    made: list[FakeStore] = []

    def make(script: Script) -> FakeStore:
        made.append(FakeStore(script))
        return made[-1]

    try:
        yield make
    finally:
        for f in made:
            f.close()


def data(request: protocol.Message, **body: Any) -> bytes:
    return protocol.reply(request, body, Op.DATA)


def test_stale_and_garbage_replies_are_discarded(fake: Callable[[Script], FakeStore]) -> None:
    def script(req: protocol.Message) -> list[bytes]:
        stale = protocol.Message(req.op, {"rid": -1})
        return [data(stale, found=True, value="stale"), b"garbage", data(req, found=True, value="fresh")]

    store = fake(script)
    with StoreClient(store.addr, timeout=5) as client:
        assert client.get("k") == "fresh"
        assert client.get("k") == "fresh"
    rids = [m.rid for m in store.seen]
    assert len(set(rids)) == 2, f"request ids must be unique: {rids}"


def test_timeout_raises_and_late_reply_is_not_mistaken(fake: Callable[[Script], FakeStore]) -> None:
    def script(req: protocol.Message) -> list[bytes]:
        if req.body.get("key") == "slow":
            return []  # never answered
        return [data(req, found=True, value=req.body["key"])]

    store = fake(script)
    with StoreClient(store.addr, timeout=0.3) as client:
        with pytest.raises(StoreUnavailable, match="KV_GET"):
            client.get("slow")
        assert client.get("fast") == "fast"


def test_error_replies_raise_domain_errors(fake: Callable[[Script], FakeStore]) -> None:
    def script(req: protocol.Message) -> list[bytes]:
        if req.op == Op.KV_GET:
            return [protocol.error("not_found", "no such key", req.rid)]
        return [protocol.error("bad_request", "field 'key' must be str", req.rid)]

    store = fake(script)
    with StoreClient(store.addr, timeout=5) as client:
        with pytest.raises(NotFound, match="no such key"):
            client.get("k")
        with pytest.raises(RemoteError) as info:
            client.set("k", "v")
        assert info.value.code == "bad_request"


def test_request_bodies_match_the_protocol(fake: Callable[[Script], FakeStore]) -> None:
    def script(req: protocol.Message) -> list[bytes]:
        replies = {
            Op.KV_SET: {},
            Op.KV_INCR: {"value": 3},
            Op.KV_KEYS: {"items": {"a": "1"}} if req.body.get("values") else {"keys": ["a"]},
            Op.KV_BATCH: {"results": [None]},
        }
        return [data(req, **replies[req.op])]

    store = fake(script)
    with StoreClient(store.addr, timeout=5) as client:
        client.set("k", b"v", ttl=2.5)
        assert client.incr("n", 3) == 3
        assert client.keys("a") == ["a"]
        assert client.items("a") == {"a": "1"}
        assert client.batch([["set", "a", "1"]]) == [None]
    bodies = [(m.op, {k: v for k, v in m.body.items() if k != "rid"}) for m in store.seen]
    assert bodies == [
        (Op.KV_SET, {"key": "k", "value": b"v", "ttl": 2.5}),
        (Op.KV_INCR, {"key": "n", "by": 3}),
        (Op.KV_KEYS, {"prefix": "a", "values": False, "limit": KEYS_PAGE, "max_bytes": KEYS_PAGE_BYTES, "after": None}),
        (Op.KV_KEYS, {"prefix": "a", "values": True, "limit": KEYS_PAGE, "max_bytes": KEYS_PAGE_BYTES, "after": None}),
        (Op.KV_BATCH, {"ops": [["set", "a", "1"]]}),
    ]
