"""`titan autoscale`: a controller that grows and shrinks worker pools through the public ops (as KEDA or
Dask's adaptive do), in a process of its own, never inside the broker's loop.

Each turn it reads the broker's figures (``titan stats``: queued jobs and the oldest wait per capability,
free slots, launches under way) and the workers (``titan workers``), decides (:class:`Autoscaler`, no
I/O, the clock passed in) and acts with the same requests as the CLI (``titan worker launch``, ``titan
worker drain``). Per pool ``CAP:MIN:MAX``:

- up: below MIN; or jobs of CAP have waited longer than ``scale_up_after`` with no free slot (as many
  workers as the queue needs, at most MAX, none while an earlier launch of the pool is still coming up);
- down: an ephemeral worker idle for longer than ``idle_timeout`` is drained (never below MIN, never
  while jobs of CAP wait; ``--permanent`` workers never);
- a launch that fails (refused, the process exited, or no registration within ``LAUNCH_TIMEOUT``) backs
  the pool off 1 s, 2 s, 4 s ... up to ``LAUNCH_BACKOFF_MAX``: never a loop.

Every decision is logged with its reason and reported to the broker (``autoscale`` in ``titan stats``,
shown in the UI). The controller keeps nothing that matters: launches under way are the broker's
(``launching``), and a drain only ever touches an idle worker, so it can die and restart at any moment
without losing or repeating work.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client.api import TitanClient
from titan_zmq import defaults
from titan_zmq.capabilities import tag
from titan_zmq.errors import BrokerUnavailable, TitanError

log = logging.getLogger("titan.autoscale")


@dataclass(frozen=True)
class Pool:
    cap: str
    min: int
    max: int

    def view(self) -> dict[str, Any]:
        return {"capability": self.cap, "min": self.min, "max": self.max}


def parse_pool(text: str) -> Pool:
    """``CAP:MIN:MAX`` (``GENERAL:1:4``); ValueError says what is wrong."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].strip():
        raise ValueError(f"{text!r}: expected CAPABILITY:MIN:MAX, such as GENERAL:1:4")
    try:
        low, high = int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"{text!r}: MIN and MAX must be integers") from None
    if low < 0 or high < max(1, low):
        raise ValueError(f"{text!r}: expected 0 <= MIN <= MAX and MAX >= 1")
    return Pool(tag(parts[0]), low, high)


@dataclass(frozen=True)
class Action:
    kind: str  # launch | drain
    pool: str
    reason: str
    worker: str | None = None
    count: int = 1


@dataclass
class PoolState:
    failures: int = 0  # launches failed in a row
    retry_at: float = 0.0  # no launch before this (backoff)
    said_backoff: bool = False


@dataclass
class Autoscaler:
    """The decisions (no I/O): :meth:`decide` from the broker's figures; :meth:`failed` after a failed launch."""

    pools: list[Pool]
    scale_up_after: float = defaults.SCALE_UP_AFTER
    idle_timeout: float = defaults.IDLE_TIMEOUT
    slots: int = defaults.SLOTS  # slots of each worker it launches
    idle_since: dict[str, float] = field(default_factory=dict)
    state: dict[str, PoolState] = field(default_factory=dict)
    mine: set[str] = field(default_factory=set)  # workers this controller launched (to notice failed launches)
    judged: set[str] = field(default_factory=set)  # launches already counted as failed
    notes: list[dict[str, Any]] = field(default_factory=list)  # decisions not yet reported

    def decide(self, stats: dict[str, Any], workers: list[dict[str, Any]], now: float) -> list[Action]:
        self._track_idle(workers, now)
        self._judge_launches(stats, now)
        actions: list[Action] = []
        drained: set[str] = set()
        for pool in self.pools:
            members = [w for w in workers if pool.cap in w.get("capabilities", []) and not w.get("draining")]
            pending = [lw for lw in stats.get("launching", []) if pool.cap in lw.get("capabilities", [])]
            up = self._scale_up(pool, stats.get("queues", {}).get(pool.cap, {}), len(members), len(pending), now)
            if up is not None:
                actions.append(up)
                continue
            queued = int(stats.get("queues", {}).get(pool.cap, {}).get("queued", 0))
            actions += self._scale_down(pool, members, queued, drained, now)
        return actions

    def _scale_up(self, pool: Pool, q: dict[str, Any], size: int, pending: int, now: float) -> Action | None:
        queued, wait, free = int(q.get("queued", 0)), float(q.get("oldest_wait", 0.0)), int(q.get("free_slots", 0))
        want, reason = 0, ""
        if size + pending < pool.min:
            want, reason = pool.min - size - pending, f"below min: {size + pending} < {pool.min} workers"
        elif queued and wait > self.scale_up_after and free == 0 and not pending and size < pool.max:
            want = min(pool.max - size, max(1, math.ceil(queued / max(1, self.slots))))
            reason = (f"{queued} {pool.cap} job(s) waited {wait:.1f}s > {self.scale_up_after:g}s with no free slot "
                      f"({size}/{pool.max} workers)")
        if not want:
            return None
        st = self.state.setdefault(pool.cap, PoolState())
        if now < st.retry_at:
            if not st.said_backoff:
                st.said_backoff = True
                self.note(now, pool.cap, "backoff", f"not launching for {st.retry_at - now:.0f}s after "
                                                    f"{st.failures} failed launch(es) ({reason})")
            return None
        return Action("launch", pool.cap, reason, count=want)

    def _scale_down(self, pool: Pool, members: list[dict[str, Any]], queued: int, drained: set[str],
                    now: float) -> list[Action]:
        out: list[Action] = []
        size = len(members)
        for w in sorted(members, key=lambda w: self.idle_since.get(w["id"], now)):
            name = w["id"]
            idle = now - self.idle_since.get(name, now)
            if w.get("permanent") or queued or name in drained or idle <= self.idle_timeout or size <= pool.min:
                continue
            drained.add(name)
            size -= 1
            out.append(Action("drain", pool.cap, f"idle {idle:.1f}s > {self.idle_timeout:g}s "
                                                 f"({size + 1} -> {size} workers, min {pool.min})", worker=name))
        return out

    def _track_idle(self, workers: list[dict[str, Any]], now: float) -> None:
        seen = set()
        for w in workers:
            seen.add(w["id"])
            if w.get("running"):
                self.idle_since.pop(w["id"], None)
            else:
                self.idle_since.setdefault(w["id"], now)
        for gone in set(self.idle_since) - seen:
            del self.idle_since[gone]

    def _judge_launches(self, stats: dict[str, Any], now: float) -> None:
        """A launch of ours that exited or never registered in time is a failure (once)."""
        for lw in stats.get("launched", []):
            name = lw.get("name")
            if name not in self.mine or name in self.judged or lw.get("registered"):
                continue
            code = lw.get("exit_code")
            if code is not None or now - float(lw.get("started_at") or now) > defaults.LAUNCH_TIMEOUT:
                self.judged.add(name)
                why = f"exited with {code}" if code is not None else "not registered in time"
                pool = next((p.cap for p in self.pools if p.cap in lw.get("capabilities", [])), "?")
                self.failed(pool, now, f"worker {name} {why}")

    def launched(self, pool: str, name: str, now: float, reason: str) -> None:
        self.mine.add(name)
        st = self.state.setdefault(pool, PoolState())
        st.said_backoff = False
        self.note(now, pool, "launch", reason, name)

    def registered(self, pool: str) -> None:
        self.state.setdefault(pool, PoolState()).failures = 0

    def failed(self, pool: str, now: float, why: str) -> None:
        st = self.state.setdefault(pool, PoolState())
        st.failures += 1
        delay = min(defaults.LAUNCH_BACKOFF_MAX, 2.0 ** (st.failures - 1))
        st.retry_at = now + delay
        st.said_backoff = False
        self.note(now, pool, "failed", f"{why}; next launch in {delay:g}s at the earliest")

    def note(self, now: float, pool: str, action: str, reason: str, worker: str | None = None) -> None:
        entry = {"at": now, "pool": pool, "action": action, "worker": worker, "reason": reason}
        (log.warning if action in ("failed", "backoff") else log.info)(
            "%s %s%s: %s", pool, action, f" {worker}" if worker else "", reason)
        self.notes.append(entry)

    def take_notes(self) -> list[dict[str, Any]]:
        out, self.notes = self.notes, []
        return out


class Controller:
    """The loop: read, decide, act, report. ``stop`` (an event or flag) ends it."""

    def __init__(self, client: TitanClient, scaler: Autoscaler, interval: float = defaults.AUTOSCALE_INTERVAL,
                 clock: Callable[[], float] = time.time):
        self.client, self.scaler, self.interval, self.clock = client, scaler, interval, clock
        self.name = f"{socket.gethostname()}-{secrets.token_hex(2)}"
        self.running = True

    def step(self) -> None:
        stats, workers = self.client.stats(), self.client.workers()
        now = self.clock()
        for lw in stats.get("launched", []):
            if lw.get("registered") and lw.get("name") in self.scaler.mine:
                for cap in lw.get("capabilities", []):
                    self.scaler.registered(cap)
        for action in self.scaler.decide(stats, workers, now):
            self.act(action, now)
        self.client.report_autoscale(self.name, [p.view() for p in self.scaler.pools], self.scaler.take_notes())

    def act(self, action: Action, now: float) -> None:
        try:
            if action.kind == "drain":
                assert action.worker is not None
                self.client.drain_worker(action.worker)
                self.scaler.note(now, action.pool, "drain", action.reason, action.worker)
                return
            for _ in range(action.count):
                out = self.client.launch_worker([action.pool], slots=self.scaler.slots)
                self.scaler.launched(action.pool, str(out["worker"]), now, action.reason)
        except BrokerUnavailable:
            raise
        except TitanError as exc:
            if action.kind == "launch":
                self.scaler.failed(action.pool, now, f"launch refused: {exc}")
            else:
                self.scaler.note(now, action.pool, "failed", f"drain of {action.worker} refused: {exc}")

    def run(self) -> None:
        log.info("autoscaling %s", ", ".join(f"{p.cap}:{p.min}:{p.max}" for p in self.scaler.pools))
        while self.running:
            try:
                self.step()
            except BrokerUnavailable as exc:
                log.warning("%s", exc)
            time.sleep(self.interval)
