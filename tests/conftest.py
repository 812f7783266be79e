"""Fixtures shared by every tier: real clusters on free ports, always torn down (helpers: tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from client.cluster import LocalCluster


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start clusters with custom settings; every one is stopped at the end of the test."""
    started: list[LocalCluster] = []

    def make(workers: int = 2, slots: int = 4, caps: list[list[str]] | None = None,
             broker_args: list[str] | None = None, start: bool = True) -> LocalCluster:
        cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), workers=workers, slots=slots,
                               worker_caps=caps or [], broker_args=broker_args or ["--retry-backoff", "0.2"])
        started.append(cluster)
        return cluster.start() if start else cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A shared cluster (store, broker, 2 workers x 4 slots) for tests that only submit runs."""
    c = LocalCluster(tmp_path_factory.mktemp("shared-cluster"), workers=2, slots=4,
                     broker_args=["--retry-backoff", "0.2"])
    c.start()
    yield c
    c.stop()


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Any]:
    with cluster.client() as c:
        yield c
