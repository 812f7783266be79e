"""Services in the UI (issue 11, acceptance 8, services half): under their worker on the Cluster page with
their state, and a Services page whose Stop button stops one. Headless Chromium against a real cluster."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from client.job import TitanJob
from tests.helpers import listening, process_gone, wait_until
from tests.ui.conftest import UiProcess, screenshot
from tests.ui.test_pages import css, wait_for

pytestmark = pytest.mark.timeout(120)

HTTP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"""


def test_a_service_shows_under_its_worker_and_the_stop_button_stops_it(browser: Any, ui: UiProcess,
                                                                      client: Any) -> None:
    run = client.submit_job(TitanJob("web", filename="web.py", script=HTTP, job_type="service", stop_grace=2))
    sid = f"{run.run_id}/web"

    def ready() -> dict[str, Any] | None:
        s = next((s for s in client.services() if s["id"] == sid), None)
        return s if s and s["state"] == "READY" else None

    svc = wait_until(ready, timeout=30, what="the service to be READY")
    browser.get(ui.url("/"))
    card = f'.worker[data-worker="{svc["worker"]}"] .svc[data-service="{sid}"]'
    wait_for(browser, lambda d: any(e.get_attribute("data-state") == "READY" for e in css(d, card)),
             f"{sid} READY under {svc['worker']}")
    item = css(browser, card)[0]
    assert svc["address"] in item.text and "READY" in item.text
    link = item.find_element(By.CSS_SELECTOR, "a.svc-name")
    assert link.get_attribute("href").endswith(f"/services#svc-{sid}")
    screenshot(browser, "cluster-services")

    browser.get(ui.url("/services"))
    row = f'.svc-row[data-service="{sid}"]'
    wait_for(browser, lambda d: any(e.get_attribute("data-state") == "READY" for e in css(d, row)), "the service row")
    assert svc["address"] in css(browser, row)[0].text and listening(svc["port"])
    screenshot(browser, "services")
    css(browser, f"{row} .svc-stop")[0].click()
    wait_for(browser, lambda d: any(e.get_attribute("data-state") == "STOPPED" for e in css(d, row)),
             "the row to show STOPPED")
    wait_for(browser, lambda d: "stopping" in d.find_element(By.ID, "services-msg").text, "the stop message")
    assert not css(browser, f"{row} .svc-stop")  # no Stop button on a stopped service
    wait_until(lambda: not listening(svc["port"]), timeout=5, what="the port to close")
    wait_until(lambda: process_gone(svc["pid"]), timeout=5, what="the process to end")
    assert next(s for s in client.services() if s["id"] == sid)["state"] == "STOPPED"
    browser.get(ui.url("/"))
    wait_for(browser, lambda d: css(d, ".worker") and not css(d, card), "the service gone from its worker's card")
