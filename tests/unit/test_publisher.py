"""The broker's XPUB fan-out follows who listens, including subscribers that just go away."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from titan_zmq.broker.publisher import EventPublisher
from titan_zmq.protocol import decode


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Context, EventPublisher, str]]:
    ctx = zmq.Context()
    events = EventPublisher(ctx, "tcp://127.0.0.1:*")  # the OS picks the port as it binds: no race
    addr = events.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    yield ctx, events, addr
    events.close()
    ctx.term()


def settle(events: EventPublisher, until, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"subscriptions never became {events.prefixes}"
        if events.sock.poll(100):
            events.on_subscriptions()


def test_only_wanted_topics_are_sent_and_a_vanished_subscriber_unsubscribes(pub) -> None:
    ctx, events, addr = pub
    assert not events.wanted("job/r1/")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(addr)
    sub.setsockopt(zmq.SUBSCRIBE, b"job/r1/")
    settle(events, lambda: events.prefixes == {b"job/r1/"})
    assert events.wanted("job/r1/") and not events.wanted("job/r2/") and not events.wanted("log/r1/a/")
    events.publish("job/r2/", {"n": 1})
    events.publish("job/r1/", {"n": 2})
    assert sub.poll(5000)
    topic, frame = sub.recv_multipart()
    assert (topic, decode(frame).body) == (b"job/r1/", {"n": 2})  # r2's event was never sent
    second = ctx.socket(zmq.SUB)  # a second subscriber of the same prefix, and one that takes everything
    second.connect(addr)
    second.setsockopt(zmq.SUBSCRIBE, b"job/r1/")
    second.setsockopt(zmq.SUBSCRIBE, b"")
    settle(events, lambda: b"" in events.prefixes)
    assert events.wanted("hb/")
    second.close(0)  # gone without unsubscribing: the first still listens to job/r1/
    settle(events, lambda: events.prefixes == {b"job/r1/"})
    sub.close(0)
    settle(events, lambda: not events.prefixes)
