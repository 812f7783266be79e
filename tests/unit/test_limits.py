"""Issue 8 limits without sockets: error replies keep the request id, events stay small, refusals are
logged without flooding, exposure is judged by address."""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import pytest

from titan_zmq.broker.publisher import split_event
from titan_zmq.cli_common import is_loopback
from titan_zmq.errors import ErrorCode
from titan_zmq.protocol import HEADER, Op, decode, encode
from titan_zmq.refusals import RefusalLog
from titan_zmq.store.service import StoreService

DEEP = b"\x91" * 5000 + b"\xc0"  # a list nested 5000 deep: more than msgpack will decode


def frame(op: int, body: bytes, length: int | None = None) -> bytes:
    return HEADER.pack(1, op, 0, 0, len(body) if length is None else length) + body


def rid_then(value: bytes, rid: int = 7) -> bytes:
    """A two-entry map: rid first, then a value given raw."""
    return b"\x82" + msgpack.packb("rid") + msgpack.packb(rid) + msgpack.packb("key") + value


@pytest.fixture
def service(tmp_path: Path):
    svc = StoreService(tmp_path, "no")
    yield svc
    svc.close()


@pytest.mark.parametrize("bad", [
    frame(Op.KV_GET, rid_then(DEEP)),  # decodes but too deep
    frame(Op.KV_GET, rid_then(msgpack.packb("k")), length=50),  # the header's length is wrong
    frame(Op.KV_GET, rid_then(msgpack.packb("k")) + b"\xc1junk"),  # trailing junk after the map
    frame(0x7E, rid_then(msgpack.packb("k"))),  # an op nobody serves
])
def test_store_error_replies_carry_the_request_id_when_it_can_be_read(service, bad: bytes) -> None:
    before = service.counters["bad_frames"]
    reply = decode(service.handle(bad))
    assert reply.is_error and reply.rid == 7, reply.body
    assert service.counters["bad_frames"] == before + 1


def test_a_body_with_no_readable_rid_still_gets_an_error(service) -> None:
    reply = decode(service.handle(frame(Op.KV_GET, b"\xc1")))
    assert reply.is_error and reply.rid is None and reply.body["code"] == ErrorCode.BAD_BODY


def test_requests_put_the_rid_first_on_the_wire() -> None:
    from titan_zmq.reqlink import RequestLink

    sent: list[bytes] = []

    class Sock:
        def send_multipart(self, parts: list[bytes]) -> None:
            sent.append(parts[-1])

        def poll(self, *a: object) -> int:
            return 0

        def close(self, *a: object) -> None:
            pass

    link = RequestLink("tcp://127.0.0.1:1", 0.01, lambda op, w: TimeoutError())  # type: ignore[arg-type,return-value]
    link._sock = Sock()  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        link.request(Op.KV_GET, {"key": "k", "rid": "ignored"})
    body = msgpack.unpackb(sent[0][8:])
    assert list(body)[0] == "rid" and body["rid"] == 1


def test_a_request_over_the_frame_cap_is_refused_before_sending() -> None:
    from titan_zmq.errors import InvalidRequest
    from titan_zmq.reqlink import RequestLink

    link = RequestLink("tcp://127.0.0.1:1", 1.0, lambda op, w: TimeoutError(), max_body=1000)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidRequest, match="frame cap"):
        link.request(Op.KV_SET, {"key": "k", "value": b"x" * 2000})
    assert link._sock is None  # nothing was even connected


def test_log_events_are_split_under_the_event_cap() -> None:
    lines = [[n, 1, "out", "x" * 1000, 0.0] for n in range(200)]
    frames = list(split_event({"run_id": "r", "job_id": "j", "lines": lines}, 16 * 1024))
    assert None not in frames and all(len(f) <= 16 * 1024 for f in frames)  # type: ignore[arg-type]
    got = [rec[0] for f in frames for rec in decode(f).body["lines"]]  # type: ignore[arg-type]
    assert got == list(range(200))  # in order, nothing lost
    assert list(split_event({"state": "x" * 100}, 16 * 1024)) == [encode(Op.DATA, {"state": "x" * 100})]
    assert list(split_event({"blob": "x" * 20_000}, 16 * 1024)) == [None]  # too big and not splittable


def test_refusals_are_all_counted_but_logged_at_a_bounded_rate(caplog) -> None:
    now = [0.0]
    counters: dict[str, int] = {}
    refusals = RefusalLog(logging.getLogger("t"), counters, burst=3, window=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(100):
            refusals.refused("peer", "bad_body", "nope")
        now[0] = 11.0
        refusals.refused("peer", "bad_body", "nope")
    assert counters["bad_frames"] == 101
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and "97 more refused frames" in lines[3], lines


@pytest.mark.parametrize(("addr", "local"), [
    ("tcp://127.0.0.1:9090", True), ("tcp://localhost:1", True), ("tcp://[::1]:1", True),
    ("ipc:///tmp/x", True), ("tcp://0.0.0.0:9090", False), ("tcp://*:9090", False),
    ("tcp://eth0:9090", False), ("tcp://10.1.2.3:1", False), ("tcp://[::]:1", False),
])
def test_loopback_addresses(addr: str, local: bool) -> None:
    assert is_loopback(addr) is local
