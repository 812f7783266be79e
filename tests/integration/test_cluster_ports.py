"""LocalCluster picks its own ports and starts again elsewhere when one is taken before it binds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import client.cluster as cluster_mod
from client.cluster import LocalCluster
from titan_zmq.errors import TitanError


@pytest.mark.parametrize("taken", [0, 2], ids=["broker-port", "store-port"])
def test_a_port_taken_before_the_bind_moves_the_cluster_to_new_ports(tmp_path: Path, monkeypatch, taken: int):
    real = cluster_mod._candidate_base_port
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    clash = squatter.getsockname()[1] - taken
    guesses = iter([clash])
    monkeypatch.setattr(cluster_mod, "_candidate_base_port", lambda host: next(guesses, None) or real(host))
    cluster = LocalCluster(tmp_path, workers=1)
    try:
        assert cluster.base_port == clash
        cluster.start()
        assert cluster.base_port != clash
        with cluster.client() as c:
            assert [w["id"] for w in c.workers()] == ["worker1"]
    finally:
        cluster.stop()
        squatter.close()


def test_an_explicit_base_port_that_is_taken_fails_clearly(tmp_path: Path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        cluster = LocalCluster(tmp_path, base_port=squatter.getsockname()[1], workers=0)
        try:
            with pytest.raises(TitanError, match="broker exited"):
                cluster.start()
        finally:
            cluster.stop()


def test_auto_picked_ports_lie_below_the_ephemeral_range(tmp_path: Path):
    """Outgoing connections take their local port from the ephemeral range: a cluster's ports outside it
    stay free for a component restarted on them (a broker killed and started again in a crash test)."""
    low, _ = cluster_mod._ephemeral_range()
    bases = {cluster_mod._candidate_base_port("127.0.0.1") for _ in range(20)}
    assert all(cluster_mod.LOW_PORT <= b and b + cluster_mod.PORTS <= low for b in bases), (bases, low)
    assert len(bases) > 1  # random: parallel test processes do not all try the same block first
    cluster = LocalCluster(tmp_path / "c", workers=0).start()
    try:
        assert cluster.base_port + cluster_mod.PORTS <= low
    finally:
        cluster.stop()
