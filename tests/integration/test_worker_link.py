"""A real worker process against a scripted broker: what the worker says and keeps, frame by frame."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from titan_zmq.protocol import Flag, Message, Op, decode, encode

REPO = Path(__file__).parents[2]


class FakeBroker:
    """A ROUTER the test drives by hand; it keeps the worker's link alive with heartbeats while it waits."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.addr = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.worker: bytes | None = None

    def send(self, op: Op, body: dict[str, Any], flags: int = 0) -> None:
        assert self.worker is not None
        self.sock.send_multipart([self.worker, encode(op, body, flags)])

    def expect(self, op: Op, timeout: float = 30.0) -> Message:
        """The next message of kind ``op`` from the worker (others are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(300):
                identity, frame = self.sock.recv_multipart()
                msg = decode(frame)
                if msg.op == Op.REGISTER:
                    self.worker = identity  # a re-registration comes from a new socket
                if msg.op == op:
                    return msg
            elif self.worker is not None:
                self.send(Op.HEARTBEAT, {})
        raise AssertionError(f"no {op.name} from the worker within {timeout}s")

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[FakeBroker]:
    fake = FakeBroker()
    proc = subprocess.Popen(
        [sys.executable, "-m", "titan_zmq.worker", "--broker", fake.addr, "--workspace", str(tmp_path / "work"),
         "--name", "w1", "--slots", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
    )
    try:
        yield fake
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fake.close()


def test_outcomes_stay_in_the_outbox_until_acknowledged(link: FakeBroker) -> None:
    reg = link.expect(Op.REGISTER)
    assert reg.body["name"] == "w1" and reg.body["done"] == [] and reg.body["running"] == []
    link.send(Op.ACK, {"name": "w1", "interval": 1.0, "liveness": 3}, Flag.REPLY)
    for job in ("a", "b"):
        link.send(Op.DISPATCH, {"run_id": "r", "job_id": job, "attempt": 1, "spec": {"command": ["true"]}})
    finished = {link.expect(Op.JOB_COMPLETE).body["job_id"] for _ in range(2)}
    assert finished == {"a", "b"}
    link.send(Op.ACK, {"acks": [["r", "a", 1]]}, Flag.REPLY)  # only a's outcome was journaled
    link.send(Op.HEARTBEAT, {"registered": False})  # "I restarted and do not know you"
    again = link.expect(Op.REGISTER)
    assert again.body["done"] == [["r", "b", 1]], "an acknowledged outcome was reported again, or b's was lost"
    resent = link.expect(Op.JOB_COMPLETE).body
    assert (resent["job_id"], resent["exit_code"]) == ("b", 0)
    link.send(Op.ACK, {"acks": [["r", "b", 1]]}, Flag.REPLY)
    link.send(Op.HEARTBEAT, {"registered": False})
    assert link.expect(Op.REGISTER).body["done"] == []


def test_a_duplicate_dispatch_is_not_a_second_execution(link: FakeBroker, tmp_path: Path) -> None:
    link.expect(Op.REGISTER)
    link.send(Op.ACK, {"name": "w1", "interval": 1.0, "liveness": 3}, Flag.REPLY)
    marker = tmp_path / "ran"
    spec = {"command": ["sh", "-c", f"echo x >> {marker}; sleep 0.5"]}
    for _ in range(2):
        link.send(Op.DISPATCH, {"run_id": "r", "job_id": "once", "attempt": 1, "spec": spec})
    done = link.expect(Op.JOB_COMPLETE).body
    assert done["job_id"] == "once" and done["exit_code"] == 0
    link.send(Op.DISPATCH, {"run_id": "r", "job_id": "once", "attempt": 1, "spec": spec})  # outcome not acked yet
    link.send(Op.HEARTBEAT, {"registered": False})
    assert link.expect(Op.REGISTER).body["done"] == [["r", "once", 1]]
    assert marker.read_text() == "x\n"
