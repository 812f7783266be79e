"""The lifeline of a component started by `titan up`: the pipe's end of file stops it (the whole chain is
tested with kill -9 in tests/acceptance/test_cli.py); a wrong value is ignored, never a crash."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from titan_zmq import cli_common
from titan_zmq.cli_common import LIFELINE_ENV, watch_lifeline


@pytest.mark.parametrize("value", ["nope", "999999", "0"])
def test_a_bad_lifeline_value_is_ignored_and_taken_out_of_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                          value: str) -> None:
    monkeypatch.setenv(LIFELINE_ENV, value)  # 0 is stdin: not a pipe under pytest
    assert watch_lifeline() is None
    assert LIFELINE_ENV not in os.environ  # the jobs a worker starts must not inherit it


def test_no_lifeline_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIFELINE_ENV, raising=False)
    assert watch_lifeline() is None


@pytest.mark.timeout(30)
def test_end_of_file_on_the_lifeline_sends_sigterm_to_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    got = threading.Event()
    signals: list[int] = []
    monkeypatch.setattr(cli_common, "LIFELINE_GRACE", 1e9)  # never exits the test run: the thread is a daemon
    monkeypatch.setattr(cli_common.os, "kill", lambda pid, sig: (signals.append(sig), got.set()))
    read, write = os.pipe()
    monkeypatch.setenv(LIFELINE_ENV, str(read))
    thread = watch_lifeline()
    assert thread is not None and thread.daemon
    assert not got.wait(0.2)  # the parent is alive
    os.close(write)  # the parent dies
    assert got.wait(10) and signals == [signal.SIGTERM]
