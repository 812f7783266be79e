"""Every example pipeline runs; agent runs group runs; artifacts; compaction while clients write."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from client import TitanJob
from client.cluster import LocalCluster
from tests.helpers import PIPELINES
from titan_zmq.store.client import StoreClient

EXAMPLES = sorted(PIPELINES.glob("*/*.yaml"))


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory):
    c = LocalCluster(tmp_path_factory.mktemp("examples"), workers=2, worker_caps=[["GENERAL"], ["GENERAL", "GPU"]],
                     broker_args=["--retry-backoff", "0.2"])
    c.start()
    yield c
    c.stop()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_pipeline_succeeds(gpu_cluster, path: Path):
    with gpu_cluster.client() as c:
        st = c.submit_yaml(path).wait(timeout=120)
    assert st["state"] == "SUCCEEDED", {j: v["state"] for j, v in st["jobs"].items()}
    if path.parent.name == "gpu":
        assert st["jobs"]["train"]["worker"] == "worker2"
    if path.parent.name == "retry":
        assert st["jobs"]["flaky"]["attempts"] == 3


def test_agent_run_id_groups_runs(gpu_cluster):
    with gpu_cluster.client() as c:
        a = c.submit_dag("step-1", [TitanJob("x", command=["true"])], agent_run_id="agent-42")
        b = c.submit_dag("step-2", [TitanJob("y", command=["true"])], agent_run_id="agent-42")
        c.submit_dag("other", [TitanJob("z", command=["true"])])
        grouped = c.runs(agent_run_id="agent-42")
        assert [r["run_id"] for r in grouped] == [b.run_id, a.run_id]  # newest first
        assert c.status(a.run_id)["agent_run_id"] == "agent-42"


def test_artifacts_and_uploads_round_trip(gpu_cluster, tmp_path: Path):
    script = ("from client import TitanClient\n"
              "with TitanClient() as c:\n"
              "    c.publish_artifact('report.txt', b'made by the job')\n"
              "    print(c.fetch_artifact('shared.bin').decode())\n")
    (tmp_path / "job.py").write_text(script)
    (tmp_path / "shared.bin").write_bytes(b"uploaded before the run")
    with gpu_cluster.client() as c:
        assert c.upload_file(tmp_path / "shared.bin") == "shared.bin"
        run = c.submit_job(TitanJob("artifact", filename="job.py"), base_dir=tmp_path)
        assert run.wait(timeout=60)["state"] == "SUCCEEDED"
        assert c.logs(run.run_id, "artifact") == ["uploaded before the run"]
        assert c.get_artifact("report.txt", run_id=run.run_id) == b"made by the job"
        c.fetch_artifact(f"runs/{run.run_id}/report.txt", dest=tmp_path / "copy.txt")
        assert (tmp_path / "copy.txt").read_bytes() == b"made by the job"


def test_compaction_while_clients_write_loses_nothing(gpu_cluster):
    writer_done = threading.Event()
    written: list[int] = []

    def write() -> None:
        with StoreClient(gpu_cluster.store_addr) as s:
            for i in range(3000):
                s.set(f"cw/{i}", f"value {i}")
                written.append(i)
        writer_done.set()

    t = threading.Thread(target=write)
    t.start()
    with StoreClient(gpu_cluster.store_addr, timeout=60) as s:
        compactions = 0
        while not writer_done.is_set():
            s.compact()
            compactions += 1
        t.join()
        assert compactions >= 1 and len(written) == 3000
        items = s.items("cw/")
    assert items == {f"cw/{i}": f"value {i}" for i in range(3000)}
