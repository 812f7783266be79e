"""The broker's registry of connected workers: identities, liveness, what each has cached."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class WorkerConn:
    """One worker's current connection."""

    identity: bytes  # the ZeroMQ routing id of the worker's current socket (fresh per connection)
    name: str  # stable worker name (survives reconnects)
    host: str
    pid: int
    caps: list[str]
    slots: int
    permanent: bool
    registered_at: float
    last_seen: float
    last_sent: float = 0.0
    blobs: set[str] = field(default_factory=set)  # project archives this worker already has

    def describe(self, running: list[list[str]]) -> dict[str, Any]:
        return {
            "id": self.name, "host": self.host, "pid": self.pid, "capabilities": self.caps,
            "slots": self.slots, "permanent": self.permanent, "kind": "permanent" if self.permanent else "ephemeral",
            "registered_at": self.registered_at,
            "last_seen": self.last_seen, "running": running,
        }


class WorkerRegistry:
    """The connected workers, by socket identity and by name, and who is due a heartbeat or silent too long."""

    def __init__(self, interval: float, liveness: int):
        self.interval = interval
        self.liveness = liveness
        self.by_identity: dict[bytes, WorkerConn] = {}
        self.by_name: dict[str, WorkerConn] = {}

    def add(self, conn: WorkerConn) -> WorkerConn | None:
        """Register a connection; returns the previous connection of the same worker, if any."""
        old = self.by_name.get(conn.name)
        if old is not None:
            self.by_identity.pop(old.identity, None)
        self.by_identity[conn.identity] = conn
        self.by_name[conn.name] = conn
        return old

    def remove(self, conn: WorkerConn) -> None:
        self.by_identity.pop(conn.identity, None)
        if self.by_name.get(conn.name) is conn:
            del self.by_name[conn.name]

    def seen(self, identity: bytes, now: float) -> WorkerConn | None:
        conn = self.by_identity.get(identity)
        if conn is not None:
            conn.last_seen = now
        return conn

    def alive(self, conn: WorkerConn, now: float) -> bool:
        """Whether ``conn`` was heard from within the liveness window."""
        return now - conn.last_seen <= self.interval * self.liveness

    def expired(self, now: float) -> list[WorkerConn]:
        """Workers silent for longer than interval x liveness."""
        return [c for c in self.by_identity.values() if not self.alive(c, now)]

    def due_heartbeat(self, now: float) -> list[WorkerConn]:
        return [c for c in self.by_identity.values() if now - c.last_sent >= self.interval]

    def __len__(self) -> int:
        return len(self.by_identity)
