"""The Gates page in headless Chromium (issue 10, acceptance 5): a waiting gate is listed in its colour, Approve
with a comment releases it, the history shows the decision; a stage with a waiting gate is marked on the
Agent runs page."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from selenium.common.exceptions import ElementNotInteractableException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from client.job import TitanJob
from tests.ui.conftest import UiProcess, screenshot
from tests.ui.test_pages import attrs, css, wait_for
from ui import widgets

pytestmark = pytest.mark.timeout(120)


def rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, 1)"


def type_into(driver: Any, selector: str, *keys: str) -> None:
    """Type into an input once React has mounted it (until then chromedriver calls it not interactable)."""

    def typed(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, selector).send_keys(*keys)
        except ElementNotInteractableException:
            return False
        return True

    wait_for(driver, typed, f"{selector} to take keys")


def test_gates_page_approves_a_waiting_gate_with_a_comment(browser: Any, ui: UiProcess, client: Any) -> None:
    agent = f"ui-gates-{uuid.uuid4().hex[:6]}"
    run = client.submit_dag("deploy", [
        TitanJob("build", command=["true"]),
        TitanJob("release", job_type="gate", hitl_message="Release to production?", max_wait_seconds=600,
                 parents=["build"]),
        TitanJob("ship", command=["true"], parents=["release"]),
    ], agent_run_id=agent)
    client.wait_for_gate(run.run_id, "release", timeout=30)
    card_sel = f".gate[data-run='{run.run_id}'][data-gate='release']"

    browser.get(ui.url(f"/runs/{run.run_id}"))  # the run page says a gate waits, and where to decide it
    banner = wait_for(browser, lambda d: next((b for b in css(d, "#gate-banner") if "release" in b.text), None),
                      "the run page's gate banner naming the gate")
    assert "1 approval gate waiting: release" in banner.text
    banner.find_element(By.LINK_TEXT, "decide on the Gates page").click()
    card = wait_for(browser, lambda d: (css(d, card_sel) or [None])[0], "the waiting gate's card")
    assert "/gates" in browser.current_url
    assert "Release to production?" in card.text
    badge = card.find_element(By.CSS_SELECTOR, ".badge")
    assert badge.get_attribute("data-state") == "AWAITING_APPROVAL"
    assert badge.value_of_css_property("background-color") == rgb(widgets.color("AWAITING_APPROVAL"))
    type_into(browser, "#gate-user", Keys.CONTROL, "a")
    type_into(browser, "#gate-user", "uma")
    type_into(browser, f"{card_sel} input", "checked the canary")
    screenshot(browser, "gates")
    browser.find_element(By.CSS_SELECTOR, f"{card_sel} .gate-approve").click()

    wait_for(browser, lambda d: attrs(d, "#gate-result [data-outcome]", "data-outcome") == ["approved"],
             "the decision's confirmation")
    row_sel = f"#gates-history tr[data-run='{run.run_id}'][data-gate='release']"
    row = wait_for(browser, lambda d: (css(d, row_sel) or [None])[0], "the decision in the history")
    assert row.get_attribute("data-decision") == "approved"
    assert row.find_element(By.CSS_SELECTOR, ".decided-by").text == "uma"
    assert row.find_element(By.CSS_SELECTOR, ".comment").text == "checked the canary"
    assert not css(browser, card_sel)
    st = run.wait(timeout=30)
    assert st["state"] == "SUCCEEDED"
    gate = st["jobs"]["release"]["gate"]
    assert (gate["decided_by"], gate["comment"]) == ("uma", "checked the canary")


def test_agent_runs_page_marks_a_stage_with_a_waiting_gate(browser: Any, ui: UiProcess, client: Any) -> None:
    agent = f"ui-agent-gate-{uuid.uuid4().hex[:6]}"
    run = client.submit_dag("ask", [TitanJob("q", job_type="gate", hitl_message="go?", max_wait_seconds=600)],
                            agent_run_id=agent)
    client.wait_for_gate(run.run_id, "q", timeout=30)
    browser.get(ui.url("/agents"))
    sel = f".group[data-agent='{agent}'] .stage[data-run='{run.run_id}'] .stage-gate"
    mark = wait_for(browser, lambda d: (css(d, sel) or [None])[0], "the waiting-gate mark on the stage")
    assert mark.get_attribute("data-gates-pending") == "1"
    client.reject(run.run_id, "q", reason="not needed", by="test")
    wait_for(browser, lambda d: not css(d, sel), "the mark to go once the gate is decided")
