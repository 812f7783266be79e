"""The scenarios of `titan bench`: each measures titan and its floor and records one result.

Every scenario runs on a fresh local cluster (store, broker, 2 workers x 4 slots, free ports), and
its floor, the same work through ``subprocess`` on this machine, runs in the same process run.
Python jobs use the workers' own interpreter in both, so the comparison is fair.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks import startup
from benchmarks.measure import cpu_seconds, floor_each, floor_pool, pct, per_job_ms
from benchmarks.report import line
from client.api import TitanClient
from client.cluster import LocalCluster
from client.job import TitanJob
from titan_zmq import keys
from titan_zmq.protocol import pack
from titan_zmq.store.client import StoreClient

HELLO = "print('hello')\n"
TICKER = "import time\nfor i in range({n}):\n    print(f'{{time.time():.6f}}', flush=True)\n    time.sleep(0.01)\n"


def restart_to_first_dispatch(cluster: LocalCluster) -> float:
    """kill -9 the broker and start it again; seconds from the start until a new job started on a worker."""
    with cluster.client(timeout=2) as c:
        cluster.procs["broker"].kill()
        t0 = time.perf_counter()
        cluster.start_broker()
        while True:
            try:
                run = c.submit_job(TitanJob("probe", command=["true"]))
                break
            except Exception:
                time.sleep(0.01)
        st = c.wait(run.run_id, timeout=60)
        resumed = st["jobs"]["probe"]["started_at"]
        return float(resumed - (time.time() - (time.perf_counter() - t0)))


class Bench:
    def __init__(self, quick: bool, workdir: Path, echo: Callable[[str], None] = print):
        self.quick = quick
        self.dir = workdir
        self.echo = echo
        self.hello = workdir / "hello.py"
        self.hello.write_text(HELLO)
        self.results: dict[str, dict[str, Any]] = {}

    # ---- helpers ---------------------------------------------------------------------------

    def cluster(self, name: str, store_args: list[str] | None = None,
                broker_args: list[str] | None = None) -> LocalCluster:
        c = LocalCluster(self.dir / name, workers=2, slots=4, broker_args=broker_args or [])
        c.start_store(store_args)
        c.start_broker()
        for i in range(2):
            c.start_worker(f"worker{i + 1}")
        c.wait_ready(2)
        return c

    def py(self) -> list[str]:
        return [sys.executable, str(self.hello)]

    def record(self, name: str, **fields: Any) -> None:
        self.results[name] = fields
        self.echo(line(name, fields))

    def run_to_end(self, c: TitanClient, name: str, jobs: list[TitanJob], timeout: float = 600) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        run = c.submit_dag(name, jobs)
        st = c.wait(run.run_id, timeout=timeout)
        elapsed = time.perf_counter() - t0
        if st["state"] != "SUCCEEDED":
            raise RuntimeError(f"{name}: run ended {st['state']}")
        return elapsed, st

    # ---- scenarios -------------------------------------------------------------------------

    def startup(self) -> None:
        self.record("startup", **startup.measure(self.quick, self.dir))

    def single(self, c: TitanClient, name: str, job: Callable[[int], TitanJob], floor_argv: list[str]) -> None:
        """One job at a time, submit -> COMPLETED, each followed by one floor run (so drifts hit both)."""
        n = 10 if self.quick else 40
        lat, floor = [], []
        for i in range(n + 2):
            t0 = time.perf_counter()
            run = c.submit_job(job(i))
            st = c.wait(run.run_id, timeout=60)
            if st["state"] != "SUCCEEDED":
                raise RuntimeError(f"{name}: job ended {st['state']}")
            took = time.perf_counter() - t0
            floor_took = floor_each(floor_argv, 1)[0]
            if i >= 2:  # the first two warm the caches
                lat.append(took)
                floor.append(floor_took)
        p50, p99, f50 = pct(lat, 0.5), pct(lat, 0.99), pct(floor, 0.5)
        self.record(name, value=p50 * 1000, unit="ms p50", p99_ms=p99 * 1000, floor=f50 * 1000,
                    floor_p99_ms=pct(floor, 0.99) * 1000, ratio=p50 / f50, overhead_ms=(p50 - f50) * 1000, n=n)

    def repeated(self, titan: Callable[[], float], floor: Callable[[], float]) -> tuple[float, float]:
        """Median seconds of titan and of its floor, run alternately (1 round quick, 3 full, after one
        unmeasured warm-up round each) so that drifts of the machine hit both alike."""
        rounds = 1 if self.quick else 3
        titan(), floor()  # warm-up: the first round pays for cold caches on both sides
        t, f = [], []
        for _ in range(rounds):
            t.append(titan())
            f.append(floor())
        return statistics.median(t), statistics.median(f)

    def throughput(self, c: TitanClient) -> None:
        n = 200
        elapsed, floor = self.repeated(
            lambda: self.run_to_end(c, "throughput", [TitanJob(f"h{i}", filename=str(self.hello)) for i in range(n)])[0],
            lambda: floor_pool(self.py(), n))
        self.record("throughput", value=n / elapsed, unit="jobs/s", floor=n / floor, ratio=floor / elapsed,
                    overhead_ms=(elapsed - floor) / n * 1000, n=n, seconds=elapsed, floor_seconds=floor)

    def chain(self, c: TitanClient) -> None:
        n = 20 if self.quick else 50

        def chain_of(argv_job: Callable[[int], TitanJob]) -> list[TitanJob]:
            jobs = [argv_job(i) for i in range(n)]
            for i in range(1, n):
                jobs[i].parents = [f"c{i - 1}"]
            return jobs

        elapsed, floor = self.repeated(
            lambda: self.run_to_end(c, "chain", chain_of(lambda i: TitanJob(f"c{i}", filename=str(self.hello))))[0],
            lambda: sum(floor_each(self.py(), n)))
        true_elapsed, true_floor = self.repeated(
            lambda: self.run_to_end(c, "chain-true", chain_of(lambda i: TitanJob(f"c{i}", command=["true"])))[0],
            lambda: sum(floor_each(["true"], n)))
        self.record("chain", value=(elapsed - floor) / n * 1000, unit="ms/hop", floor=floor, seconds=elapsed,
                    ratio=elapsed / floor, overhead_ms=(elapsed - floor) / n * 1000, n=n,
                    true_hop_overhead_ms=(true_elapsed - true_floor) / n * 1000)

    def fan(self, c: TitanClient) -> None:
        width = 40 if self.quick else 100
        jobs = [TitanJob("src", filename=str(self.hello))]
        jobs += [TitanJob(f"m{i}", filename=str(self.hello), parents=["src"]) for i in range(width)]
        jobs.append(TitanJob("sink", filename=str(self.hello), parents=[f"m{i}" for i in range(width)]))

        def floor() -> float:
            return (sum(floor_each(self.py(), 1)) + floor_pool(self.py(), width)
                    + sum(floor_each(self.py(), 1)))

        elapsed, floor_s = self.repeated(lambda: self.run_to_end(c, "fan", jobs)[0], floor)
        self.record("fan", value=elapsed, unit="s", floor=floor_s, ratio=elapsed / floor_s,
                    overhead_ms=(elapsed - floor_s) * 1000, width=width)

    def big_dag(self, cluster: LocalCluster, c: TitanClient) -> None:
        n = 1000 if self.quick else 10_000
        jobs = []
        for i in range(n):  # groups of 10: a root fanning out to 5, and a chain of 4
            base, k = i - i % 10, i % 10
            parents = [] if k == 0 else [f"b{base}"] if k <= 5 else [f"b{i - 1}"] if k > 6 else [f"b{base + 1}"]
            jobs.append(TitanJob(f"b{i}", command=["true"], parents=parents, retries=0))
        broker = psutil.Process(cluster.procs["broker"].pid)
        roles = {name: psutil.Process(proc.pid) for name, proc in cluster.procs.items()}
        cpu_before = {name: cpu_seconds(p) for name, p in roles.items()}
        base_rss = broker.memory_info().rss
        peak = [base_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], broker.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            elapsed, _ = self.run_to_end(c, "big-dag", jobs, timeout=1800)
        finally:
            stop.set()
            sampler.join()
        # CPU ms per job of each process of the cluster (own time, then the jobs it waited for)
        cpu = {name: per_job_ms(cpu_seconds(p), cpu_before[name], n) for name, p in roles.items()}
        me = psutil.Process()
        mine_before = cpu_seconds(me)
        floor = floor_pool(["true"], n)
        floor_cpu = per_job_ms(cpu_seconds(me), mine_before, n)
        self.record("big-dag", value=elapsed, unit="s", floor=floor, ratio=elapsed / floor,
                    overhead_ms=(elapsed - floor) / n * 1000, n=n, peak_rss_mib=peak[0] / 2**20,
                    rss_per_job_kib=(peak[0] - base_rss) / n / 1024,
                    cpu_ms_per_job={name: round(own, 3) for name, (own, _) in cpu.items()},
                    job_cpu_ms_per_job=round(sum(kids for _, kids in cpu.values()), 3),
                    floor_cpu_ms_per_job={"pool": round(floor_cpu[0], 3), "jobs": round(floor_cpu[1], 3)})

    def store_ops(self) -> None:
        n = 500 if self.quick else 3000
        out: dict[str, Any] = {}
        for policy in ("always", "everysec"):
            cluster = self.cluster(f"store-{policy}", ["--fsync", policy])
            try:
                with cluster.client() as c:
                    t0 = time.perf_counter()
                    for i in range(n):
                        c.store_put(f"k{i % 100}", "v" * 64)
                    sets = n / (time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(n):
                        c.store_get(f"k{i % 100}")
                    gets = n / (time.perf_counter() - t0)
                out[policy] = {"set_ops": sets, "get_ops": gets}
            finally:
                cluster.stop()
        self.record("store", value=out["everysec"]["set_ops"], unit="set ops/s everysec",
                    always_set_ops=out["always"]["set_ops"], always_get_ops=out["always"]["get_ops"],
                    everysec_get_ops=out["everysec"]["get_ops"], n=n)

    def recovery(self) -> None:
        transitions = 10_000 if self.quick else 100_000
        cluster = self.cluster("recovery")
        try:
            jobs_n = transitions // 4  # each job journaled 4 times: PENDING, QUEUED, RUNNING, COMPLETED
            store = StoreClient(cluster.store_addr, timeout=60)
            run_id = "recovery-bench"
            meta = {"run_id": run_id, "name": "recovery", "state": "SUCCEEDED", "created_at": time.time(),
                    "finished_at": time.time(), "agent_run_id": None}
            # written as the broker's journal would be (the store refuses these keys to anyone else)
            ops: list[list[Any]] = [["set", keys.run_key(run_id), pack(meta), None]]
            for i in range(jobs_n):
                spec = pack({"id": f"j{i}", "command": ["true"], "_order": i})
                ops.append(["set", keys.spec_key(run_id, f"j{i}"), spec, None])
            store.batch(ops, journal=True)
            for state in ("PENDING", "QUEUED", "RUNNING", "COMPLETED"):
                for lo in range(0, jobs_n, 5000):
                    store.batch([["set", keys.job_key(run_id, f"j{i}"), pack({"state": state, "attempts": 1}), None]
                                 for i in range(lo, min(jobs_n, lo + 5000))], journal=True)
            store.close()
            elapsed = restart_to_first_dispatch(cluster)
        finally:
            cluster.stop()
        self.record("recovery", value=elapsed, unit="s", transitions=transitions, jobs=jobs_n)

    def restart_history(self) -> None:
        """Broker restart to first dispatch with a long history: finished one-job runs in the journal,
        all kept (``--retain-runs 0``), then again with the default retention (which then trims them)."""
        runs = 10_000 if self.quick else 100_000
        cluster = self.cluster("restart-history", broker_args=["--retain-runs", "0"])
        try:
            with StoreClient(cluster.store_addr, timeout=60) as store:
                now = time.time()
                for lo in range(0, runs, 1000):
                    ops: list[list[Any]] = []
                    for i in range(lo, min(runs, lo + 1000)):
                        run_id = f"history-{i:06d}"
                        meta = {"run_id": run_id, "name": "history", "state": "SUCCEEDED", "agent_run_id": None,
                                "created_at": now - runs + i, "finished_at": now - runs + i + 0.5}
                        ops += [["set", keys.run_key(run_id), pack(meta), None],
                                ["set", keys.spec_key(run_id, "j"), pack({"id": "j", "command": ["true"], "_order": 0}),
                                 None],
                                ["set", keys.job_key(run_id, "j"),
                                 pack({"state": "COMPLETED", "attempts": 1, "exit_code": 0, "worker": "worker1"}), None]]
                    store.batch(ops, journal=True)
                aof = store.stats()["aof_bytes"]
            kept = restart_to_first_dispatch(cluster)
            cluster.broker_args = []
            trimmed = restart_to_first_dispatch(cluster)
        finally:
            cluster.stop()
        self.record("restart-history", value=kept, unit="s", runs=runs, aof_mib=aof / 2**20,
                    default_retention_s=trimmed)

    def logs(self, c: TitanClient) -> None:
        n = 100 if self.quick else 400
        script = self.dir / "ticker.py"
        script.write_text(TICKER.format(n=n))
        run = c.submit_job(TitanJob("ticker", filename=str(script)))
        lat = []
        for rec in c.follow_logs(run.run_id, "ticker", timeout=120):
            lat.append(time.time() - float(rec[3]))
        live = lat[len(lat) // 10:]  # the first lines may come from the backlog
        self.record("logs", value=pct(live, 0.5) * 1000, unit="ms p50", p99_ms=pct(live, 0.99) * 1000, n=len(live))
