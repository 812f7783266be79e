"""Exposure until the security issue adds keys (issue 8): no non-loopback bind without --insecure,
STOP logged with its peer, data directories 0700 and files 0600."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from client import TitanClient, TitanJob
from tests.helpers import port_guess, wait_until
from titan_zmq.protocol import Op
from titan_zmq.store.client import StoreClient


def start(module: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("still running: the non-loopback bind was accepted") from None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("argv", [
    ["titan_zmq.store", "--bind", "tcp://0.0.0.0:{p}"],
    ["titan_zmq.broker", "--bind", "tcp://0.0.0.0:{p}", "--pub", "tcp://127.0.0.1:{q}"],
    ["titan_zmq.broker", "--bind", "tcp://127.0.0.1:{p}", "--pub", "tcp://*:{q}"],
])
def test_a_non_loopback_bind_is_refused_without_insecure(tmp_path: Path, argv: list[str]) -> None:
    args = [a.format(p=port_guess(), q=port_guess()) for a in argv]
    log = tmp_path / "out.log"
    proc = start(args[0], *args[1:], "--data-dir", str(tmp_path / "data"), log=log)
    assert finish(proc) == 2
    text = log.read_text()
    assert "refusing to bind" in text and "--insecure" in text, text


@pytest.mark.timeout(120)
def test_insecure_binds_are_logged_shown_in_stats_and_stop_is_logged_with_its_peer(tmp_path: Path) -> None:
    store_port, broker_port, pub_port = port_guess(), port_guess(), port_guess()
    store_log, broker_log = tmp_path / "store.log", tmp_path / "broker.log"
    store = start("titan_zmq.store", "--bind", f"tcp://0.0.0.0:{store_port}", "--insecure",
                  "--data-dir", str(tmp_path / "store"), log=store_log)
    broker = start("titan_zmq.broker", "--bind", f"tcp://0.0.0.0:{broker_port}", "--pub",
                   f"tcp://127.0.0.1:{pub_port}", "--store", f"tcp://127.0.0.1:{store_port}",
                   "--data-dir", str(tmp_path / "broker"), log=broker_log)
    try:
        assert finish(broker) == 2  # the broker needs its own --insecure
        broker = start("titan_zmq.broker", "--bind", f"tcp://0.0.0.0:{broker_port}", "--pub",
                       f"tcp://127.0.0.1:{pub_port}", "--store", f"tcp://127.0.0.1:{store_port}", "--insecure",
                       "--data-dir", str(tmp_path / "broker"), log=broker_log)
        with StoreClient(f"tcp://127.0.0.1:{store_port}", timeout=5) as s:
            wait_until(lambda: _answers(s), timeout=30, what="the store to answer")
            assert s.stats()["insecure"] is True
        with TitanClient(f"tcp://127.0.0.1:{broker_port}", timeout=5) as c:
            st = wait_until(lambda: _stats(c), timeout=30, what="the broker to answer")
            assert st["insecure"] is True and st["exposed"] == [f"tcp://0.0.0.0:{broker_port}"]
            c._call(Op.STOP)
        assert finish(broker) == 0
        with StoreClient(f"tcp://127.0.0.1:{store_port}", timeout=5) as s:
            s.stop()
        assert finish(store) == 0
    finally:
        for proc in (store, broker):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "INSECURE" in store_log.read_text() and "INSECURE" in broker_log.read_text()
    assert "STOP requested by 127.0.0.1" in store_log.read_text(), store_log.read_text()
    assert "STOP requested by a client (connection" in broker_log.read_text(), broker_log.read_text()


def _answers(s: StoreClient) -> bool:
    try:
        return s.ping(timeout=1)
    except Exception:
        return False


def _stats(c: TitanClient) -> dict | None:
    try:
        return c.stats()
    except Exception:
        return None


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(120)
def test_data_directories_are_0700_and_files_0600(make_cluster) -> None:
    cluster = make_cluster(workers=1)
    with cluster.client() as c:
        run = c.submit_dag("perm", [TitanJob("hello", command=["echo", "hi"])])
        assert run.wait(60)["state"] == "SUCCEEDED"
    d = cluster.data_dir
    assert mode(d / "store") == 0o700 and mode(d / "store" / "store.aof") == 0o600
    assert mode(d / "broker") == 0o700 and mode(d / "work") == 0o700
    logs = list((d / "broker").rglob("*.log"))
    assert logs, list((d / "broker").rglob("*"))
    assert all(mode(p) == 0o600 for p in logs), {str(p): oct(mode(p)) for p in logs}
    assert all(mode(p) == 0o700 for p in (d / "broker").rglob("*") if p.is_dir())

