"""Cron schedules: the options of a ``schedule:`` block and the tick arithmetic (shared by client and broker).

A schedule is a cron expression (five fields, or six with seconds last, as croniter reads them:
``* * * * * */5`` is every 5 seconds) in a time zone, plus what to do with ticks missed while the
broker was down (``catchup``) and with a tick that comes while the previous run still runs
(``overlap``). The client checks the options before sending them, the broker again (the same code).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from titan_zmq.errors import InvalidRequest

CATCHUP = ("none", "last", "all")  # missed ticks: none run / only the newest runs / every one runs (capped)
OVERLAP = ("skip", "allow", "queue")  # previous run still running: skip the tick / run anyway / run after it
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a schedule's name: a store key and a run id's prefix
FIELDS = ("cron", "timezone", "catchup", "overlap", "enabled")


@dataclass(frozen=True)
class ScheduleOptions:
    """The ``schedule:`` block of a pipeline (and the flags of ``titan schedule add``)."""

    cron: str
    timezone: str = "UTC"
    catchup: str = "last"
    overlap: str = "skip"
    enabled: bool = True

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def parse_options(raw: Any, where: str = "schedule") -> ScheduleOptions:
    """Check a ``schedule:`` map; InvalidRequest names the field at fault."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected a map with cron (and timezone, catchup, overlap, enabled)")
    for key in raw:
        if key not in FIELDS:
            raise InvalidRequest(f"{where}.{key}: unknown field (known: {', '.join(FIELDS)})")
    cron, tz = raw.get("cron"), raw.get("timezone", "UTC")
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidRequest(f"{where}.cron: expected a cron expression such as '*/5 * * * *'")
    check_cron(cron, where)
    if not isinstance(tz, str):
        raise InvalidRequest(f"{where}.timezone: expected a time zone name such as 'Europe/Paris'")
    zone(tz, where)
    catchup, overlap, enabled = raw.get("catchup", "last"), raw.get("overlap", "skip"), raw.get("enabled", True)
    if catchup not in CATCHUP:
        raise InvalidRequest(f"{where}.catchup: expected one of {', '.join(CATCHUP)}, got {catchup!r:.40}")
    if overlap not in OVERLAP:
        raise InvalidRequest(f"{where}.overlap: expected one of {', '.join(OVERLAP)}, got {overlap!r:.40}")
    if not isinstance(enabled, bool):
        raise InvalidRequest(f"{where}.enabled: expected true or false")
    return ScheduleOptions(cron=" ".join(cron.split()), timezone=tz, catchup=catchup, overlap=overlap,
                           enabled=enabled)


def check_name(name: Any, where: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(f"{where}: expected a schedule name of letters, digits, '.', '_' or '-' (at most 100, "
                             f"starting with a letter or digit), got {name!r:.60}")
    return name


def check_cron(cron: str, where: str = "schedule") -> None:
    if len(cron) > 200 or len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise InvalidRequest(f"{where}.cron: {cron!r:.60} is not a cron expression (5 fields, or 6 with seconds last)")


def zone(tz: str, where: str = "schedule") -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"{where}.timezone: unknown time zone {tz!r:.60}") from None


def _iter(cron: str, tz: str, start: float) -> Any:
    return croniter(cron, datetime.fromtimestamp(start, zone(tz)))


def next_tick(cron: str, tz: str, after: float) -> float:
    """The first tick strictly after ``after`` (a Unix time)."""
    return float(_iter(cron, tz, after).get_next(float))


def ticks_between(cron: str, tz: str, after: float, upto: float, cap: int) -> tuple[list[float], bool]:
    """The ticks in ``(after, upto]``, oldest first: at most the newest ``cap``, and whether there were more.
    Walks back from ``upto``, so a long outage under a per-second cron costs ``cap`` steps, not one per tick."""
    it = _iter(cron, tz, math.floor(upto) + 1)  # croniter steps strictly before its start: ticks <= upto
    out: list[float] = []
    while True:
        tick = float(it.get_prev(float))
        if tick <= after:
            return out[::-1], False
        if len(out) == cap:
            return out[::-1], True
        out.append(tick)
