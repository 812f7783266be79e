"""Capability tags: what a worker can run and what a job asks for (GENERAL, GPU, HIGH_MEM, any tag).

Tags are case-insensitive. Every place that takes a tag (a worker's command line or constructor,
its registration at the broker, a job's ``requirement``) normalises it here, so ``gpu`` on one side
always matches ``GPU`` on the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from titan_zmq import defaults


def tag(value: str) -> str:
    """One tag in its normal form (upper case, no surrounding blanks)."""
    return value.strip().upper()


def normalise(tags: Iterable[str]) -> list[str]:
    """A worker's tags in normal form, each once, in the order given; GENERAL when none is given."""
    out = list(dict.fromkeys(t for t in (tag(v) for v in tags) if t))
    return out or [defaults.CAPABILITY]
