"""StoreService request handling without sockets: frames in, reply frames out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from titan_zmq import protocol
from titan_zmq.errors import AOFCorrupt, ErrorCode
from titan_zmq.protocol import Flag, Message, Op
from titan_zmq.store.aof import AOF
from titan_zmq.store.service import StoreService


class Harness:
    def __init__(self, data_dir: Path, **options: Any):
        self.data_dir = data_dir
        self.options = options
        self.service = StoreService(data_dir, **options)
        self.rid = 0

    def call(self, op: Op, **body: Any) -> Message:
        self.rid += 1
        reply = protocol.decode(self.service.handle(protocol.encode(op, {**body, "rid": self.rid})))
        assert reply.flags & Flag.REPLY
        assert reply.rid == self.rid, f"rid not echoed: {reply}"
        return reply

    def ok(self, op: Op, **body: Any) -> dict[str, Any]:
        reply = self.call(op, **body)
        assert not reply.is_error, f"{op.name} {body} -> {reply.body}"
        return reply.body

    def restart(self) -> None:
        self.service.close()
        self.service = StoreService(self.data_dir, **self.options)


@pytest.fixture
def store(tmp_path: Path):
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.service.close()


def test_every_op_replies_as_specified(store: Harness) -> None:
    assert store.call(Op.HEARTBEAT).op == Op.ACK
    assert store.call(Op.KV_SET, key="k", value="v").op == Op.ACK
    assert store.ok(Op.KV_GET, key="k") == {"found": True, "value": "v", "rid": store.rid}
    assert store.ok(Op.KV_GET, key="nope")["found"] is False
    assert store.ok(Op.KV_INCR, key="n")["value"] == 1
    assert store.ok(Op.KV_INCR, key="n", by=41)["value"] == 42
    assert store.ok(Op.KV_SADD, key="s", member="m")["added"] == 1
    assert store.ok(Op.KV_SADD, key="s", member="m")["added"] == 0
    assert store.ok(Op.KV_SMEMBERS, key="s")["members"] == ["m"]
    assert store.ok(Op.KV_KEYS)["keys"] == ["k", "n", "s"]
    assert store.ok(Op.KV_KEYS, prefix="k", values=True)["items"] == {"k": "v"}
    assert store.ok(Op.KV_SREM, key="s", member="m")["removed"] == 1
    assert store.ok(Op.KV_DEL, key="k")["deleted"] == 1
    assert store.ok(Op.KV_DEL, key="k")["deleted"] == 0
    assert store.ok(Op.KV_BATCH, ops=[["set", "t", "x", 60], ["incr", "n", 1]])["results"] == [None, 43]
    stats = store.ok(Op.STATS)
    assert stats["keys"] == 2 and stats["sets"] == 0 and stats["fsync"] == "always"
    assert stats["aof_bytes"] > 0 and stats["bad_frames"] == 0
    compact = store.call(Op.KV_COMPACT)
    assert compact.op == Op.ACK and compact.body["after"] < compact.body["before"]
    assert store.call(Op.STOP).op == Op.ACK and store.service.stopped


@pytest.mark.parametrize(
    "op, body, name",
    [
        (Op.KV_SET, {"key": 1, "value": "v"}, "key"),
        (Op.KV_SET, {"key": "k"}, "value"),
        (Op.KV_SET, {"key": "k", "value": 3}, "value"),
        (Op.KV_SET, {"key": "k", "value": "v", "ttl": "soon"}, "ttl"),
        (Op.KV_SET, {"key": "k", "value": "v", "ttl": -1}, "ttl"),
        (Op.KV_GET, {"key": None}, "key"),
        (Op.KV_INCR, {"key": "k", "by": "2"}, "by"),
        (Op.KV_INCR, {"key": "k", "by": True}, "by"),
        (Op.KV_SADD, {"key": "k", "member": ["x"]}, "member"),
        (Op.KV_KEYS, {"prefix": 5}, "prefix"),
        (Op.KV_BATCH, {"ops": "set a b"}, "ops"),
    ],
)
def test_wrong_field_types_are_bad_requests(store: Harness, op: Op, body: dict, name: str) -> None:
    reply = store.call(op, **body)
    assert reply.is_error and reply.op == Op.ERROR
    assert reply.body["code"] == ErrorCode.BAD_REQUEST, reply.body
    assert f"'{name}'" in reply.body["message"]
    assert store.ok(Op.KV_KEYS)["keys"] == []


def test_invalid_batch_is_atomic_and_not_journaled(store: Harness) -> None:
    store.ok(Op.KV_SET, key="word", value="abc")
    size = store.service.aof.size
    reply = store.call(Op.KV_BATCH, ops=[["set", "a", "1"], ["sadd", "s", "m"], ["incr", "word", 1]])
    assert reply.is_error and reply.body["code"] == ErrorCode.INVALID
    assert "op 2" in reply.body["message"]
    reply = store.call(Op.KV_BATCH, ops=[["set", "a", "1", "ttl?"]])
    assert reply.is_error and "op 0" in reply.body["message"]
    assert store.ok(Op.KV_KEYS)["keys"] == ["word"]
    assert store.service.aof.size == size


def test_reads_and_noops_are_not_journaled(store: Harness) -> None:
    store.ok(Op.KV_SADD, key="s", member="m")
    size = store.service.aof.size
    store.ok(Op.KV_SADD, key="s", member="m")
    store.ok(Op.KV_DEL, key="absent")
    store.ok(Op.KV_GET, key="s")
    store.ok(Op.STATS)
    assert store.service.aof.size == size


def test_one_record_per_request(store: Harness) -> None:
    store.ok(Op.KV_BATCH, ops=[["set", "a", "1"], ["sadd", "s", "x"], ["incr", "a", 2]])
    with AOF(store.data_dir / "store.aof") as aof:
        assert list(aof.replay()) == [[["set", "a", "1", None], ["sadd", "s", "x"], ["set", "a", "3", None]]]


def test_state_survives_restart_and_compaction(store: Harness) -> None:
    for i in range(100):
        store.ok(Op.KV_SET, key=f"k{i % 10}", value=f"v{i}")
    store.ok(Op.KV_SADD, key="s", member=b"\xff")
    store.ok(Op.KV_INCR, key="n", by=7)
    store.ok(Op.KV_SET, key="ttl", value="x", ttl=3600)
    expected = store.ok(Op.KV_KEYS, values=True)["items"]
    store.restart()
    assert store.ok(Op.KV_KEYS, values=True)["items"] == expected
    store.ok(Op.KV_COMPACT)
    store.restart()
    assert store.ok(Op.KV_KEYS, values=True)["items"] == expected
    assert store.ok(Op.KV_SMEMBERS, key="s")["members"] == [b"\xff"]
    assert store.service.engine.ttl("ttl") == pytest.approx(3600, abs=5)


def test_auto_compaction(tmp_path: Path) -> None:
    harness = Harness(tmp_path, compact_min_bytes=4096, compact_ratio=2.0)
    try:
        for i in range(500):
            harness.ok(Op.KV_SET, key="k", value=f"value number {i}")
            harness.service.tick()
        assert harness.service.counters["compactions"] >= 1
        assert harness.service.aof.size < 4096 + 100
        harness.restart()
        assert harness.ok(Op.KV_GET, key="k")["value"] == "value number 499"
    finally:
        harness.service.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"", ErrorCode.SHORT_FRAME),
        (b"\x02" + protocol.encode(Op.HEARTBEAT)[1:], ErrorCode.BAD_VERSION),
        (protocol.encode(Op.HEARTBEAT, {"a": 1})[:-1], ErrorCode.LENGTH_MISMATCH),
        (protocol.HEADER.pack(1, 0xEE, 0, 0, 0), ErrorCode.UNKNOWN_OP),
        (protocol.HEADER.pack(1, Op.KV_GET, 0, 0, 1) + b"\xc1", ErrorCode.BAD_BODY),
        (protocol.HEADER.pack(1, Op.KV_GET, 0, 0, 1) + b"\x90", ErrorCode.BAD_BODY),
        (protocol.encode(Op.SUBMIT_JOB, {}), ErrorCode.UNKNOWN_OP),  # a real op the store does not serve
    ],
)
def test_bad_frames_get_error_replies(store: Harness, frame: bytes, code: str) -> None:
    reply = protocol.decode(store.service.handle(frame))
    assert reply.is_error and reply.body["code"] == code, reply.body
    assert store.service.counters["bad_frames"] == 1
    assert store.call(Op.HEARTBEAT).op == Op.ACK


def test_handler_bug_becomes_internal_error(store: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(key: str) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(store.service.engine, "get", boom)
    reply = store.call(Op.KV_GET, key="k")
    assert reply.is_error and reply.body["code"] == ErrorCode.INTERNAL and "kaboom" in reply.body["message"]
    assert store.call(Op.HEARTBEAT).op == Op.ACK


def test_journal_failure_stops_the_store(store: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(records: list) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.service.aof, "append", full)
    reply = store.call(Op.KV_SET, key="k", value="v")
    assert reply.is_error and reply.body["code"] == ErrorCode.INTERNAL
    assert "journal write failed" in reply.body["message"]
    assert store.service.stopped and store.service.failed


def test_invalid_record_in_aof_is_corruption(tmp_path: Path) -> None:
    with AOF(tmp_path / "store.aof") as aof:
        aof.append([[["set", "a", "1", None]], "not a list of ops"])
    with pytest.raises(AOFCorrupt, match="byte offset"):
        StoreService(tmp_path)


@pytest.mark.parametrize("key", ["run/r1", "spec/r1/a", "job/r1/a", "blob/abc"])
def test_journal_keys_are_written_only_by_the_journal(store: Harness, key: str) -> None:
    """Every mutating op on a reserved key is refused unless the request says it is the journal's;
    reading stays open to everybody, and the user's own keys are unaffected."""
    refused = [
        store.call(Op.KV_SET, key=key, value=b"x"),
        store.call(Op.KV_DEL, key=key),
        store.call(Op.KV_INCR, key=key, by=1),
        store.call(Op.KV_SADD, key=key, member="m"),
        store.call(Op.KV_SREM, key=key, member="m"),
        store.call(Op.KV_BATCH, ops=[["set", "mine", "ok", None], ["set", key, b"x", None]]),
    ]
    for reply in refused:
        assert reply.is_error and reply.body["code"] == ErrorCode.INVALID, reply.body
        assert "reserved for the broker's journal" in reply.body["message"]
    assert store.ok(Op.KV_GET, key="mine")["found"] is False  # the batch was refused as a whole
    store.ok(Op.KV_BATCH, ops=[["set", key, b"journal", None]], journal=True)
    assert store.ok(Op.KV_GET, key=key)["value"] == b"journal"
    assert key in store.ok(Op.KV_KEYS, prefix=key.split("/")[0] + "/")["keys"]
    store.ok(Op.KV_SET, key="runway/x", value=b"mine")  # a user key that merely starts alike


def test_prefix_queries_answer_in_bounded_pages_with_a_cursor(store: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("titan_zmq.defaults.KEYS_PAGE", 3)  # the store's cap wins over a bigger ask
    store.ok(Op.KV_BATCH, ops=[["set", f"p/{i}", "v" * 10, None] for i in range(7)])
    first = store.ok(Op.KV_KEYS, prefix="p/", limit=1000)
    assert first["keys"] == ["p/0", "p/1", "p/2"] and first["next"] == "p/2"
    rest = store.ok(Op.KV_KEYS, prefix="p/", after="p/2", values=True, max_bytes=12, max_value=5)
    assert rest["items"] == {} and rest["oversize"] == {"p/3": 10, "p/4": 10, "p/5": 10}  # only keys count
    assert rest["next"] == "p/5"
    big = store.ok(Op.KV_KEYS, prefix="p/", after="p/2", values=True, max_bytes=12)
    assert list(big["items"]) == ["p/3"] and big["next"] == "p/3"  # 13 bytes: the page is full
    last = store.ok(Op.KV_KEYS, prefix="p/", after="p/5")
    assert last == {"keys": ["p/6"], "next": None, "rid": last["rid"]}
    assert store.call(Op.KV_KEYS, prefix="p/", after=5).is_error


def test_deleting_more_keys_than_stay_live_compacts_the_file(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("titan_zmq.defaults.COMPACT_MIN_DELETES", 50)
    harness = Harness(tmp_path)  # the size threshold (64 MiB) is far away: only deletions can trigger it
    try:
        for run in range(40):
            harness.ok(Op.KV_BATCH, ops=[["set", f"x/{run}/{j}", "v" * 100, None] for j in range(3)])
        harness.service.tick()
        assert harness.service.counters["compactions"] == 0
        grown = harness.service.aof.size
        harness.ok(Op.KV_BATCH, ops=[["del", f"x/{run}/{j}"] for run in range(30) for j in range(3)])
        harness.service.tick()
        assert harness.service.counters["compactions"] == 1
        assert harness.service.aof.size < grown / 2
        harness.service.tick()
        assert harness.service.counters["compactions"] == 1  # not again until deletions pile up anew
        harness.restart()
        assert len(harness.ok(Op.KV_KEYS, prefix="x/")["keys"]) == 30
    finally:
        harness.service.close()
