"""What every `titan` command shares: --broker, clean errors, JSON output (used by cli.py and its command modules)."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from titan_zmq import defaults
from titan_zmq.errors import TitanError

broker_option = click.option(
    "--broker", envvar="TITAN_BROKER", show_envvar=True, default=defaults.BROKER_ADDR, show_default=True,
    help="Broker address.",
)


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a TitanError into ``error: <message>`` on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TitanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return run


def command(group: click.Group, name: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    """A subcommand that talks to a broker: --broker, and clean errors."""

    def wrap(fn: Callable[..., Any]) -> click.Command:
        return group.command(name)(broker_option(clean_errors(fn)))

    return wrap


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(type(value).__name__)


def when(ts: float | None) -> str:
    """A time for people: local date and time, or "-" when there is none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
