"""The services list for the UI's pages: fetched through the UI's one broker link, at most once a second.

Services are few and change rarely, so rather than feeding them into :class:`ui.model.Model` through
events, pages read this short-lived cache: each live region's tick asks for :func:`key`, which refreshes
the list when it is older than ``MAX_AGE`` (one LIST_SERVICES per second however many browsers look).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ui import data

MAX_AGE = 1.0  # seconds a fetched list is served before it is asked for again

_lock = threading.Lock()
_cache: dict[str, Any] = {"at": 0.0, "services": [], "error": None}


def services() -> list[dict[str, Any]]:
    """Every known service (``TitanClient.services()``); an empty list while the broker is away."""
    with _lock:
        if time.monotonic() - _cache["at"] >= MAX_AGE:
            _cache["at"] = time.monotonic()
            try:
                _cache["services"] = data.current().call(lambda c: c.services(), timeout=5.0)
                _cache["error"] = None
            except Exception as exc:  # the broker is down or an older one: the page says so, never breaks
                _cache["error"] = str(exc)
        return list(_cache["services"])


def error() -> str | None:
    return _cache["error"]  # type: ignore[no-any-return]


def key() -> list[Any]:
    """What the services look like (changes when a state, worker, port or restart count does)."""
    return [[s["id"], s["state"], s.get("worker"), s.get("port"), s.get("restarts")] for s in services()]


def by_worker() -> dict[str, list[dict[str, Any]]]:
    """Live services (not finished) under the worker running them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in services():
        if s.get("worker") and s["state"] in ("STARTING", "READY"):
            out.setdefault(str(s["worker"]), []).append(s)
    return out


def invalidate() -> None:
    """After a stop or restart: the next look fetches the list again."""
    with _lock:
        _cache["at"] = 0.0
