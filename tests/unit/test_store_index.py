"""The store's ordered key index: prefix queries read it in pages and never sort the store."""

from __future__ import annotations

import random
from typing import Any

import pytest

from titan_zmq.store import engine as engine_module
from titan_zmq.store.engine import Engine
from titan_zmq.store.sortedkeys import SortedKeys

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sorted_keys_matches_a_sorted_set_under_random_inserts_and_removals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("titan_zmq.store.sortedkeys.LOAD", 4)  # many chunks, many splits and merges
    rng = random.Random(8)
    index, model = SortedKeys(), set()
    for _ in range(5000):
        key = f"{rng.choice('abc')}/{rng.randrange(300):03d}"
        if rng.random() < 0.6:
            index.add(key)
            model.add(key)
        else:
            index.discard(key)
            model.discard(key)
        assert len(index) == len(model)
    expected = sorted(model)
    assert list(index.irange()) == expected
    for probe in ("", "a/", "b/150", "b/1505", "c/299", "d"):
        assert list(index.irange(probe)) == [k for k in expected if k >= probe]
        assert list(index.irange(probe, after=True)) == [k for k in expected if k > probe]
    assert all(k in index for k in expected) and "zz" not in index


def pages(engine: Engine, prefix: str, **kw: Any) -> list[Any]:
    out, after = [], None
    while True:
        page = engine.scan(prefix, after, **kw)
        out.append(page)
        after = page.next
        if after is None:
            return out


def test_prefix_queries_page_by_count_and_bytes_from_a_cursor() -> None:
    engine = Engine(Clock())
    for i in range(250):
        engine.set(f"run/{i:04d}", b"x" * 100)
    engine.set("ruo", "after the prefix")
    engine.set("rum", "before the prefix")
    by_count = pages(engine, "run/", values=True, limit=100)
    assert [len(p.items) for p in by_count] == [100, 100, 50]
    assert [k for p in by_count for k in p.items] == [f"run/{i:04d}" for i in range(250)]
    by_bytes = pages(engine, "run/", values=True, max_bytes=1000)  # ~108 bytes an item: 10 a page
    assert {len(p.items) for p in by_bytes[:-1]} == {10} and sum(len(p.items) for p in by_bytes) == 250
    assert engine.scan("run/", "run/0247").keys == ["run/0248", "run/0249"]
    assert engine.scan("run/", "a").keys[0] == "run/0000"  # a cursor before the prefix starts at the prefix
    assert engine.scan("run/", "run/0249").keys == [] and engine.scan("run/", "run/0249").next is None


def test_a_value_over_the_bound_is_reported_not_returned_and_a_big_one_still_makes_progress() -> None:
    engine = Engine(Clock())
    engine.set("run/a", b"small")
    engine.set("run/b", b"x" * 10_000)
    engine.set("run/c", b"small")
    page = engine.scan("run/", values=True, max_value=1000)
    assert page.items == {"run/a": b"small", "run/c": b"small"} and page.oversize == {"run/b": 10_000}
    # a page ends after the item that passes the byte bound, so a big value never stalls the paging
    assert [list(p.items) for p in pages(engine, "run/", values=True, max_bytes=100)] == [
        ["run/a", "run/b"], ["run/c"]]


def test_the_index_follows_deletes_expiry_sweeps_and_sets() -> None:
    clock = Clock()
    engine = Engine(clock)
    engine.set("k/ttl", "v", ttl=5)
    engine.set("k/del", "v")
    engine.sadd("k/set", "m")
    engine.set("k/both", "v")
    engine.sadd("k/both", "m")
    engine.delete("k/del")
    assert engine.keys("k/") == ["k/both", "k/set", "k/ttl"]
    clock.now += 10
    assert engine.keys("k/") == ["k/both", "k/set"] and engine.items("k/") == {"k/both": "v"}
    engine.srem("k/set", "m")
    engine.srem("k/both", "m")  # the KV key of that name stays
    assert engine.keys("k/") == ["k/both"] and engine.size() == 1
    engine.set("k/ttl2", "v", ttl=1)
    clock.now += 2
    engine.sweep()
    assert engine.size() == 1


def test_prefix_queries_never_sort_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not timed: a query that sorted every key per call (the old engine) fails here outright."""
    engine = Engine(Clock())
    for i in range(2000):
        engine.set(f"{'job' if i % 2 else 'spec'}/r{i}/j", "v")

    def no_sort(*_: Any, **__: Any) -> Any:
        raise AssertionError("a prefix query sorted the keys")

    monkeypatch.setattr(engine_module, "sorted", no_sort, raising=False)
    assert len(engine.keys("job/")) == 1000
    assert len(engine.items("spec/")) == 1000
    assert len(engine.scan("job/r1", limit=10).keys) == 10
