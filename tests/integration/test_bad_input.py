"""Bad input gets clear errors, and the cluster keeps working afterwards."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import msgpack
import pytest
import zmq

from client import TitanJob
from tests.helpers import write_pipeline
from titan_zmq.errors import BrokerUnavailable, InvalidRequest, NotFound, PipelineError
from titan_zmq.protocol import HEADER, Op, decode, encode


def random_frames(seed: int, count: int) -> list[bytes]:
    rnd = random.Random(seed)
    frames: list[bytes] = []
    valid = encode(Op.STATS, {"rid": 0, "x": "y" * 20})
    for i in range(count):
        kind = i % 11
        body = msgpack.packb({"rid": i, "junk": rnd.randbytes(rnd.randint(0, 40))})
        if kind == 0:
            frames.append(rnd.randbytes(rnd.randint(0, 7)))  # shorter than a header
        elif kind == 1:
            frames.append(HEADER.pack(rnd.choice([0, 2, 9, 255]), Op.STATS, 0, 0, len(body)) + body)
        elif kind == 2:
            frames.append(HEADER.pack(1, Op.STATS, 0, 0, len(body) + rnd.randint(1, 50)) + body)
        elif kind == 3:
            frames.append(HEADER.pack(1, rnd.choice([0x00, 0x30, 0x7F, 0xEE]), 0, 0, len(body)) + body)
        elif kind == 4:
            junk = b"\xc1" + rnd.randbytes(rnd.randint(0, 30))  # 0xc1 is never valid msgpack
            frames.append(HEADER.pack(1, Op.GET_JOB_STATUS, 0, 0, len(junk)) + junk)
        elif kind == 5:
            lst = msgpack.packb([1, 2, 3])
            frames.append(HEADER.pack(1, Op.SUBMIT_DAG, 0, 0, len(lst)) + lst)
        elif kind == 6:
            frames.append(rnd.randbytes(rnd.randint(8, 200)))
        elif kind == 7:  # deeply nested msgpack
            deep = b"\x91" * rnd.randint(2_000, 200_000) + b"\xc0"
            frames.append(HEADER.pack(1, Op.SUBMIT_DAG, 0, 0, len(deep)) + deep)
        elif kind == 8:  # containers that claim billions of elements
            huge = rnd.choice([b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"])
            frames.append(HEADER.pack(1, Op.KV_GET, 0, 0, len(huge)) + huge)
        elif kind == 9:  # a valid frame truncated
            cut = valid[: rnd.randint(8, len(valid) - 1)]
            frames.append(cut)
        else:  # a valid frame with one byte of the body flipped into a never-valid marker
            body = bytearray(valid)
            body[8] = 0xC1
            frames.append(bytes(body))
    return frames


def fire(address: str, frames: list[bytes], envelope: bool) -> list[dict]:
    """Send each frame on a DEALER and collect the replies (each must be an ERROR)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    replies = []
    try:
        for frame in frames:
            sock.send_multipart([b"", frame] if envelope else [frame])
            assert sock.poll(5000), "no reply to a bad frame"
            parts = sock.recv_multipart()
            replies.append(decode(parts[-1]).body)
    finally:
        sock.close(0)
    return replies


def test_random_frames_to_broker_and_store_get_errors_and_both_keep_serving(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1)
    frames = random_frames(seed=7, count=10_000)
    for address, envelope in ((cluster.broker_addr, False), (cluster.store_addr, True)):
        replies = fire(address, frames, envelope)
        assert len(replies) == len(frames)
        assert all(r.get("code") and r.get("message") for r in replies), [r for r in replies if not r.get("code")]
    codes = {r["code"] for r in fire(cluster.broker_addr, frames[:11], False)}
    assert {"short_frame", "bad_version", "length_mismatch", "unknown_op", "bad_body"} <= codes
    with cluster.client() as c:
        assert c.stats()["bad_frames"] >= len(frames)
        path = write_pipeline(tmp_path, {"name": "after", "jobs": [
            {"id": "a", "command": ["echo", "still fine"]}, {"id": "b", "command": ["true"], "depends_on": ["a"]}]})
        run = c.submit_yaml(path)
        assert run.wait(timeout=60)["state"] == "SUCCEEDED"
        assert c.logs(run.run_id, "a") == ["still fine"]
        c.store_put("after-fuzz", "ok")
        assert c.store_get("after-fuzz") == "ok"


def test_oversize_and_multi_frame_messages_are_refused(cluster):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.broker_addr)
    try:
        sock.send_multipart([encode(Op.STATS, {"rid": 1}), b"extra"])
        assert sock.poll(5000)
        assert decode(sock.recv()).body["code"] == "bad_request"
        huge = HEADER.pack(1, Op.STATS, 0, 0, 2**31) + b"\x80"
        sock.send(huge)
        assert sock.poll(5000)
        assert decode(sock.recv()).body["code"] == "oversize"
    finally:
        sock.close(0)


def test_cyclic_dag_and_unknown_parent_are_rejected_naming_the_jobs(client):
    jobs = [TitanJob("a", command=["true"], parents=["c"]), TitanJob("b", command=["true"], parents=["a"]),
            TitanJob("c", command=["true"], parents=["b"])]
    with pytest.raises(InvalidRequest, match=r"cycle between jobs: ") as info:
        client.submit_dag("cyclic", jobs)
    assert all(f"{j}" in str(info.value).split(": ", 1)[1].split(" -> ") for j in "abc"), info.value
    with pytest.raises(InvalidRequest, match="'x' depends on unknown job\\(s\\): ghost"):
        client.submit_dag("orphan", [TitanJob("x", command=["true"], parents=["ghost"])])
    with pytest.raises(InvalidRequest, match="duplicate job id\\(s\\): d"):
        client.submit_dag("dups", [TitanJob("d", command=["true"]), TitanJob("d", command=["true"])])
    names = {r["name"] for r in client.runs()}
    assert not names & {"cyclic", "orphan", "dups"}, "nothing of a rejected submission may exist"


def test_invalid_yaml_field_and_missing_file_are_named(client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "typo", "jobs": [
        {"id": "a", "command": ["true"]}, {"id": "b", "command": ["true"]},
        {"id": "c", "command": ["true"], "priority": "high"}]})
    with pytest.raises(PipelineError, match=r"jobs\[2\]\.priority: expected integer"):
        client.submit_yaml(path)
    path = write_pipeline(tmp_path / "m", {"name": "missing", "jobs": [{"id": "a", "file": "nope.py"}]})
    with pytest.raises(PipelineError, match=r"jobs\[0\]\.file: 'nope.py' not found \(job 'a'\)"):
        client.submit_yaml(path)
    path.write_text("name: broken\njobs:\n  - id: a\n    command: [true\n")
    with pytest.raises(PipelineError, match="line"):
        client.submit_yaml(path)


def test_unknown_run_and_job_ids_are_not_found(client):
    with pytest.raises(NotFound, match="unknown run id 'no-such-run'"):
        client.status("no-such-run")
    with pytest.raises(NotFound):
        client.logs("no-such-run", "x")
    with pytest.raises(NotFound):
        client.cancel("no-such-run")
    run = client.submit_job(TitanJob("one", command=["true"]))
    with pytest.raises(NotFound, match="has no job 'two'"):
        client.cancel(run.run_id, "two")


def test_unreachable_broker_is_reported_not_hung_on():
    from client import TitanClient
    from tests.helpers import reserved_port

    with reserved_port() as port, TitanClient(f"tcp://127.0.0.1:{port}", timeout=1.0) as c:
        with pytest.raises(BrokerUnavailable, match="no answer from the broker"):
            c.status("x")


def test_struct_header_is_the_documented_layout():
    frame = encode(Op.SUBMIT_DAG, {"a": 1})
    assert struct.unpack(">BBBBI", frame[:8]) == (1, 0x04, 0, 0, len(frame) - 8)


def test_a_second_live_worker_with_the_same_name_is_refused(make_cluster):
    from tests.helpers import wait_until

    cluster = make_cluster(workers=1)
    with cluster.client() as c:
        original = {w["id"]: w["pid"] for w in c.workers()}
        assert list(original) == ["worker1"]
        dup = cluster._start("worker1-dup", cluster._py(
            "titan_zmq.worker", "--broker", cluster.broker_addr, "--name", "worker1",
            "--workspace", str(cluster.data_dir / "dup")))
        wait_until(lambda: "already registered" in dup.log_path.read_text(), timeout=20,
                   what="the duplicate to be told its name is taken")
        assert {w["id"]: w["pid"] for w in c.workers()} == original
        run = c.submit_dag("still-fine", [TitanJob("a", command=["true"])])
        assert run.wait(timeout=30)["jobs"]["a"]["worker"] == "worker1"
