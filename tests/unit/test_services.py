"""The broker's service rules (broker/services.py) through the scheduler: events in, actions out, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_scheduler import Harness, dispatched, of
from titan_zmq.attempt import AttemptKey as K
from titan_zmq.broker import services
from titan_zmq.broker.actions import Kill
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.jobspec import JobSpec
from titan_zmq.states import JobState, RunState

J = JobState
pytestmark = pytest.mark.timeout(30)


def svc(id: str, *parents: str, **kw: Any) -> JobSpec:
    return JobSpec(id=id, command=["serve"], type="service", depends_on=list(parents), **kw)


def job(id: str, *parents: str) -> JobSpec:
    return JobSpec(id=id, command=["true"], depends_on=list(parents))


class SvcHarness(Harness):
    def key(self, run_id: str, job_id: str) -> K:
        rec = self.s.job(run_id, job_id)
        return K(run_id, job_id, rec.attempts)

    def ready(self, run_id: str, job_id: str, port: int = 8000, now: float = 0.0) -> list:
        rec = self.s.job(run_id, job_id)
        return self._call("service_ready", rec.worker, self.key(run_id, job_id), "h1", port, 4242, now)

    def exit(self, run_id: str, job_id: str, code: int, now: float, permanent: bool = False) -> list:
        rec = self.s.job(run_id, job_id)
        return self._call("job_finished", rec.worker, self.key(run_id, job_id), code, now, None, permanent)

    def stop(self, run_id: str, job_id: str, now: float = 0.0) -> list:
        return self._call("stop_service", run_id, job_id, now)

    def restart(self, run_id: str, job_id: str, now: float = 0.0) -> list:
        return self._call("restart_service", run_id, job_id, now)


@pytest.fixture
def h() -> SvcHarness:
    h = SvcHarness()
    h.worker("w1")
    return h


def test_a_dispatched_service_is_starting_and_ready_once_its_check_passes(h: SvcHarness) -> None:
    acts = h.submit("r", [svc("web")])
    assert dispatched(acts) == [("w1", "r", "web", 1)] and h.st("r", "web") is J.STARTING
    h.ready("r", "web", port=8123, now=2.0)
    rec = h.s.job("r", "web")
    assert rec.state is J.READY and rec.service == {"host": "h1", "port": 8123, "pid": 4242, "ready_at": 2.0,
                                                     "address": "h1:8123"}
    assert h.s.job("r", "web").state_dict()["service"]["port"] == 8123  # journaled with the record
    h.ready("r", "web", port=8123, now=3.0)  # a repeat after a broker restart changes nothing
    assert rec.service["ready_at"] == 2.0


def test_children_start_when_the_service_is_ready_not_when_it_starts(h: SvcHarness) -> None:
    h.submit("r", [svc("server"), job("client", "server")])
    assert h.st("r", "client") is J.PENDING and h.st("r", "server") is J.STARTING
    acts = h.ready("r", "server", port=9000)
    assert dispatched(acts) == [("w1", "r", "client", 1)]
    env = services.child_env(h.s.run("r"), h.s.job("r", "client"))
    assert env["PORT"] == "9000" and env["TITAN_SERVICE_SERVER_PORT"] == "9000"
    assert env["TITAN_SERVICE_SERVER_ADDR"] == "h1:9000" and env["TITAN_SERVICE_HOST"] == "h1"


def test_restarts_back_off_1_2_4_and_a_crash_loop_ends_failed_with_the_exit_code(h: SvcHarness) -> None:
    h.submit("r", [svc("web", max_restarts=3), job("after", "web")])
    now, dues = 0.0, []
    for _ in range(3):
        now += 0.5
        h.exit("r", "web", 1, now)
        rec = h.s.job("r", "web")
        assert rec.state is J.RESTARTING and rec.due_at is not None
        dues.append(rec.due_at - now)
        assert h.tick(rec.due_at - 0.01) == [] or h.st("r", "web") is J.RESTARTING
        now = rec.due_at
        assert dispatched(h.tick(now)) == [("w1", "r", "web", rec.attempts)]  # back on its worker
        assert h.st("r", "web") is J.STARTING
    assert dues == [1.0, 2.0, 4.0]
    h.exit("r", "web", 3, now + 0.5)
    rec = h.s.job("r", "web")
    assert rec.state is J.FAILED and rec.terminal and rec.restarts == 3 and rec.attempts == 4
    assert "crash loop: 4 exits" in (rec.error or "") and "last exit code 3" in (rec.error or "")
    assert h.st("r", "after") is J.SKIPPED and h.run_state("r") is RunState.FAILED
    assert [a["outcome"] for a in rec.attempts_log()] == ["EXITED"] * 4


def test_exits_outside_the_window_do_not_count(h: SvcHarness) -> None:
    h.submit("r", [svc("web", max_restarts=1, restart_window=10)])
    h.exit("r", "web", 1, 1.0)
    h.tick(2.0)
    h.exit("r", "web", 1, 30.0)  # the first exit is 29 s old: outside the window, the backoff starts again
    rec = h.s.job("r", "web")
    assert rec.state is J.RESTARTING and rec.due_at == 31.0


@pytest.mark.parametrize(("policy", "code", "state"), [
    ("on-failure", 0, J.COMPLETED), ("on-failure", 2, J.RESTARTING), ("always", 0, J.RESTARTING),
    ("never", 0, J.COMPLETED), ("never", 1, J.FAILED),
])
def test_restart_policies(h: SvcHarness, policy: str, code: int, state: JobState) -> None:
    h.submit("r", [svc("web", restart=policy)])
    h.exit("r", "web", code, 1.0)
    assert h.st("r", "web") is state


def test_a_refused_start_fails_at_once_whatever_the_policy(h: SvcHarness) -> None:
    h.submit("r", [svc("web", restart="always")])
    h.exit("r", "web", 127, 1.0, permanent=True)
    assert h.st("r", "web") is J.FAILED and h.s.job("r", "web").terminal


def test_stop_is_final_a_late_exit_is_stale_and_waiting_children_are_cancelled(h: SvcHarness) -> None:
    h.submit("r", [svc("web"), job("client", "web")])
    key = h.key("r", "web")
    acts = h.stop("r", "web")
    assert of(acts, Kill) == [Kill("w1", key)] and h.st("r", "web") is J.STOPPED
    assert h.st("r", "client") is J.CANCELLED
    h.report("w1", "r", "web", 1, 143, now=1.0)  # its exit after SIGTERM: only frees the slot
    assert h.st("r", "web") is J.STOPPED and not h.s.workers["w1"].running
    assert h.tick(100.0) == []  # never restarted
    with pytest.raises(InvalidRequest, match="already STOPPED"):
        h.stop("r", "web")


def test_stopping_a_ready_service_ends_its_run_as_succeeded(h: SvcHarness) -> None:
    h.submit("r", [svc("web"), job("client", "web")])
    h.ready("r", "web")
    h.finish("r", "client")
    assert h.run_state("r") is RunState.RUNNING  # the service still runs
    h.stop("r", "web")
    assert h.run_state("r") is RunState.SUCCEEDED


def test_restart_kills_and_starts_again_at_once_without_counting(h: SvcHarness) -> None:
    h.submit("r", [svc("web")])
    h.ready("r", "web")
    acts = h.restart("r", "web", now=5.0)
    assert of(acts, Kill) == [Kill("w1", K("r", "web", 1))]
    acts = h.exit("r", "web", 143, 6.0)
    assert dispatched(acts) == [("w1", "r", "web", 2)]
    rec = h.s.job("r", "web")
    assert rec.restarts == 0 and rec.attempts_log()[0]["outcome"] == "RESTARTED"
    h.submit("j", [job("x")])
    with pytest.raises(InvalidRequest, match="is a job, not a service"):
        h.restart("j", "x")


def test_a_lost_worker_places_the_service_on_another_capable_worker(h: SvcHarness) -> None:
    h.worker("w2")
    h.submit("r", [svc("web")])
    first = h.s.job("r", "web").worker
    h.ready("r", "web")
    acts = h.lost(first, now=1.0)
    other = "w2" if first == "w1" else "w1"
    assert dispatched(acts) == [(other, "r", "web", 2)]
    rec = h.s.job("r", "web")
    assert rec.state is J.STARTING and rec.service is None and rec.restarts == 0


def test_a_reregistering_worker_keeps_its_ready_service(h: SvcHarness) -> None:
    h.submit("r", [svc("web")])
    h.ready("r", "web")
    acts = h.worker("w1", running=(("r", "web", 1),))
    assert dispatched(acts) == [] and not of(acts, Kill) and h.st("r", "web") is J.READY


def test_service_ids_resolve_exactly_or_by_an_unambiguous_job_id(h: SvcHarness) -> None:
    h.submit("r1", [svc("web")])
    h.submit("r2", [svc("web"), svc("db")])
    known = h.s.services()
    assert services.resolve("r1/web", known).run_id == "r1"
    assert services.resolve("db", known).run_id == "r2"
    with pytest.raises(InvalidRequest, match="several live services"):
        services.resolve("web", known)
    with pytest.raises(NotFound):
        services.resolve("nope", known)
    h.stop("r1", "web")
    assert services.resolve("web", h.s.services()).run_id == "r2"


def test_backoff_doubles_to_its_cap() -> None:
    assert [services.backoff(n) for n in (1, 2, 3, 4, 7, 8, 20)] == [1, 2, 4, 8, 60, 60, 60]


def test_a_broker_restart_keeps_backoffs_and_never_revives_a_failed_service(h: SvcHarness) -> None:
    h.submit("r", [svc("dead", restart="never"), svc("later")])
    h.exit("r", "dead", 1, 1.0)
    h.exit("r", "later", 1, 1.0)
    assert h.st("r", "later") is J.RESTARTING and h.s.job("r", "later").due_at == 2.0
    s2 = Scheduler()
    s2.register_worker("w1", ["GENERAL"], 4, 1.5)
    assert [a for a in s2.restore(list(h.s.runs.values()), 1.5) if not isinstance(a, type(None))
            and a.__class__.__name__ == "Dispatch"] == []
    acts = s2.tick(2.0)
    assert dispatched(acts) == [("w1", "r", "later", 2)]
    assert s2.job("r", "dead").state is J.FAILED and s2.run("r").open_jobs == 1
    assert [r.spec.id for r in s2.services()] == ["dead", "later"]
