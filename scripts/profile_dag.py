"""Profile the broker, a worker and the store while a big DAG of `true` jobs runs (py-spy needed).

    .venv/bin/pip install py-spy
    .venv/bin/python scripts/profile_dag.py [JOBS] [OUT_DIR] [--gil]

Writes py-spy raw (collapsed) stacks per process and prints the 25 hottest frames of each.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client import TitanJob
from client.cluster import LocalCluster

EXTRA = ["--gil"] if "--gil" in sys.argv else []  # --gil: only samples holding the GIL (CPU in Python)


def dag(n: int) -> list[TitanJob]:
    """The bench's big-dag shape: groups of 10 (a root, a fan-out of 5, a chain of 4)."""
    jobs = []
    for i in range(n):
        base, k = i - i % 10, i % 10
        parents = [] if k == 0 else [f"b{base}"] if k <= 5 else [f"b{i - 1}"] if k > 6 else [f"b{base + 1}"]
        jobs.append(TitanJob(f"b{i}", command=["true"], parents=parents, retries=0))
    return jobs


def hottest(path: Path, top: int = 25) -> list[tuple[float, str]]:
    total, frames = 0, collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            frames[frame] += int(count)
    return [(100.0 * c / max(total, 1), f) for f, c in frames.most_common(top)]


def main() -> None:
    argv = [a for a in sys.argv[1:] if a != "--gil"]
    n = int(argv[0]) if argv else 4000
    out = Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="titan-profile-"))
    spy = Path(sys.executable).parent / "py-spy"
    cluster = LocalCluster(out / "cluster", workers=2).start()
    try:
        targets = {"broker": cluster.procs["broker"].pid, "worker": cluster.procs["worker1"].pid,
                   "store": cluster.procs["store"].pid}
        spies = [subprocess.Popen([str(spy), "record", "-p", str(pid), "-o", str(out / f"{name}.txt"), "-f", "raw",
                                   *EXTRA, "-r", "200", "-d", str(max(10, n // 400))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in targets.items()]
        time.sleep(1)
        with cluster.client(timeout=30) as c:
            t0 = time.time()
            run = c.submit_dag("profile", dag(n))
            state = c.wait(run.run_id, timeout=600)["state"]
            print(f"{n} jobs: {state} in {time.time() - t0:.2f}s")
        for s in spies:
            s.wait()
    finally:
        cluster.stop()
    for name in ("broker", "worker", "store"):
        print(f"===== {name}")
        for pct, frame in hottest(out / f"{name}.txt"):
            print(f"{pct:5.1f}% {frame[:110]}")
    print(f"raw stacks in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
