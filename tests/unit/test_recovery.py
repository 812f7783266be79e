"""Recovery without sockets: the journal read in pages, stitched by run id, bad records quarantined."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from titan_zmq import keys
from titan_zmq.broker import journal, recovery
from titan_zmq.jobspec import JobSpec
from titan_zmq.protocol import pack
from titan_zmq.states import JobState, RunState
from titan_zmq.store.client import Page, Value
from titan_zmq.store.engine import Engine

pytestmark = pytest.mark.timeout(60)


class FakeStore:
    """The store's paging contract over a real engine, with small pages and counted requests."""

    def __init__(self, page: int = 7):
        self.engine = Engine()
        self.page = page
        self.requests: list[str] = []

    def pages(self, prefix: str = "", *, values: bool = False, max_value: int | None = None) -> Iterator[Page]:
        after = None
        while True:
            self.requests.append(f"pages {prefix}")
            scan = self.engine.scan(prefix, after, values=values, limit=self.page, max_value=max_value)
            yield Page(sorted([*scan.items, *scan.oversize]), scan.items, scan.oversize)
            after = scan.next
            if after is None:
                return

    def get(self, key: str) -> Value | None:
        self.requests.append(f"get {key}")
        return self.engine.get(key)

    def batch(self, ops: list[list[Any]], journal: bool = False) -> list[Any]:
        assert journal, "journal keys are written only as the journal"
        self.requests.append("batch")
        return self.engine.batch(ops)

    def put_run(self, run_id: str, created: float, jobs: list[JobSpec], states: dict[str, dict[str, Any]],
                state: str = "SUCCEEDED") -> None:
        meta = {"run_id": run_id, "name": f"name-{run_id}", "agent_run_id": None, "state": state,
                "created_at": created, "finished_at": created + 1}
        ops = [["set", keys.run_key(run_id), pack(meta), None], *journal.spec_ops(run_id, jobs)]
        ops += [["set", keys.job_key(run_id, j), pack(st), None] for j, st in states.items()]
        self.engine.batch(ops)


def one_job_runs(store: FakeStore, n: int) -> None:
    for i in range(n):
        store.put_run(f"r{i:03d}", created=1000.0 - i, jobs=[JobSpec(id="j", command=["true"])],
                      states={"j": {"state": "COMPLETED", "attempts": 1, "exit_code": 0, "worker": "w1"}})


def test_runs_are_read_in_a_few_pages_per_prefix_not_per_run_and_stitched() -> None:
    store = FakeStore(page=7)
    one_job_runs(store, 60)
    dag = [JobSpec(id="b", command=["true"]), JobSpec(id="a", command=["true"], depends_on=["b"])]
    store.put_run("dag", created=5.0, jobs=dag, states={"b": {"state": "COMPLETED", "attempts": 1}},
                  state="RUNNING")
    runs = recovery.load_runs(store)
    assert [r.run_id for r in runs][:2] == ["dag", "r059"] and len(runs) == 61  # oldest first
    assert len(store.requests) == 3 * (61 // 7 + 1)  # pages only: no request per run, nothing moved
    dag_run = runs[0]
    assert list(dag_run.jobs) == ["b", "a"]  # submission order, not key order
    assert dag_run.jobs["b"].state is JobState.COMPLETED and dag_run.jobs["a"].state is JobState.PENDING
    assert dag_run.state is RunState.RUNNING and dag_run.name == "name-dag"
    done = runs[1].jobs["j"]
    assert (done.state, done.attempts, done.exit_code, done.worker) == (JobState.COMPLETED, 1, 0, "w1")


@pytest.mark.parametrize("key, value", [
    ("run/{r}", b"\xc1 not msgpack"),
    ("run/{r}", "a str, not bytes"),
    ("run/{r}", pack(["a", "list"])),
    ("run/{r}", pack({"state": "EXPLODED", "created_at": 1.0})),
    ("run/{r}", pack({"state": "RUNNING", "created_at": "yesterday"})),
    ("spec/{r}/j", pack({"id": "j", "command": "not a list of args", "retries": -5, "_order": 0})),
    ("spec/{r}/j", pack({"id": "other", "command": ["true"], "_order": 0})),
    ("spec/{r}/j", pack({"id": "j", "command": ["true"], "depends_on": ["ghost"], "_order": 0})),
    ("job/{r}/j", pack({"state": "WAT"})),
    ("job/{r}/j", pack({"state": "COMPLETED", "attempts": "three"})),
    ("job/{r}/ghost", pack({"state": "RUNNING", "attempts": 1})),
])
def test_a_bad_record_quarantines_its_run_and_the_others_load(key: str, value: Value) -> None:
    store = FakeStore()
    one_job_runs(store, 5)
    victim = "r002"
    store.engine.set(key.format(r=victim), value)
    before = {k: store.engine.get(k) for k in store.engine.keys() if victim in k}
    runs = recovery.load_runs(store)
    assert sorted(r.run_id for r in runs) == ["r000", "r001", "r003", "r004"]
    assert not [k for k in store.engine.keys() if k.startswith(keys.RESERVED) and victim in k]
    assert {k: store.engine.get(keys.quarantine_key(k)) for k in before} == before  # moved with its value
    assert [r.run_id for r in recovery.load_runs(store)] == [r.run_id for r in runs]  # and stays out


def test_records_without_their_run_and_oversize_records_are_quarantined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("titan_zmq.defaults.JOURNAL_RECORD_MAX", 10_000)
    store = FakeStore()
    one_job_runs(store, 3)
    store.engine.set(keys.job_key("lost", "j"), pack({"state": "COMPLETED"}))  # no run/ nor spec/ record
    huge = {"run_id": "huge", "name": "n" * 20_000, "state": "SUCCEEDED", "created_at": 1.0}
    store.put_run("huge", 1.0, [JobSpec(id="j", command=["true"])], {"j": {"state": "COMPLETED"}})
    store.engine.set(keys.run_key("huge"), pack(huge))
    runs = recovery.load_runs(store)
    assert sorted(r.run_id for r in runs) == ["r000", "r001", "r002"]
    assert sorted(k for k in store.engine.keys(keys.QUARANTINE)) == [
        "quarantine/job/huge/j", "quarantine/job/lost/j", "quarantine/run/huge", "quarantine/spec/huge/j"]
    assert store.engine.get("quarantine/run/huge") == pack(huge)  # fetched alone, never in a page


def test_a_store_that_refuses_the_move_leaves_the_records_and_the_start_goes_on() -> None:
    store = FakeStore()
    one_job_runs(store, 2)
    store.engine.set(keys.run_key("bad"), b"\xc1")

    def refuse(ops: list[list[Any]], journal: bool = False) -> list[Any]:
        from titan_zmq.errors import StoreUnavailable
        raise StoreUnavailable("down")

    store.batch = refuse  # type: ignore[method-assign]
    assert [r.run_id for r in recovery.load_runs(store)] == ["r001", "r000"]
    assert store.engine.get(keys.run_key("bad")) == b"\xc1"


def test_a_run_id_that_is_not_one_the_broker_makes_is_quarantined() -> None:
    store = FakeStore()
    for run_id in ("..", "a/../../etc"):
        store.put_run(run_id, 1.0, [JobSpec(id="j", command=["true"])], {"j": {"state": "COMPLETED"}})
    one_job_runs(store, 1)
    assert [r.run_id for r in recovery.load_runs(store)] == ["r000"]
    assert store.engine.keys(keys.RUN) == ["run/r000"]
    assert sorted(store.engine.keys(keys.QUARANTINE + keys.RUN)) == ["quarantine/run/..", "quarantine/run/a/../../etc"]
