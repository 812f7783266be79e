"""AttemptKey: the name of one attempt of one job, ``(run_id, job_id, attempt)``.

The scheduler, the broker's worker link and the worker all speak of attempts by this key; on the
wire it travels as the three body fields ``run_id``, ``job_id``, ``attempt`` of one message, or as a
list ``[run_id, job_id, attempt]`` inside a list (a worker's running attempts, a batch of ACKs).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from titan_zmq.protocol import Message


class AttemptKey(NamedTuple):
    run_id: str
    job_id: str
    attempt: int  # 1 for the first dispatch, +1 for each re-dispatch

    @classmethod
    def of(cls, msg: Message) -> AttemptKey:
        """The attempt a message is about (its ``run_id``, ``job_id``, ``attempt`` fields); BadField otherwise."""
        return cls(msg.field("run_id", str), msg.field("job_id", str), msg.field("attempt", int))

    def fields(self) -> dict[str, Any]:
        """The key as body fields, to build a message about this attempt."""
        return {"run_id": self.run_id, "job_id": self.job_id, "attempt": self.attempt}


def attempts_from_wire(items: Any) -> list[AttemptKey]:
    """``[[run_id, job_id, attempt], ...]`` as keys; malformed entries are dropped."""
    if not isinstance(items, list):
        return []
    return [AttemptKey(str(r[0]), str(r[1]), r[2]) for r in items
            if isinstance(r, list) and len(r) == 3 and isinstance(r[2], int) and not isinstance(r[2], bool)]
