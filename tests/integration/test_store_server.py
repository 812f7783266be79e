"""The store as a real `python -m titan_zmq.store` process, driven through StoreClient."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.helpers import port_guess
from titan_zmq import protocol
from titan_zmq.errors import ErrorCode, InvalidRequest, RemoteError, StoreUnavailable
from titan_zmq.protocol import Flag, Op
from titan_zmq.store.aof import AOF
from titan_zmq.store.client import StoreClient

START_TIMEOUT = 15.0
PORT_ATTEMPTS = 5  # port guesses tried before a test gives up on binding
ADDR_IN_USE = os.strerror(errno.EADDRINUSE)


def wait_up(proc: subprocess.Popen[bytes], client: StoreClient, log: Path, since: int) -> bool:
    """Wait until the store answers (True) or exits because its port was taken first (False)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            text = log.read_bytes()[since:].decode(errors="replace")
            if proc.returncode == 1 and ADDR_IN_USE in text:
                return False
            raise AssertionError(f"store exited with {proc.returncode}:\n{text}")
        try:
            client.ping(timeout=0.2)
            return True
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise AssertionError(f"store did not answer within {START_TIMEOUT}s:\n{log.read_text()}") from None


class StoreProcess:
    """One store subprocess on a fixed port and data dir; restartable.

    The port is a guess until the first start binds it; if something took it first, that start
    moves to another guess.  Later starts reuse it (a test that restarts the store needs it)."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.data_dir = data_dir
        self.log_path = log_path
        self.addr = f"tcp://127.0.0.1:{port_guess()}"
        self.bound = False  # whether a start has bound the port: from then on the address is fixed
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, *extra: str) -> subprocess.Popen[bytes]:
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "titan_zmq.store",
                    "--bind",
                    self.addr,
                    "--data-dir",
                    str(self.data_dir),
                    *extra,
                ],
                stdout=log,
                stderr=log,
            )
        return self.proc

    def start(self, *extra: str) -> StoreClient:
        """Spawn and wait until it answers a ping; return a connected client."""
        for _ in range(PORT_ATTEMPTS):
            proc = self.spawn(*extra)
            client = StoreClient(self.addr, timeout=5.0)
            try:
                up = wait_up(proc, client, self.log_path, self.log_start)
            except BaseException:
                client.close()
                raise
            if up:
                self.bound = True
                return client
            client.close()
            if self.bound:
                raise AssertionError(f"the store's port {self.addr} was taken between restarts")
            self.addr = f"tcp://127.0.0.1:{port_guess()}"
        raise AssertionError(f"no free port for the store after {PORT_ATTEMPTS} guesses")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=10)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    proc = StoreProcess(tmp_path / "data", tmp_path / "store.log")
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def client(store: StoreProcess) -> Iterator[StoreClient]:
    c = store.start()
    try:
        yield c
    finally:
        c.close()


TRICKY: dict[str, bytes | str] = {
    "unicode": "héllo wörld ✓ 日本語 🚀",
    "pipes|and,commas": "a|b|c,d,e",
    "newlines": "line1\nline2\r\nline3\n",
    "bytes": bytes(range(256)),
    "empty": "",
    "big": os.urandom(1 << 20),
}


def test_values_round_trip(client: StoreClient) -> None:
    for key, value in TRICKY.items():
        client.set(key, value)
    for key, value in TRICKY.items():
        got = client.get(key)
        assert got == value and type(got) is type(value), f"{key}: got {got!r:.80}"
    assert client.get("missing") is None
    assert client.items("pipes") == {"pipes|and,commas": "a|b|c,d,e"}


def test_sets_and_counters(client: StoreClient) -> None:
    assert client.sadd("workers", "w|1") == 1
    assert client.sadd("workers", "w|1") == 0
    assert client.sadd("workers", "w,2") == 1
    assert client.smembers("workers") == ["w,2", "w|1"]
    assert client.srem("workers", "w,2") == 1
    assert client.srem("workers", "w,2") == 0
    assert client.incr("n") == 1 and client.incr("n", 9) == 10
    assert client.delete("n") is True and client.delete("n") is False
    assert client.keys() == ["workers"]


def test_batch_is_atomic(client: StoreClient) -> None:
    client.set("word", "abc")
    assert client.batch([["set", "a", "1"], ["incr", "a", 1], ["sadd", "s", "x"]]) == [None, 2, 1]
    with pytest.raises(InvalidRequest, match="op 1"):
        client.batch([["set", "b", "1"], ["incr", "word", 1]])
    assert client.get("b") is None


def test_ttl_expires(client: StoreClient) -> None:
    client.set("lease", "w1", ttl=0.3)
    client.set("keep", "k", ttl=3600)
    assert client.get("lease") == "w1"
    deadline = time.monotonic() + 5
    while client.get("lease") is not None:
        assert time.monotonic() < deadline, "key with ttl=0.3 never expired"
        time.sleep(0.05)
    assert client.keys() == ["keep"]


def test_wrong_field_type_is_a_bad_request(client: StoreClient) -> None:
    with pytest.raises(RemoteError) as info:
        client.set(123, "v")  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.BAD_REQUEST and "'key'" in info.value.message


def fill(client: StoreClient) -> tuple[dict, dict]:
    for key, value in TRICKY.items():
        client.set(key, value)
    for i in range(50):
        client.set(f"job:{i}", f"state {i}")
        client.sadd(f"set:{i % 5}", f"member|{i}")
    client.incr("counter", 42)
    client.batch([["set", "batched", "yes"], ["sadd", "bset", b"\x00"]])
    return snapshot(client)


def snapshot(client: StoreClient) -> tuple[dict, dict]:
    sets = {k: client.smembers(k) for k in client.keys() if client.smembers(k)}
    return client.items(), sets


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_data_survives_restart(store: StoreProcess, sig: signal.Signals) -> None:
    client = store.start()
    expected = fill(client)
    client.close()
    code = store.stop(sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), store.log()
    client = store.start()
    try:
        assert snapshot(client) == expected
    finally:
        client.close()


def test_everysec_survives_sigterm(store: StoreProcess) -> None:
    client = store.start("--fsync", "everysec")
    assert client.stats()["fsync"] == "everysec"
    expected = fill(client)
    client.close()
    assert store.stop() == 0
    client = store.start("--fsync", "no")
    try:
        assert snapshot(client) == expected
    finally:
        client.close()


def test_stop_op_exits_cleanly(store: StoreProcess) -> None:
    client = store.start()
    client.set("k", "v")
    client.stop()
    client.close()
    assert store.proc is not None and store.proc.wait(timeout=10) == 0
    assert "titan-store listening on" in store.log()


def test_truncated_tail_recovered_at_start(store: StoreProcess) -> None:
    client = store.start()
    client.set("first", "1")
    client.set("second", "2")
    size_before_last = client.stats()["aof_bytes"]
    client.set("last", "x" * 100)
    client.close()
    assert store.stop() == 0
    path = store.data_dir / "store.aof"
    os.truncate(path, path.stat().st_size - 30)
    client = store.start()
    try:
        assert client.get("first") == "1" and client.get("second") == "2"
        assert client.get("last") is None
        assert client.stats()["aof_bytes"] == size_before_last
        assert "truncating" in store.log()
        client.set("after", "ok")
    finally:
        client.close()
    assert store.stop() == 0
    client = store.start()
    try:
        assert client.get("after") == "ok"
    finally:
        client.close()


def test_corrupt_aof_stops_start_then_repair(store: StoreProcess) -> None:
    store.data_dir.mkdir(parents=True)
    path = store.data_dir / "store.aof"
    with AOF(path) as aof:
        aof.append([[["set", "a", "1", None]]])
        corrupt_at = aof.size
        aof.append([[["set", "b", "2", None]]])
        aof.append([[["set", "c", "3", None]]])
    raw = bytearray(path.read_bytes())
    raw[corrupt_at + 12] ^= 0xFF
    path.write_bytes(bytes(raw))

    proc = store.spawn()
    assert proc.wait(timeout=20) == 2, store.log()
    log = store.log()
    assert f"byte offset {corrupt_at}" in log and "titan-store --repair" in log

    repair = subprocess.run(
        [sys.executable, "-m", "titan_zmq.store", "--data-dir", str(store.data_dir), "--repair"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert repair.returncode == 0, repair.stderr
    assert f"cut {len(raw) - corrupt_at} bytes" in repair.stdout
    client = store.start()
    try:
        assert client.items() == {"a": "1"}
    finally:
        client.close()


def garbage_frames(seed: int, count: int) -> list[tuple[str, bytes]]:
    """Malformed frames of several kinds, reproducible from ``seed``."""
    rng = random.Random(seed)
    ops = [int(op) for op in Op]
    unknown = [v for v in range(256) if v not in ops]
    kv_ops = [Op.KV_SET, Op.KV_GET, Op.KV_SADD, Op.KV_INCR, Op.KV_BATCH, Op.KV_DEL]

    def header(op: int, length: int, version: int = 1) -> bytes:
        return protocol.HEADER.pack(version, op, 0, 0, length)

    def short() -> bytes:
        return rng.randbytes(rng.randrange(0, 8))

    def bad_version() -> bytes:
        body = protocol.pack({"rid": 1})
        return header(rng.choice(ops), len(body), rng.choice([0, 2, 3, 255])) + body

    def length_mismatch() -> bytes:
        body = protocol.pack({"key": "k"})
        return header(rng.choice(ops), len(body) + rng.choice([-3, -1, 1, 7, 1000])) + body

    def unknown_op() -> bytes:
        body = protocol.pack({})
        return header(rng.choice(unknown), len(body)) + body

    def bad_msgpack() -> bytes:
        body = rng.choice(
            [
                b"\xc1" + rng.randbytes(rng.randrange(0, 20)),  # 0xc1 is never valid msgpack
                b"\x82\xa3key",  # map cut short
                protocol.pack({"key": "k"}) + rng.randbytes(rng.randrange(1, 10)),  # trailing bytes
                b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
            ]
        )
        return header(rng.choice(kv_ops), len(body)) + body

    def non_map() -> bytes:
        body = protocol.pack(rng.choice([[1, 2], "key", 42, None, b"\x00", 1.5, True]))
        return header(rng.choice(kv_ops), len(body)) + body

    def bad_fields() -> bytes:
        cases: list[tuple[Op, dict[str, Any]]] = [
            (Op.KV_SET, {"key": 1, "value": "v"}),
            (Op.KV_SET, {"key": "k", "value": 3}),
            (Op.KV_GET, {"key": None}),
            (Op.KV_SADD, {"key": "k"}),
            (Op.KV_INCR, {"key": "k", "by": "1"}),
            (Op.KV_BATCH, {"ops": "x"}),
            (Op.KV_BATCH, {"ops": [["explode", "k"]]}),
            (Op.KV_DEL, {}),
        ]
        op, body = rng.choice(cases)
        return protocol.encode(op, body)

    kinds = [short, bad_version, length_mismatch, unknown_op, bad_msgpack, non_map, bad_fields]
    return [(kind.__name__, kind()) for kind in (rng.choice(kinds) for _ in range(count))]


def test_garbage_frames_get_errors_and_store_keeps_serving(client: StoreClient, store: StoreProcess) -> None:
    client.set("before", "still here")
    frames = garbage_frames(seed=1234, count=500)
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(store.addr)
    try:
        for i, (kind, frame) in enumerate(frames):
            sock.send_multipart([b"", frame])
            assert sock.poll(5000), f"frame {i} ({kind}) {frame[:40]!r}: no reply\n{store.log()}"
            empty, raw = sock.recv_multipart()
            reply = protocol.decode(raw)
            assert reply.op == Op.ERROR and reply.flags & Flag.ERROR, (
                f"frame {i} ({kind}) {frame[:40]!r} -> {reply}"
            )
            assert reply.body["code"] and reply.body["message"]
        # several frames in one message is also an error, not a hang
        sock.send_multipart([b"", protocol.encode(Op.HEARTBEAT), b"extra"])
        assert sock.poll(5000)
        assert protocol.decode(sock.recv_multipart()[1]).op == Op.ERROR
    finally:
        sock.close(linger=0)
    assert client.get("before") == "still here"
    client.set("after", "fine")
    assert client.get("after") == "fine"
    stats = client.stats()
    assert stats["requests"] > 500
    assert stats["bad_frames"] + stats["errors"] >= 501
    assert store.proc is not None and store.proc.poll() is None


def test_compaction_keeps_all_data(store: StoreProcess) -> None:
    client = store.start()
    for round_ in range(20):
        for i in range(20):
            client.set(f"k{i}", f"round {round_} value {i}|,\n")
    client.sadd("s", "a")
    client.sadd("s", "b")
    client.srem("s", "a")
    client.set("t", "ttl", ttl=3600)
    expected = snapshot(client)
    result = client.compact()
    assert result["after"] < result["before"]
    assert client.stats()["aof_bytes"] == result["after"]
    assert snapshot(client) == expected
    client.set("post", "compaction")
    client.close()
    assert store.stop(signal.SIGKILL) == -signal.SIGKILL
    client = store.start()
    try:
        assert snapshot(client) == (dict(expected[0], post="compaction"), expected[1])
    finally:
        client.close()


def test_client_times_out_and_recovers(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "data", tmp_path / "store.log")
    store.start().close()  # bind the port once, so the restart below gets it back
    store.stop()
    client = StoreClient(store.addr, timeout=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=store.addr):
            client.set("k", "v")
        assert time.monotonic() - start < 2
        store.start().close()
        client.set("k", "v")  # the recreated socket works; the timed-out request was dropped
        assert client.get("k") == "v"
        assert client.keys() == ["k"]
    finally:
        client.close()
        store.kill()


def test_help_lists_env_vars() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "titan_zmq.store", "--help"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    for name in ("TITAN_STORE_BIND", "TITAN_DATA_DIR", "TITAN_FSYNC", "--repair"):
        assert name in out.stdout


def test_env_fallbacks(tmp_path: Path) -> None:
    log_path = tmp_path / "store.log"
    for _ in range(PORT_ATTEMPTS):
        addr = f"tcp://127.0.0.1:{port_guess()}"
        env = dict(os.environ, TITAN_STORE_BIND=addr, TITAN_DATA_DIR=str(tmp_path / "d"), TITAN_FSYNC="everysec")
        since = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "titan_zmq.store"], env=env, stderr=log)
        client = StoreClient(addr, timeout=10)
        if wait_up(proc, client, log_path, since):
            break
        client.close()
    else:
        raise AssertionError(f"no free port for the store after {PORT_ATTEMPTS} guesses")
    try:
        assert client.stats()["fsync"] == "everysec"
        client.set("k", "v")
        assert (tmp_path / "d" / "store.aof").stat().st_size > 0
        client.stop()
        assert proc.wait(timeout=10) == 0
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
