"""Memory and message-size limits on real processes (issue 8): subscriptions, oversize frames, a bad
client that must not make the store look down for everybody, refused frames counted and logged."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import msgpack
import psutil
import pytest
import zmq

from tests.helpers import wait_until
from titan_zmq.errors import InvalidRequest
from titan_zmq.protocol import HEADER, Op, decode
from titan_zmq.store.client import StoreClient

MB = 1024 * 1024


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


SUBSCRIBER = textwrap.dedent("""
    import sys, zmq
    ctx = zmq.Context()
    greedy = []
    for i in range(3):  # three 2 MB prefixes: on a broker that keeps them, ~300 MB for good
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(sys.argv[1])
        s.setsockopt(zmq.SUBSCRIBE, bytes([65 + i]) * 2_000_000)
        greedy.append(s)
    hb = ctx.socket(zmq.SUB)
    hb.setsockopt(zmq.LINGER, 0)
    hb.connect(sys.argv[1])
    hb.setsockopt(zmq.SUBSCRIBE, b"hb/")
    for n in range(4):
        if not hb.poll(20000):
            print("no heartbeat", flush=True); sys.exit(1)
        hb.recv_multipart()
    print("ticks", flush=True)
    sys.stdin.read()  # stay connected until the test is done
""")


@pytest.mark.timeout(120)
def test_huge_subscription_prefixes_do_not_grow_the_broker(make_cluster) -> None:
    cluster = make_cluster(workers=0)
    broker = cluster.procs["broker"].pid
    before = rss(broker)
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, cluster.pub_addr], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        # four heartbeat ticks on an ordinary subscription: the broker kept publishing while the
        # big prefixes were sent (~4 s, plenty to move 6 MB over loopback)
        assert sub.stdout.readline().strip() == "ticks"
        grown = rss(broker) - before
    finally:
        sub.kill()
        sub.wait(10)
    assert grown < 40 * MB, f"broker RSS grew by {grown / MB:.1f} MB"
    with cluster.client() as c:
        assert c.stats()["workers"] == 0  # still serving


def raw_request(addr: str, frame: bytes, envelope: bool, timeout_ms: int = 5000) -> bytes | None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(addr)
    try:
        sock.send_multipart([b"", frame] if envelope else [frame])
        if not sock.poll(timeout_ms):
            return None
        return bytes(sock.recv_multipart()[-1])
    finally:
        sock.close(0)


@pytest.mark.timeout(180)
def test_oversize_frames_are_refused_by_store_and_broker_without_growing_them(make_cluster) -> None:
    cluster = make_cluster(workers=0)
    targets = [("broker", cluster.broker_addr, False), ("store", cluster.store_addr, True)]
    big = HEADER.pack(1, Op.KV_SET, 0, 0, 100 * MB) + b"\x00" * (100 * MB)
    for name, addr, envelope in targets:
        pid = cluster.procs[name].pid
        before = rss(pid)
        # over the frame cap: ZeroMQ drops the connection before reading the frame into memory
        assert raw_request(addr, big, envelope, timeout_ms=3000) is None
        assert rss(pid) - before < 40 * MB, f"{name} grew by {(rss(pid) - before) / MB:.1f} MB"
        # a header that lies about its size reaches the process: refused with the rid, counted
        lie = HEADER.pack(1, Op.KV_GET, 0, 0, 100 * MB) + msgpack.packb({"rid": 42, "key": "k"})
        reply = raw_request(addr, lie, envelope)
        assert reply is not None, f"{name} did not answer"
        msg = decode(reply)
        assert msg.is_error and msg.body["code"] == "oversize" and msg.rid == 42, msg.body
    with cluster.client() as c:
        assert c.stats()["bad_frames"] >= 1
    with StoreClient(cluster.store_addr, timeout=5) as store:
        assert store.stats()["bad_frames"] >= 1
    log = cluster.procs["broker"].output()
    assert "refused a frame from" in log and "oversize" in log, log[-2000:]


@pytest.mark.timeout(180)
def test_a_client_request_too_big_for_the_store_does_not_make_the_store_look_down(make_cluster, monkeypatch) -> None:
    # the broker takes frames up to 80 MiB, the store up to the default 64 MiB
    cluster = make_cluster(workers=0, broker_args=["--max-body", str(80 * MB)])
    monkeypatch.setenv("TITAN_MAX_BODY", str(80 * MB))
    with cluster.client(timeout=30) as c:
        with pytest.raises(InvalidRequest, match="frame cap"):
            c._call(Op.KV_SET, {"key": "big", "value": b"x" * (70 * MB)})  # through the broker
        stats = c.stats()
        assert stats["store_ok"] is True, stats
        c._call(Op.KV_SET, {"key": "small", "value": b"fine"})  # the store is fine for everybody else
        assert c._call(Op.KV_GET, {"key": "small"})["value"] == b"fine"


@pytest.mark.timeout(60)
def test_every_refused_frame_is_counted_and_logged(make_cluster) -> None:
    cluster = make_cluster(workers=0)
    with cluster.client() as c:
        before = c.stats()["bad_frames"]
        for junk in (b"\x01", HEADER.pack(9, Op.STATS, 0, 0, 0), HEADER.pack(1, 0x7E, 0, 0, 0)):
            reply = raw_request(cluster.broker_addr, junk, envelope=False)
            assert reply is not None and decode(reply).is_error
        assert c.stats()["bad_frames"] == before + 3
    wait_until(lambda: cluster.procs["broker"].output().count("refused a frame from") >= 3, timeout=10,
               what="three 'refused a frame' lines in the broker log")
