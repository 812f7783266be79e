"""The broker's durable log files: order, paging, de-duplication, rebuild after a restart."""

from __future__ import annotations

from pathlib import Path

from titan_zmq.broker.logs import INDEX_STEP, LogStore


def fill(store: LogStore, n: int, attempt: int = 1, per_batch: int = 700) -> None:
    seq = 0
    for lo in range(0, n, per_batch):
        lines = [["stdout", f"line {i}"] for i in range(lo, min(n, lo + per_batch))]
        assert store.append("r", "j", attempt, seq, lines, 1.0).records
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
    assert store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0).records
    again = store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0)
    assert not again.records and again.refused is None
    assert store.append("r", "j", 2, 0, [["stderr", "b"]], 1.0).records  # a new attempt starts at seq 0 again
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


# ---- issue 8: sequence checks, the per-job cap, write errors --------------------------------------


def texts(store: LogStore) -> list[str]:
    return [r[3] for r in store.read("r", "j")]


def test_a_sequence_jump_from_the_same_connection_is_refused(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    assert store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0, source=b"w1").records
    jump = store.append("r", "j", 1, 10**9, [["stdout", "forged"]], 1.0, source=b"w1")
    assert jump.refused and "jump" in jump.refused and not jump.records
    assert store.append("r", "j", 1, 1, [["stdout", "b"]], 1.0, source=b"w1").records  # the real next batch
    assert texts(store) == ["a", "b"]


def test_a_gap_after_a_reconnect_is_taken_with_a_marker(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("r", "j", 1, 0, [["stdout", "a"]], 1.0, source=b"old")
    out = store.append("r", "j", 1, 3, [["stdout", "d"]], 1.0, source=b"new")  # batches 1, 2 died with the link
    assert out.refused is None
    assert texts(store) == ["a", "[titan] 2 log batches of attempt 1 lost (the worker reconnected)", "d"]


def test_a_log_stops_at_the_cap_with_one_marker_and_a_flag(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=2000)
    flags = []
    for seq in range(20):
        out = store.append("r", "j", 1, seq, [["stdout", "x" * 100] for _ in range(5)], 1.0)
        flags += out.flags
    assert flags == ["log_truncated"]
    lines = texts(store)
    assert lines[-1].startswith("[titan] log truncated") and sum(t.startswith("[titan]") for t in lines) == 1
    assert store.path("r", "j").stat().st_size < 2000 + 300
    assert store.stats["log_lines_truncated"] > 0
    assert LogStore(tmp_path, max_bytes=2000)._job("r", "j").truncated  # known again after a restart
    assert not LogStore(tmp_path, max_bytes=2000).append("r", "j", 2, 0, [["stdout", "y"]], 1.0).records


class FullDisk:
    """A file object whose writes fail the way a full disk makes them fail (after writing a little)."""

    def __init__(self, real: object) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(data[:3])  # type: ignore[attr-defined]
        self.real.flush()  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.real.close()  # type: ignore[attr-defined]


def test_a_full_disk_drops_lines_once_flags_the_log_and_recovers(tmp_path: Path, caplog: object) -> None:
    import logging

    store = LogStore(tmp_path)
    store.append("r", "j", 1, 0, [["stdout", "before"]], 1.0)
    real_file = store._file
    store._file = lambda run, job: FullDisk(real_file(run, job))  # type: ignore[method-assign, assignment]
    flags = []
    with caplog.at_level(logging.ERROR):  # type: ignore[attr-defined]
        for seq in range(1, 50):
            out = store.append("r", "j", 1, seq, [["stdout", f"lost {seq}"], ["stdout", "x"]], 1.0)
            assert not out.records
            flags += out.flags
    assert flags == ["log_incomplete"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]  # type: ignore[attr-defined]
    assert len(errors) == 1 and "No space left" in errors[0].getMessage() and errors[0].exc_info is None
    health = store.health()
    assert health["logs_ok"] is False and "No space left" in health["logs_error"]
    assert health["log_lines_lost"] == 98 and health["log_write_errors"] == 49
    store._file = real_file  # type: ignore[method-assign]
    out = store.append("r", "j", 1, 50, [["stdout", "after"]], 1.0)
    assert [r[3] for r in out.records] == ["[titan] 98 lines lost: the broker could not write this log", "after"]
    assert store.health()["logs_ok"] is True
    assert texts(store) == ["before", "[titan] 98 lines lost: the broker could not write this log", "after"]
    assert [r[0] for r in store.read("r", "j")] == [0, 1, 2]
    again = LogStore(tmp_path)  # the torn bytes were cut: a restart reads the same lines
    assert [r[3] for r in again.read("r", "j")] == texts(store)
