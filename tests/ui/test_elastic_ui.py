"""Launch / Drain buttons on the Cluster page and the Schedules page, in headless Chromium (issue 11, 8)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from selenium.webdriver.common.by import By

from tests.helpers import process_gone, wait_until, write_pipeline
from tests.ui.conftest import screenshot
from tests.ui.test_pages import attrs, css, wait_for

pytestmark = pytest.mark.timeout(150)


def test_launch_adds_a_worker_to_the_cluster_page_and_drain_removes_it(browser: Any, make_cluster: Any,
                                                                        make_ui: Any) -> None:
    cluster = make_cluster(workers=1, slots=2)
    ui = make_ui(cluster.broker_addr)
    pids: list[int] = []
    try:
        browser.get(ui.url("/"))
        wait_for(browser, lambda d: attrs(d, ".worker", "data-worker") == ["worker1"], "the one worker card")
        assert attrs(browser, "#worker-worker1 .kind", "data-kind") == ["ephemeral"]
        browser.find_element(By.ID, "launch-caps").send_keys("GENERAL, GPU")
        slots = browser.find_element(By.ID, "launch-slots")
        slots.clear()
        slots.send_keys("1")
        browser.find_element(By.ID, "launch-worker").click()
        text = wait_for(browser, lambda d: (t := d.find_element(By.ID, "cluster-action").text).startswith("launched")
                        and t, "the launch to be acknowledged")
        name = text.split()[-1]
        with cluster.client() as c:
            pids += [lw["pid"] for lw in c.stats()["launched"]]
        wait_for(browser, lambda d: sorted(attrs(d, ".worker", "data-worker")) == sorted(["worker1", name]),
                 f"{name}'s card on the Cluster page")
        card = browser.find_element(By.ID, f"worker-{name}")
        assert [t.text for t in card.find_elements(By.CSS_SELECTOR, ".tags .tag")] == ["GENERAL", "GPU"]
        assert "0/1 slots" in card.text
        screenshot(browser, "cluster-launched")
        browser.find_element(By.CSS_SELECTOR, f'#worker-{name} button[id*="worker-drain"]').click()
        wait_for(browser, lambda d: attrs(d, ".worker", "data-worker") == ["worker1"], f"{name} leaving after a drain")
        wait_until(lambda: all(process_gone(p) for p in pids), timeout=30, what="the drained worker exiting")
    finally:
        for pid in pids:
            try:
                if "titan_zmq.worker" in " ".join(psutil.Process(pid).cmdline()):
                    os.kill(pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def test_schedules_page_shows_next_fire_and_runs_and_pauses(browser: Any, make_cluster: Any, make_ui: Any,
                                                            tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=2)
    ui = make_ui(cluster.broker_addr)
    path = write_pipeline(tmp_path, {"name": "nightly", "schedule": {"cron": "* * * * * */2"},
                                     "jobs": [{"id": "a", "command": ["true"]}]})
    with cluster.client() as c:
        c.add_schedule(path)
        wait_until(lambda: c.schedules()[0]["last_run"], timeout=30, what="a first fire")
    browser.get(ui.url("/schedules"))
    wait_for(browser, lambda d: css(d, 'tr[data-schedule="nightly"] a[href^="/runs/"]'), "the schedule with its runs")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-schedule="nightly"]')
    assert row.find_element(By.CSS_SELECTOR, ".next-fire").text != "—"
    screenshot(browser, "schedules")
    row.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(browser, lambda d: attrs(d, 'tr[data-schedule="nightly"] .tag', "data-enabled") == ["False"],
             "the schedule paused")
    with cluster.client() as c:
        assert c.schedules()[0]["enabled"] is False
