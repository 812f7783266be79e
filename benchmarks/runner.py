"""Runs the chosen scenarios (the ones that share a cluster on one cluster) and writes the JSON document."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import machine
from benchmarks.scenarios import Bench
from client.api import TitanClient
from client.cluster import LocalCluster
from client.job import TitanJob

OnCluster = Callable[[LocalCluster, TitanClient], None]


def on_shared_cluster(bench: Bench) -> dict[str, OnCluster]:
    """The scenarios that run one after the other on one cluster, in the order they run."""
    hello = str(bench.hello)
    return {
        "single": lambda _, c: bench.single(c, "single", lambda i: TitanJob(f"s{i}", filename=hello), bench.py()),
        "single-true": lambda _, c: bench.single(c, "single-true", lambda i: TitanJob(f"t{i}", command=["true"]),
                                                 ["true"]),
        "throughput": lambda _, c: bench.throughput(c),
        "chain": lambda _, c: bench.chain(c),
        "fan": lambda _, c: bench.fan(c),
        "logs": lambda _, c: bench.logs(c),
        "big-dag": bench.big_dag,
    }


def run(bench: Bench, only: list[str] | None = None) -> dict[str, Any]:
    def want(name: str) -> bool:
        return only is None or name in only

    if want("startup"):  # first, before any cluster adds to the machine's load
        bench.startup()
    shared = {name: scenario for name, scenario in on_shared_cluster(bench).items() if want(name)}
    if shared:
        cluster = bench.cluster("main")
        try:
            with cluster.client(timeout=30) as c:
                for scenario in shared.values():
                    scenario(cluster, c)
        finally:
            cluster.stop()
    if want("store"):
        bench.store_ops()
    if want("recovery"):
        bench.recovery()
    if want("restart-history"):
        bench.restart_history()
    if only is not None and "ui" in only:  # only when asked for: it needs Chromium (benchmarks/ui.py)
        from benchmarks import ui

        ui.run(bench.quick, bench.dir, bench.record)
    return {"machine": machine(), "quick": bench.quick, "scenarios": bench.results}


def run_bench(quick: bool, json_path: str | None, only: list[str] | None,
              echo: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="titan-bench-") as tmp:
        doc = run(Bench(quick, Path(tmp), echo), only)
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2))
    return doc
