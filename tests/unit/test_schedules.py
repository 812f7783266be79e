"""Schedules without sockets or sleeps: tick arithmetic, catchup, overlap, time zones, pause, the journal form."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from titan_zmq import cron
from titan_zmq.broker.schedules import Decision, Schedule, decide
from titan_zmq.broker.timetable import tick_run_id
from titan_zmq.errors import InvalidRequest

T0 = 1_700_000_000.0  # a multiple of 10 s (2023-11-14 22:13:20 UTC)
EVERY_10S = "* * * * * */10"


def make(cron_expr: str = EVERY_10S, catchup: str = "last", overlap: str = "skip", tz: str = "UTC",
         created: float = T0 - 0.5, last_tick: float | None = None) -> Schedule:
    opts = cron.parse_options({"cron": cron_expr, "catchup": catchup, "overlap": overlap, "timezone": tz})
    return Schedule(name="s", options=opts, pipeline={"name": "p", "jobs": [{"id": "a", "command": ["true"]}]},
                    created_at=created, last_tick=last_tick)


def idle(_run: str) -> bool:
    return False


def busy(_run: str) -> bool:
    return True


def test_a_tick_fires_on_time_and_once() -> None:
    s = make()
    assert decide(s, T0 - 0.1, started_at=T0 - 100, running=idle) == Decision(last_tick=None)
    d = decide(s, T0 + 0.01, started_at=T0 - 100, running=idle)
    assert d.fire == [T0] and d.last_tick == T0 and not d.skip
    s2 = s.after(d, {T0: "r1"}, T0 + 0.01)
    assert s2.last_tick == T0 and s2.last_run == "r1" and s2.history[-1][:2] == [T0, "r1"]
    assert decide(s2, T0 + 5, started_at=T0 - 100, running=idle).fire == []  # never the same tick twice
    assert s2.due_at() == T0 + 10
    assert s.last_tick is None  # the decision made a new record; the old one is unchanged until installed


@pytest.mark.parametrize("catchup, fired", [("none", []), ("last", [T0 + 20]), ("all", [T0 + 10, T0 + 20])])
def test_ticks_missed_while_the_broker_was_down(catchup: str, fired: list[float]) -> None:
    s = make(catchup=catchup, overlap="allow", last_tick=T0)
    # down from T0 + 5 to T0 + 25: ticks T0+10 and T0+20 were missed
    d = decide(s, T0 + 25, started_at=T0 + 25, running=idle)
    assert d.fire == fired
    assert d.last_tick == T0 + 20
    assert bool(d.skip) == (len(fired) < 2)
    after = s.after(d, {t: f"r{t}" for t in d.fire}, T0 + 25)
    assert decide(after, T0 + 26, started_at=T0 + 25, running=idle).fire == []


def test_a_tick_after_the_restart_fires_whatever_catchup_says_and_older_ones_are_missed() -> None:
    s = make(catchup="none", last_tick=T0)
    d = decide(s, T0 + 31, started_at=T0 + 25, running=idle)  # T0+30 came after the start; 10 and 20 before
    assert d.fire == [T0 + 30]
    assert d.skip and "2 missed" in d.skip[0][1]


def test_catchup_all_is_capped_and_says_so() -> None:
    s = make(cron_expr="* * * * * *", catchup="all", overlap="allow", last_tick=T0)
    d = decide(s, T0 + 1000, started_at=T0 + 1000, running=idle, cap=5)
    assert d.fire == [T0 + 996, T0 + 997, T0 + 998, T0 + 999, T0 + 1000]
    assert d.skip and "more than" in d.skip[0][1]


def test_overlap_skip_allow_queue() -> None:
    skip_s = make(overlap="skip", last_tick=T0)
    skip_s.last_run = "r0"
    skip = decide(skip_s, T0 + 10, T0 - 100, busy)
    assert skip.fire == [] and skip.skip[0][0] == T0 + 10 and "still running" in skip.skip[0][1]
    allow = decide(make(overlap="allow", last_tick=T0), T0 + 10, T0 - 100, busy)
    assert allow.fire == [T0 + 10]
    s = make(overlap="queue", last_tick=T0)
    s.last_run = "r0"
    queued = decide(s, T0 + 10, T0 - 100, busy)
    assert queued.fire == [] and queued.queued == [T0 + 10]
    s2 = s.after(queued, {}, T0 + 10)
    assert decide(s2, T0 + 12, T0 - 100, busy).fire == []  # still running: still waiting
    released = decide(s2, T0 + 13, T0 - 100, idle)  # the previous run ended: the queued tick fires
    assert released.fire == [T0 + 10] and released.queued == []


def test_overlap_skip_with_catchup_all_runs_the_first_missed_tick_only() -> None:
    d = decide(make(catchup="all", overlap="skip", last_tick=T0), T0 + 25, T0 + 25, idle)
    assert d.fire == [T0 + 10] and [t for t, _ in d.skip] == [T0 + 20]


def test_time_zones_and_daylight_saving() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2024, 3, 30, 12, 0, tzinfo=paris).timestamp()
    first = cron.next_tick("30 2 * * *", "Europe/Paris", start)
    assert datetime.fromtimestamp(first, paris).strftime("%d %H:%M") in ("31 03:30", "31 03:00", "01 02:30")
    nine = cron.next_tick("0 9 * * *", "Europe/Paris", start)
    assert datetime.fromtimestamp(nine, paris).strftime("%d %H:%M") == "31 09:00"
    utc_nine = cron.next_tick("0 9 * * *", "UTC", start)
    assert utc_nine - nine == 2 * 3600  # 9:00 in Paris (CEST from that morning) is 7:00 UTC
    s = make(cron_expr="0 9 * * *", tz="Europe/Paris", created=start)
    assert decide(s, nine + 1, started_at=start, running=idle).fire == [nine]


def test_pause_and_resume_never_run_the_ticks_in_between() -> None:
    s = make(last_tick=T0).paused(False, T0 + 1)
    assert decide(s, T0 + 35, T0 - 100, idle) == Decision(queued=[])
    assert s.next_fire(T0 + 35) is None
    resumed = s.paused(True, T0 + 35)
    assert decide(resumed, T0 + 39, T0 - 100, idle).fire == []
    assert decide(resumed, T0 + 40, T0 - 100, idle).fire == [T0 + 40]


def test_the_journal_form_round_trips_and_bad_records_are_refused() -> None:
    s = make(overlap="queue", last_tick=T0)
    s.queued, s.history, s.last_run = [T0 + 10], [[T0, "r", T0, "fired"]], "r"
    back = Schedule.from_record(s.record())
    assert back.record() == s.record()
    for bad in ({**s.record(), "last_tick": "x"}, {**s.record(), "name": "a/b"},
                {**s.record(), "options": {"cron": "nope"}}, {**s.record(), "history": [[1]]}, []):
        with pytest.raises(InvalidRequest):
            Schedule.from_record(bad)


def test_options_are_checked() -> None:
    assert cron.parse_options({"cron": "*/5  * * * *"}).cron == "*/5 * * * *"
    for bad, phrase in (({"cron": "61 * * * *"}, "not a cron"), ({"cron": "* * * * *", "timezone": "Mars/Base"},
                        "unknown time zone"), ({"cron": "* * * * *", "catchup": "some"}, "catchup"),
                        ({"cron": "* * * * *", "overlap": "x"}, "overlap"), ({"cron": "* * * * *", "when": 1},
                        "unknown field"), ({}, "cron"), ({"cron": "* * * * *", "enabled": "yes"}, "enabled")):
        with pytest.raises(InvalidRequest, match=phrase):
            cron.parse_options(bad)


def test_tick_run_ids_are_stable_and_valid() -> None:
    a, b = tick_run_id("nightly etl", T0), tick_run_id("nightly etl", T0)
    assert a == b and a != tick_run_id("nightly etl", T0 + 1) and a != tick_run_id("other", T0)
    assert all(c.isalnum() or c in "-_" for c in a)
