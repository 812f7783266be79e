"""Compare `titan bench` figures of two git revisions, run alternately on this machine.

    .venv/bin/python scripts/ab_bench.py BEFORE AFTER [--rounds 6] [--only throughput --only fan ...]

Each revision is checked out in a temporary git worktree and run with this venv's interpreter
(PYTHONPATH pointing at the worktree, so its own code is imported); rounds alternate BEFORE, AFTER,
BEFORE, ... so that the machine's slow and fast spells hit both alike.  Prints every round, then the
median and range of each scenario's ratio (and big-dag's CPU per job) per revision.  A single run of
`titan bench` moves by 10-20 % on a shared 2-CPU VM; a difference smaller than the ranges printed here
is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tree: Path, only: list[str], out: Path) -> dict[str, dict[str, Any]]:
    args = [str(Path(sys.executable).parent / "titan"), "bench", "--json", str(out)]
    for name in only:
        args += ["--only", name]
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run(args, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scenarios: dict[str, dict[str, Any]] = json.loads(out.read_text())["scenarios"]
    return scenarios


def summary(rows: list[dict[str, dict[str, Any]]], name: str) -> str:
    ratios = [r[name]["ratio"] for r in rows if r.get(name, {}).get("ratio") is not None]
    if not ratios:
        return f"{name}: -"
    text = f"{name} ratio median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
    cpu = [sum(r[name]["cpu_ms_per_job"].values()) for r in rows if "cpu_ms_per_job" in r.get(name, {})]
    if cpu:
        text += f", cluster CPU {statistics.median(cpu):.3f} ms/job (range {min(cpu):.3f}-{max(cpu):.3f})"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--only", action="append", default=[])
    opts = ap.parse_args()
    only = opts.only or ["throughput", "fan"]
    with tempfile.TemporaryDirectory(prefix="titan-ab-") as tmp:
        trees = {}
        for label, rev in (("before", opts.before), ("after", opts.after)):
            trees[label] = Path(tmp) / label
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[label]), rev], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results: dict[str, list[dict[str, dict[str, Any]]]] = {"before": [], "after": []}
        try:
            for i in range(1, opts.rounds + 1):
                for label, tree in trees.items():
                    row = run_bench(tree, only, Path(tmp) / f"{label}-{i}.json")
                    results[label].append(row)
                    print(f"round {i} {label:6}", "  ".join(f"{n} {row[n]['ratio']:.3f}" for n in only
                                                            if row.get(n, {}).get("ratio") is not None), flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for label, rev in (("before", opts.before), ("after", opts.after)):
            print(f"{label} ({rev}): " + "; ".join(summary(results[label], n) for n in only))


if __name__ == "__main__":
    main()
