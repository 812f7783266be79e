"""The UI's pages in headless Chromium against a real cluster (issue 9, acceptance items 1, 6, 7 and the Runs
page's filters); each test waits on DOM conditions, never on fixed sleeps."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from client.job import TitanJob
from tests.ui.conftest import TOKEN, UiProcess, http_status, screenshot

pytestmark = pytest.mark.timeout(120)
WAIT = 20  # seconds a DOM condition gets


def wait_for(driver: Any, condition: Any, what: str, timeout: float = WAIT) -> Any:
    """WebDriverWait with a message that says what was awaited and what the page showed."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except Exception as exc:
        body = driver.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"timed out waiting for {what}; the page showed:\n{body}") from exc


def css(driver: Any, selector: str) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def attrs(driver: Any, selector: str, name: str) -> list[str]:
    return [str(e.get_attribute(name)) for e in css(driver, selector)]


def texts(driver: Any, selector: str) -> list[str]:
    """The text of every element matching ``selector``, read in one script: a graph that re-renders
    between finding its elements and reading them cannot make the read stale."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent.trim())", selector)
    return [str(t) for t in found]


def test_cluster_page_lists_workers_and_shows_a_new_job_live(browser: Any, ui: UiProcess, client: Any) -> None:
    workers = {w["id"]: w for w in client.workers()}
    assert len(workers) == 2
    browser.get(ui.url("/"))
    wait_for(browser, lambda d: sorted(attrs(d, ".worker", "data-worker")) == sorted(workers), "both worker cards")

    def cards_show(d: Any, used: dict[str, int]) -> bool:
        """Every worker's card shows its tags, pid and slots (read afresh: the cards re-render)."""
        for name, w in workers.items():
            card = d.find_element(By.ID, f"worker-{name}")
            tags = [t.text for t in card.find_elements(By.CSS_SELECTOR, ".tag")]
            text = card.text
            if tags != list(w["capabilities"]) or str(w["pid"]) not in text:
                return False
            if f"{used.get(name, 0)}/{w['slots']} slots" not in text:
                return False
        return True

    wait_for(browser, lambda d: cards_show(d, {}), "tags, pid and free slots on each card")
    marker = browser.execute_script("window.__noReload = 'still here'; return window.__noReload")

    run = client.submit_job(TitanJob("sleeper", command=["sleep", "30"]))
    try:
        st = wait_until_running(client, run.run_id, "sleeper")
        worker = st["jobs"]["sleeper"]["worker"]
        wait_for(browser, lambda d: css(d, f'#worker-{worker} li[data-run="{run.run_id}"][data-job="sleeper"]'),
                 f"sleeper in {worker}'s running list")
        wait_for(browser, lambda d: cards_show(d, {worker: 1}), f"1 slot used on {worker}")
        assert browser.execute_script("return window.__noReload") == marker  # the page was not reloaded
        wait_for(browser, lambda d: attrs(d, "#fig-running", "data-value") == ["1"], "the running figure")
        screenshot(browser, "cluster")
    finally:
        run.cancel()
    wait_for(browser, lambda d: not css(d, f'li[data-run="{run.run_id}"]'), "the cancelled job leaving the list")


def wait_until_running(client: Any, run_id: str, job_id: str) -> dict[str, Any]:
    from tests.helpers import wait_until

    return dict(wait_until(lambda: (st := client.status(run_id))["jobs"][job_id]["state"] == "RUNNING" and st,
                           timeout=20, what=f"{job_id} RUNNING"))


def test_agent_runs_page_groups_stages_in_order(browser: Any, ui: UiProcess, client: Any) -> None:
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    first = client.submit_dag("plan", [TitanJob("think", command=["true"])], agent_run_id=agent)
    first.wait(30, check=True)
    second = client.submit_dag("act", [TitanJob("do", command=["true"]),
                                       TitanJob("check", command=["true"], parents=["do"])], agent_run_id=agent)
    third = client.submit_dag("report", [TitanJob("write", command=["sleep", "1"])], agent_run_id=agent)
    client.submit_dag("unrelated", [TitanJob("x", command=["true"])], agent_run_id=f"other-{agent}")
    browser.get(ui.url("/agents"))
    group = f'[data-agent="{agent}"]'
    expected = [first.run_id, second.run_id, third.run_id]
    wait_for(browser, lambda d: attrs(d, f"{group} .stage", "data-run") == expected, "the group's three stages")
    wait_for(browser, lambda d: attrs(d, f"{group} .stage .badge", "data-state") == ["SUCCEEDED"] * 3,
             "every stage SUCCEEDED, live")
    assert len(css(browser, f'[data-agent="other-{agent}"] .stage')) == 1
    assert texts(browser, f"{group} .stage-name") == ["plan", "act", "report"]
    screenshot(browser, "agents")
    css(browser, f'{group} .stage[data-run="{second.run_id}"]')[0].click()
    wait_for(browser, lambda d: css(d, "#run-id") and d.find_element(By.ID, "run-id").text == second.run_id,
             "the stage's run page")
    wait_for(browser, lambda d: attrs(d, "#dag-jobs [data-job]", "data-job") == ["do", "check"], "its jobs")


def test_runs_page_filters_and_pages(browser: Any, ui: UiProcess, client: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    ok = client.submit_dag(f"alpha-{tag}", [TitanJob("a", command=["true"])], agent_run_id=f"ag-{tag}")
    bad = client.submit_dag(f"beta-{tag}", [TitanJob("b", command=["false"], retries=0),
                                            TitanJob("after", command=["true"], parents=["b"])])
    batch = [client.submit_job(TitanJob(f"bulk-{tag}-{i}", command=["true"])) for i in range(55)]
    for r in [ok, bad, *batch]:
        r.wait(60)
    browser.get(ui.url("/runs"))
    rows = "#runs-table tr[data-run]"
    wait_for(browser, lambda d: attrs(d, rows, "data-run")[:1] == [batch[-1].run_id], "the newest run first")
    assert len(css(browser, rows)) == 50  # one page

    name = browser.find_element(By.ID, "runs-name")
    name.send_keys(f"alpha-{tag}", Keys.ENTER)
    wait_for(browser, lambda d: attrs(d, rows, "data-run") == [ok.run_id], "only the alpha run")
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys(Keys.DELETE, Keys.ENTER)  # (clear() does not fire React's change event)
    browser.find_element(By.ID, "runs-agent").send_keys(f"ag-{tag}", Keys.ENTER)
    wait_for(browser, lambda d: attrs(d, rows, "data-run") == [ok.run_id], "only the agent's run")

    browser.get(ui.url(f"/runs?state=FAILED&name=beta-{tag}"))  # a filtered list has a URL to share
    wait_for(browser, lambda d: attrs(d, rows, "data-run") == [bad.run_id], "only the failed run")
    row = css(browser, f'tr[data-run="{bad.run_id}"]')[0]
    assert row.find_element(By.CSS_SELECTOR, ".badge").get_attribute("data-state") == "FAILED"
    assert "2/2" in row.text  # progress: b DEAD and after SKIPPED are both done
    browser.get(ui.url("/runs"))
    wait_for(browser, lambda d: len(css(d, rows)) == 50, "the first page")
    screenshot(browser, "runs")
    first_page = attrs(browser, rows, "data-run")
    browser.find_element(By.ID, "runs-next").click()
    wait_for(browser, lambda d: attrs(d, rows, "data-run")[:1] not in ([], first_page[:1]), "the second page")
    assert not set(attrs(browser, rows, "data-run")) & set(first_page)
    assert "page 2 of" in browser.find_element(By.ID, "runs-count").text


def test_token_is_required_for_pages_and_callbacks(browser: Any, ui: UiProcess) -> None:
    outputs = [("banner", "children"), ("banner", "className"), ("broker-state", "children"), ("banner-seen", "data")]
    callback = json.dumps({  # the banner's callback, as the browser calls it
        "output": "".join(f"..{i}.{p}." for i, p in outputs) + ".",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": "banner-tick", "property": "n_intervals", "value": 1}],
        "state": [{"id": "banner-seen", "property": "data", "value": None}],
        "changedPropIds": ["banner-tick.n_intervals"]}).encode()
    post = {"Content-Type": "application/json"}
    assert http_status(ui.url("/", token=False)) == 403
    assert http_status(ui.url("/runs", token=False)) == 403
    assert http_status(ui.url("/_dash-layout", token=False)) == 403
    assert http_status(ui.url("/_dash-update-component", token=False), callback, post) == 403
    assert http_status(ui.url("/", token=False).replace("/?", "/?token=wrong&"), None) == 403
    cookie = {"Cookie": f"titan_ui_token_{ui.port}=wrong"}
    assert http_status(ui.url("/_dash-update-component", token=False), callback, {**post, **cookie}) == 403
    cookie = {"Cookie": f"titan_ui_token_{ui.port}={TOKEN}"}
    assert http_status(ui.url("/_dash-update-component", token=False), callback, {**post, **cookie}) == 200
    assert http_status(ui.url("/_dash-update-component"), callback, post) == 200  # the token in the URL

    html = urllib.request.urlopen(ui.url("/"), timeout=10).read().decode()
    assert not re.search(r'(src|href)="(https?:)?//', html), "everything must be served by the UI itself"

    browser.delete_all_cookies()
    browser.get(ui.url("/runs", token=False))
    assert "403" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(ui.url("/"))  # the URL titan-ui printed
    wait_for(browser, lambda d: len(css(d, ".worker")) == 2, "the cluster page with the token")
    browser.get(ui.url("/agents", token=False))  # from the cookie alone: the page and its callbacks
    wait_for(browser, lambda d: css(d, "#agents-body") and css(d, "#nav-agents.active"), "the agents page")
    browser.find_element(By.ID, "nav-cluster").click()  # a callback-driven page change
    wait_for(browser, lambda d: len(css(d, ".worker")) == 2, "the cluster page from the cookie")
