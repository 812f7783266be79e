"""Acceptance item 8: the broker dies while a page is open; the UI says so, and recovers by itself."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from client.job import TitanJob
from tests.ui.conftest import new_browser, quit_browser, screenshot
from tests.ui.test_pages import css, wait_for

pytestmark = pytest.mark.timeout(120)


def test_banner_while_the_broker_is_down_and_recovery_without_reload(make_cluster: Any, make_ui: Any) -> None:
    cluster = make_cluster(workers=1)
    ui = make_ui(cluster.broker_addr)
    browser = new_browser()
    try:
        browser.get(ui.url("/"))
        wait_for(browser, lambda d: len(css(d, ".worker")) == 1, "the worker card")
        assert css(browser, "#banner.hidden")
        browser.execute_script("window.__noReload = 42")

        cluster.procs["broker"].kill()
        wait_for(browser, lambda d: "Broker unreachable since" in d.find_element(By.ID, "banner").text,
                 "the broker-down banner", timeout=15)
        assert "broker down" in browser.find_element(By.ID, "broker-state").text
        assert len(css(browser, ".worker")) == 1  # the last known state stays on the page
        screenshot(browser, "broker-down")

        cluster.start_broker()
        cluster.wait_ready(1)
        wait_for(browser, lambda d: css(d, "#banner.hidden"), "the banner to go", timeout=20)
        with cluster.client() as c:  # live again: a new job shows up in the worker's card
            run = c.submit_job(TitanJob("after", command=["sleep", "20"]))
            wait_for(browser, lambda d: css(d, f'li[data-run="{run.run_id}"]'), "a job submitted after the restart")
            run.cancel()
        assert browser.execute_script("return window.__noReload") == 42  # never reloaded
    finally:
        quit_browser(browser)
