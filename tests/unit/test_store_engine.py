"""Engine semantics: KV, sets, TTL with an injected clock, batch atomicity, snapshots."""

from __future__ import annotations

import pytest

from titan_zmq.errors import InvalidRequest
from titan_zmq.store.engine import Engine


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock: Clock) -> Engine:
    return Engine(clock)


def state(engine: Engine) -> tuple[dict, dict]:
    return engine.items(), {name: engine.smembers(name) for name in engine.keys() if engine.smembers(name)}


def test_set_get_delete_preserve_type(engine: Engine) -> None:
    tricky = "ünïcødé | pipes, commas\nnew lines\r\n\x00 and 🚀"
    engine.set("s", tricky)
    engine.set("b", b"\x00\xff|,\n")
    engine.set("big", b"x" * (1 << 20))
    assert engine.get("s") == tricky and isinstance(engine.get("s"), str)
    assert engine.get("b") == b"\x00\xff|,\n" and isinstance(engine.get("b"), bytes)
    assert engine.get("big") == b"x" * (1 << 20)
    assert engine.get("missing") is None
    assert engine.delete("s") == 1
    assert engine.delete("s") == 0
    assert engine.get("s") is None


def test_sadd_then_again_returns_zero(engine: Engine) -> None:
    assert engine.sadd("workers", "w1") == 1
    assert engine.sadd("workers", "w1") == 0
    assert engine.sadd("workers", b"w1") == 1  # bytes and str members are distinct
    assert engine.smembers("workers") == ["w1", b"w1"]
    assert engine.srem("workers", "w1") == 1
    assert engine.srem("workers", "w1") == 0
    assert engine.srem("nope", "w1") == 0
    assert engine.srem("workers", b"w1") == 1
    assert engine.keys() == []  # an emptied set disappears


def test_incr_semantics(engine: Engine) -> None:
    assert engine.incr("n") == 1
    assert engine.incr("n", 10) == 11
    assert engine.incr("n", -20) == -9
    assert engine.get("n") == "-9"
    engine.set("b", b"41")
    assert engine.incr("b") == 42
    assert engine.get("b") == b"42"
    engine.set("word", "abc")
    with pytest.raises(InvalidRequest, match="not an integer"):
        engine.incr("word")
    engine.set("max", str(2**63 - 1))
    with pytest.raises(InvalidRequest, match="overflow"):
        engine.incr("max")
    with pytest.raises(InvalidRequest, match="64-bit"):
        engine.apply(["incr", "n", True])


def test_keys_and_items_by_prefix(engine: Engine) -> None:
    engine.set("job:2", "b")
    engine.set("job:1", "a")
    engine.set("run:1", "r")
    engine.sadd("job:set", "m")
    engine.sadd("run:1", "also a set")  # same name as a KV key: listed once
    assert engine.keys("job:") == ["job:1", "job:2", "job:set"]
    assert engine.keys() == ["job:1", "job:2", "job:set", "run:1"]
    assert engine.items("job:") == {"job:1": "a", "job:2": "b"}
    assert engine.delete("run:1") == 1  # clears the key and the set of that name
    assert engine.keys("run") == []


def test_ttl_expiry_with_injected_clock(engine: Engine, clock: Clock) -> None:
    engine.set("lease", "w1", ttl=5)
    engine.set("forever", "x")
    assert engine.ttl("lease") == pytest.approx(5)
    clock.now += 4.9
    assert engine.get("lease") == "w1"
    assert engine.keys() == ["forever", "lease"]
    clock.now += 0.2
    assert engine.get("lease") is None
    assert engine.keys() == ["forever"]
    assert engine.items() == {"forever": "x"}
    assert engine.get("forever") == "x"


def test_sweep_drops_expired_keys(engine: Engine, clock: Clock) -> None:
    for i in range(10):
        engine.set(f"k{i}", "v", ttl=i + 1)
    assert engine.sweep(clock.now + 5.5) == 5
    assert engine.counts() == (5, 0)
    clock.now += 100
    assert engine.counts() == (0, 0)


def test_incr_keeps_ttl_and_expired_key_restarts(engine: Engine, clock: Clock) -> None:
    engine.set("n", "5", ttl=10)
    assert engine.incr("n") == 6
    assert engine.ttl("n") == pytest.approx(10)
    clock.now += 11
    assert engine.incr("n") == 1
    assert engine.ttl("n") is None


def test_batch_applies_all_in_order(engine: Engine) -> None:
    results = engine.batch(
        [["set", "a", "1", None], ["incr", "a", 2], ["sadd", "s", "x"], ["sadd", "s", "x"], ["del", "a"]]
    )
    assert results == [None, 3, 1, 0, 1]
    assert engine.get("a") is None
    assert engine.smembers("s") == ["x"]


@pytest.mark.parametrize(
    "bad_op, index",
    [
        (["incr", "word", 1], 2),  # incr on a non-integer value
        (["nope", "k"], 2),  # unknown op
        (["set", 5, "v", None], 2),  # key not a str
        (["set", "k", 5, None], 2),  # value not bytes/str
        (["sadd", "k"], 2),  # wrong arity
        ("set", 2),  # not a list
    ],
)
def test_bad_op_in_batch_changes_nothing(engine: Engine, bad_op: object, index: int) -> None:
    engine.set("word", "abc")
    engine.set("n", "1")
    engine.sadd("s", "a")
    before = state(engine)
    ops = [["set", "new", "v", None], ["sadd", "s", "b"], bad_op, ["incr", "n", 1]]
    with pytest.raises(InvalidRequest, match=f"op {index}"):
        engine.batch(ops)  # type: ignore[arg-type]
    assert state(engine) == before


def test_batch_validation_sees_earlier_ops(engine: Engine) -> None:
    engine.set("a", "1")
    with pytest.raises(InvalidRequest, match="op 1"):
        engine.batch([["set", "a", "text", None], ["incr", "a", 1]])
    assert engine.get("a") == "1"
    assert engine.batch([["del", "a"], ["incr", "a", 5]]) == [1, 5]


def test_execute_effects_are_deterministic(engine: Engine, clock: Clock) -> None:
    engine.set("n", "1", ttl=10)
    results, effects = engine.execute(
        [["incr", "n", 1], ["sadd", "s", "m"], ["sadd", "s", "m"], ["del", "zz"]]
    )
    assert results == [2, 1, 0, 0]
    # incr is journaled as the set it produced; no-ops are not journaled
    assert effects == [["set", "n", "2", clock.now + 10], ["sadd", "s", "m"]]


def test_snapshot_rebuilds_state(engine: Engine, clock: Clock) -> None:
    for i in range(50):
        engine.set(f"k{i}", f"v{i}")
        engine.set(f"k{i}", f"final{i}")
    engine.set("ttl", b"t", ttl=30)
    engine.set("gone", "g", ttl=1)
    engine.sadd("s", "a")
    engine.sadd("s", b"b")
    engine.delete("k0")
    clock.now += 2
    ops = list(engine.snapshot())
    assert len(ops) == 49 + 1 + 2
    copy = Engine(clock)
    copy.batch(ops)
    assert state(copy) == state(engine)
    assert copy.ttl("ttl") == pytest.approx(28)
