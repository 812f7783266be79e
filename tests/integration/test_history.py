"""Restarts that scale with history, bad journal records, a stop signal while loading, and retention:
real store, broker and worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from client import TitanJob
from tests.helpers import port_guess, process_gone, wait_until
from tests.integration.test_store_client import FakeStore, Script
from titan_zmq import keys
from titan_zmq.protocol import Flag, Message, Op, encode, pack
from titan_zmq.store.client import StoreClient

pytestmark = pytest.mark.slow


def finished_run_ops(run_id: str, name: str = "old") -> list[list[Any]]:
    """The journal of a finished one-job run, as the broker writes it."""
    now = time.time()
    meta = {"run_id": run_id, "name": name, "state": "SUCCEEDED", "created_at": now, "finished_at": now,
            "agent_run_id": None}
    return [["set", keys.run_key(run_id), pack(meta), None],
            ["set", keys.spec_key(run_id, "j"), pack({"id": "j", "command": ["true"], "_order": 0}), None],
            ["set", keys.job_key(run_id, "j"), pack({"state": "COMPLETED", "attempts": 1, "exit_code": 0}), None]]


def restart_broker(cluster: Any) -> float:
    """kill -9 the broker, start it again; seconds until it accepts and dispatches a new job."""
    cluster.procs["broker"].kill()
    t0 = time.monotonic()
    cluster.start_broker()
    with cluster.client(timeout=5) as c:
        run = wait_until(lambda: _try_submit(c), timeout=120, interval=0.1, what="the restarted broker to accept")
        st = c.wait(run.run_id, timeout=60)
    assert st["state"] == "SUCCEEDED", (st, cluster.procs["broker"].output()[-3000:])
    return time.monotonic() - t0


def _try_submit(c: Any) -> Any:
    try:
        return c.submit_job(TitanJob("probe", command=["true"]))
    except Exception:
        return None


@pytest.mark.timeout(300)
def test_a_restart_with_ten_thousand_finished_runs_reads_the_journal_in_pages(make_cluster) -> None:
    cluster = make_cluster(workers=1, broker_args=["--retain-runs", "0"])
    n = 10_000
    with StoreClient(cluster.store_addr, timeout=60) as store:
        for lo in range(0, n, 1000):
            store.batch([op for i in range(lo, lo + 1000) for op in finished_run_ops(f"old-{i:05d}")], journal=True)
    took = restart_broker(cluster)
    # the old reader made two prefix queries per run, each sorting every key: minutes for this history
    assert took < 60, f"restart to first dispatch took {took:.1f}s"
    with cluster.client() as c:
        assert len(c.runs(limit=None)) == n + 1  # every run back, read page by page (`titan runs --all`)
        assert [r["run_id"] for r in c.runs(limit=3, before="old-00005")] == ["old-00004", "old-00003", "old-00002"]


@pytest.mark.timeout(240)
def test_poisoned_and_huge_journal_records_are_quarantined_and_the_broker_starts(make_cluster) -> None:
    cluster = make_cluster(workers=1)
    with cluster.client() as c:
        good = c.submit_job(TitanJob("good", command=["true"]))
        assert c.wait(good.run_id, timeout=60)["state"] == "SUCCEEDED"
    with StoreClient(cluster.store_addr, timeout=60) as store:
        store.batch([["set", keys.run_key("poison"), b"\xc1 not msgpack", None],
                     ["set", keys.job_key("typed", "j"), pack({"state": "COMPLETED", "attempts": "three"}), None],
                     *finished_run_ops("typed")[:2]], journal=True)
        for i in range(7):  # 70 MB of run meta: more than one reply may carry
            store.batch(finished_run_ops(f"huge-{i}", name="n" * 10_000_000), journal=True)
    restart_broker(cluster)
    with cluster.client() as c:
        ids = {r["run_id"] for r in c.runs(limit=None)}
        assert good.run_id in ids and not {"poison", "typed"} & ids and not any(i.startswith("huge") for i in ids)
    with StoreClient(cluster.store_addr, timeout=60) as store:
        moved = store.keys(keys.QUARANTINE)
        assert "quarantine/run/poison" in moved and "quarantine/job/typed/j" in moved
        assert store.get("quarantine/run/poison") == b"\xc1 not msgpack"
        assert sum(k.startswith("quarantine/run/huge-") for k in moved) == 7
        assert not store.keys(keys.run_key("poison")) and not store.keys(keys.run_key("huge"))
    out = cluster.procs["broker"].output()
    assert "journal record run/poison unreadable" in out and "Traceback" not in out
    restart_broker(cluster)  # and the next start is clean
    assert "unreadable" not in cluster.procs["broker"].output()


def silent_on_keys(asked: threading.Event) -> Script:
    """A store that answers pings but never a prefix query (a store stuck mid-answer)."""

    def script(msg: Message) -> list[bytes]:
        if msg.op == Op.KV_KEYS:
            asked.set()
            return []
        return [encode(Op.ACK, {"rid": msg.rid}, Flag.REPLY)]

    return script


@pytest.mark.timeout(120)
def test_a_broker_loading_its_state_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    asked = threading.Event()
    store = FakeStore(silent_on_keys(asked))
    broker = subprocess.Popen(
        [sys.executable, "-m", "titan_zmq.broker", "--bind", f"tcp://127.0.0.1:{port_guess()}",
         "--pub", f"tcp://127.0.0.1:{port_guess()}", "--store", store.addr,
         "--data-dir", str(tmp_path / "broker")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert asked.wait(60), "the broker never asked for its journal"
        time.sleep(0.5)  # well inside the wait for the answer
        t0 = time.monotonic()
        broker.send_signal(signal.SIGTERM)
        wait_until(lambda: process_gone(broker.pid), timeout=30, what="the broker to exit")
        took = time.monotonic() - t0
        assert took < 3.0, f"the broker took {took:.1f}s to obey SIGTERM while loading"
        assert broker.wait(5) == 0
    finally:
        if broker.poll() is None:
            broker.kill()
        broker.wait(5)
        store.close()
    assert b"Traceback" not in (broker.stdout.read() if broker.stdout else b"")


def _log_dirs(cluster: Any) -> int:
    root = cluster.data_dir / "broker" / "logs"
    return sum(1 for _ in root.iterdir()) if root.exists() else 0


@pytest.mark.timeout(600)
def test_under_a_steady_stream_of_runs_memory_aof_and_logs_stay_flat(make_cluster) -> None:
    cluster = make_cluster(workers=2, broker_args=["--retry-backoff", "0.2", "--retain-runs", "50"])
    aof = cluster.data_dir / "store" / "store.aof"
    samples = []
    with cluster.client(timeout=30) as c:
        for batch in range(12):
            runs = [c.submit_job(TitanJob("echo", command=["echo", f"batch {batch}"])) for _ in range(250)]
            for run in runs[-8:]:
                c.wait(run.run_id, timeout=120)
            wait_until(lambda: c.stats()["runs_running"] == 0, timeout=120, what="the batch to finish")
            wait_until(lambda: c.stats()["runs"] <= 50, timeout=30, what="retention to catch up")
            stats = c.stats()
            samples.append((stats["runs"], stats["rss_bytes"], aof.stat().st_size, _log_dirs(cluster)))
        store = c.stats()  # the broker's view; the store's own counters below
    with StoreClient(cluster.store_addr) as s:
        store = s.stats()
        journal = len(s.keys(keys.RUN)), len(s.keys(keys.SPEC)), len(s.keys(keys.JOB))
    warm = samples[2]
    print("runs, rss, aof bytes, log dirs per 250 runs:", samples, "store:", store)
    assert all(runs <= 50 for runs, *_ in samples)
    assert journal[0] <= 50 and journal[1] <= 50 and journal[2] <= 50, journal
    assert all(logs <= 50 for *_, logs in samples), samples
    assert store["compactions"] >= 1
    # 3000 runs of history would be ~5 MB of AOF; retained, the file stays near its warm size
    assert max(size for _, _, size, _ in samples[2:]) < max(4 * warm[2], 1_500_000), samples
    assert samples[-1][1] < warm[1] + 30 * 2**20, samples  # RSS: no growth with history beyond noise


@pytest.mark.timeout(240)
def test_runs_older_than_the_retention_window_leave_memory_store_and_logs(make_cluster) -> None:
    cluster = make_cluster(workers=1, broker_args=["--retain", "3s"])
    with cluster.client() as c:
        runs = [c.submit_job(TitanJob("echo", command=["echo", "hello"])) for _ in range(5)]
        for run in runs:
            assert c.wait(run.run_id, timeout=60)["state"] == "SUCCEEDED"
        assert _log_dirs(cluster) == 5
        wait_until(lambda: not c.runs(), timeout=30, what="the finished runs to leave")
        wait_until(lambda: _log_dirs(cluster) == 0, timeout=10, what="their logs to leave")
        with StoreClient(cluster.store_addr) as s:
            assert not [k for k in s.keys() if keys.is_reserved(k) and not k.startswith(keys.BLOB)]
        assert c.stats()["runs_retired"] == 5
