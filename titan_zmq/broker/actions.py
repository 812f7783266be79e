"""What the scheduler asks the broker to do: the actions its event methods return.

The broker journals first (``Journal``), then sends (``Dispatch``, ``Kill``), then announces
(``RunFinished``, gate ``Notice``s); see :mod:`titan_zmq.broker.commit`.
"""

from __future__ import annotations

from dataclasses import dataclass

from titan_zmq.attempt import AttemptKey
from titan_zmq.broker.gates import Notice
from titan_zmq.states import RunState


@dataclass(frozen=True, slots=True)
class Journal:
    """Persist the current record of a run (job_id None) or of one job."""

    run_id: str
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class _OnAttempt:
    worker: str
    key: AttemptKey

    @property
    def run_id(self) -> str:
        return self.key.run_id


@dataclass(frozen=True, slots=True)
class Dispatch(_OnAttempt):
    """Send this attempt to this worker."""


@dataclass(frozen=True, slots=True)
class Kill(_OnAttempt):
    """Kill this attempt's process group on this worker."""


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended (workers clean up its directories; notifications go out)."""

    run_id: str
    state: RunState


Action = Journal | Dispatch | Kill | RunFinished | Notice
