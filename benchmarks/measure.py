"""What the scenarios measure with: percentiles, CPU accounting, the machine, and the floors (the same work
run directly with ``subprocess`` from the benchmark process)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(own user+system CPU seconds, those of the children it has waited for)."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def per_job_ms(after: tuple[float, float], before: tuple[float, float], n: int) -> tuple[float, float]:
    return (after[0] - before[0]) * 1000 / n, (after[1] - before[1]) * 1000 / n


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def floor_pool(argv: list[str], n: int, concurrency: int = 8) -> float:
    """Seconds to run argv n times through a pool of `concurrency` threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True), range(n)))
    return time.perf_counter() - t0


def floor_each(argv: list[str], n: int) -> list[float]:
    """Seconds of each of n runs of argv, one after the other."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.PIPE, check=True)
        out.append(time.perf_counter() - t0)
    return out
