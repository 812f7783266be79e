"""The broker's durable log files: order, paging, de-duplication, rebuild after a restart."""

from __future__ import annotations

from pathlib import Path

from titan_zmq.broker.logs import INDEX_STEP, LogStore


def fill(store: LogStore, n: int, attempt: int = 1, per_batch: int = 700) -> None:
    seq = 0
    for lo in range(0, n, per_batch):
        lines = [["stdout", f"line {i}"] for i in range(lo, min(n, lo + per_batch))]
        assert store.append("r", "j", attempt, seq, lines, 1.0) is not None
        seq += 1


def test_pages_come_back_in_order_from_any_start(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    fill(store, 5 * INDEX_STEP + 17)
    assert store.count("r", "j") == 5 * INDEX_STEP + 17
    for start in (0, 1, INDEX_STEP - 1, INDEX_STEP, 3 * INDEX_STEP + 5, 5 * INDEX_STEP + 16):
        page = store.read("r", "j", start, limit=10)
        assert [rec[0] for rec in page] == list(range(start, min(start + 10, 5 * INDEX_STEP + 17)))
        assert page[0][3] == f"line {start}"
    assert store.read("r", "j", 10**6) == []


def test_a_page_stops_at_the_byte_cap(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("r", "j", 1, 0, [["stdout", "x" * 1000] for _ in range(100)], 1.0)
    page = store.read("r", "j", 0, limit=100, max_bytes=10_000)
    assert 5 <= len(page) <= 11


def test_a_batch_seen_twice_is_dropped(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    assert store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0)
    assert store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0) is None
    assert store.append("r", "j", 2, 0, [["stderr", "b"]], 1.0)  # a new attempt starts at seq 0 again
    assert [(r[1], r[2], r[3]) for r in store.read("r", "j")] == [(1, "stdout", "a"), (2, "stderr", "b")]


def test_a_restarted_store_rebuilds_counts_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    fill(store, 2500)
    store.close()
    path = store.path("r", "j")
    with open(path, "ab") as f:
        f.write(b"\x95\x01")  # half a record, as a crash mid-write leaves it
    again = LogStore(tmp_path)
    assert again.count("r", "j") == 2500
    again.append("r", "j", 2, 0, [["stdout", "after"]], 2.0)
    page = again.read("r", "j", 2495)
    assert [r[3] for r in page] == [f"line {i}" for i in range(2495, 2500)] + ["after"]
