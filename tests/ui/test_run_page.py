"""The Run page in headless Chromium against a real cluster (issue 9, acceptance items 2, 3 and 4): the live DAG,
the job panel with its live log and full download, cancel and re-submit, the timeline, a 1,000-job run grouped.

Jobs that must wait for the test wait on gate files (the workers run on this host); every wait is on a DOM
condition or a process, never a fixed sleep. States are read from ``#dag-jobs`` (one hidden span per job) and
the nodes' real colours from Cytoscape (``window.cy``, which dash-cytoscape sets).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from client.job import TitanJob
from tests.helpers import process_gone, wait_until
from tests.ui.conftest import TOKEN, UiProcess, screenshot
from tests.ui.test_pages import attrs, css, texts, wait_for
from titan_zmq.states import JobState
from ui import widgets

pytestmark = pytest.mark.timeout(180)


def gated(gates: Path, name: str, before: str = "", after: str = "") -> list[str]:
    """A command that runs ``before``, waits for the gate file ``<gates>/<name>``, then runs ``after``."""
    gate = gates / name
    return ["sh", "-c", f"{before} while [ ! -e '{gate}' ]; do sleep 0.05; done; {after}"]


def states(driver: Any) -> dict[str, str]:
    """Every job's state as the page shows it (the hidden ``#dag-jobs`` spans)."""
    pairs = driver.execute_script(
        "return Array.from(document.querySelectorAll('#dag-jobs span')).map(e => [e.dataset.job, e.dataset.state])")
    return {j: s for j, s in pairs}


def node_color(driver: Any, job_id: str) -> str | None:
    return driver.execute_script(
        "const n = window.cy && window.cy.getElementById(arguments[0]);"
        "return n && n.length ? n.style('background-color') : null", job_id)


def rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return "rgb({},{},{})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


def click_node(driver: Any, job_id: str) -> None:
    """A real click on the node's place on the canvas."""
    box = driver.find_element(By.ID, "dag")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)  # offsets count from its centre
    x, y = driver.execute_script(
        "const p = window.cy.getElementById(arguments[0]).renderedPosition(); return [p.x, p.y]", job_id)
    size = box.size
    ActionChains(driver).move_to_element_with_offset(box, int(x - size["width"] / 2),
                                                     int(y - size["height"] / 2)).click().perform()


def open_job(driver: Any, job_id: str) -> None:
    """Open a job's panel through the page's "open a job by id" box."""
    find = driver.find_element(By.ID, "job-find")
    find.send_keys(Keys.CONTROL, "a")
    find.send_keys(Keys.DELETE)
    find.send_keys(job_id, Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "panel-title").text == job_id, f"the panel of {job_id}")


def test_a_diamond_changes_colour_live_as_its_gated_jobs_finish(browser: Any, ui: UiProcess, client: Any,
                                                                 tmp_path: Path) -> None:
    jobs = [TitanJob("extract", command=gated(tmp_path, "extract")),
            TitanJob("clean", command=gated(tmp_path, "clean"), parents=["extract"]),
            TitanJob("features", command=gated(tmp_path, "features"), parents=["extract"]),
            TitanJob("train", command=gated(tmp_path, "train"), parents=["clean", "features"])]
    run = client.submit_dag("diamond", jobs)
    browser.get(ui.url(f"/runs/{run.run_id}"))
    browser.execute_script("window.__noReload = 'diamond'")
    wait_for(browser, lambda d: states(d) == {"extract": "RUNNING", "clean": "PENDING", "features": "PENDING",
                                              "train": "PENDING"}, "extract RUNNING, the others PENDING")
    wait_for(browser, lambda d: node_color(d, "extract") == rgb(widgets.JOB_COLORS["RUNNING"]), "a blue node")
    assert attrs(browser, "#legend [data-state]", "data-state") == widgets.job_states()
    assert set(widgets.job_states()) == {s.value for s in JobState}  # the legend covers every state

    expected = {"extract": "COMPLETED", "clean": "RUNNING", "features": "RUNNING", "train": "PENDING"}
    (tmp_path / "extract").touch()
    wait_for(browser, lambda d: states(d) == expected, "extract COMPLETED, both branches RUNNING, live")
    wait_for(browser, lambda d: node_color(d, "extract") == rgb(widgets.JOB_COLORS["COMPLETED"]), "a green node")
    screenshot(browser, "run-dag")
    for job, then in (("clean", {"clean": "COMPLETED"}), ("features", {"features": "COMPLETED", "train": "RUNNING"}),
                      ("train", {"train": "COMPLETED"})):
        (tmp_path / job).touch()
        expected.update(then)
        wait_for(browser, lambda d, want=dict(expected): states(d) == want, f"{job} done: {expected}")
    wait_for(browser, lambda d: attrs(d, ".run-title .badge", "data-state") == ["SUCCEEDED"], "the run SUCCEEDED")
    assert browser.execute_script("return window.__noReload") == "diamond"  # all of it without a reload


def test_the_panel_shows_a_jobs_log_live_and_the_full_log_downloads(browser: Any, ui: UiProcess, client: Any,
                                                                     tmp_path: Path) -> None:
    talk = gated(tmp_path, "talk", before="echo 'starting up'; echo 'a warning' >&2;", after="echo SENTINEL-7f3a")
    many = ["python3", "-c", "import sys\nfor i in range(10000): print(f'line {i:05d} ' + 'x' * 40)"]
    run = client.submit_dag("talkative", [TitanJob("talker", command=talk), TitanJob("printer", command=many),
                                          TitanJob("after", command=["true"], parents=["talker"])])
    browser.get(ui.url(f"/runs/{run.run_id}"))
    wait_for(browser, lambda d: states(d).get("talker") == "RUNNING", "talker RUNNING")
    wait_for(browser, lambda d: node_color(d, "talker") is not None, "the graph drawn")
    click_node(browser, "talker")
    wait_for(browser, lambda d: d.find_element(By.ID, "panel-title").text == "talker", "the panel of talker")
    wait_for(browser, lambda d: sorted(e.text for e in css(d, "#log-lines .ln")) == ["a warning", "starting up"],
             "the backlog")  # (the two pipes are read apart: their order between each other is not fixed)
    kinds = {e.text: e.get_attribute("class") for e in css(browser, "#log-lines .ln")}
    assert kinds == {"starting up": "ln out", "a warning": "ln err"}  # stdout and stderr told apart
    assert "sh -c" in browser.find_element(By.CSS_SELECTOR, ".facts .cmd").text
    (tmp_path / "talk").touch()  # now it prints the sentinel, while the panel is open
    wait_for(browser, lambda d: "SENTINEL-7f3a" in [e.text for e in css(d, "#log-lines .ln")], "the sentinel, live")
    wait_for(browser, lambda d: attrs(d, "#attempts tr[data-attempt]", "data-outcome") == ["COMPLETED"],
             "the attempt COMPLETED")
    assert sorted(texts(browser, "#log-lines .ln")) == ["SENTINEL-7f3a", "a warning", "starting up"]
    screenshot(browser, "run-panel")

    run.wait(60)
    open_job(browser, "printer")
    wait_for(browser, lambda d: "10,000 lines" in d.find_element(By.ID, "log-info").text, "the printer's 10,000 lines")
    shown = css(browser, "#log-lines .ln")
    assert shown[-1].text.startswith("line 09999")  # the panel keeps the newest lines
    href = browser.find_element(By.ID, "log-download").get_attribute("href")
    req = urllib.request.Request(href, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert "attachment" in resp.headers["Content-Disposition"]
        text = resp.read().decode()
    assert text.splitlines() == [f"line {i:05d} " + "x" * 40 for i in range(10000)]
    anonymous = href.split("?")[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=10)
    assert refused.value.code == 403  # the download is behind the token like every page


def test_cancel_job_from_the_panel_kills_it_and_resubmit_runs_the_jobs_again(browser: Any, ui: UiProcess,
                                                                              client: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    first = gated(tmp_path, "go", before=f"echo $$ > '{pid_file}';")
    run = client.submit_dag("cancel-me", [TitanJob("first", command=first),
                                          TitanJob("second", command=["true"], parents=["first"]),
                                          TitanJob("third", command=["true"], parents=["second"])])
    browser.get(ui.url(f"/runs/{run.run_id}"))
    wait_for(browser, lambda d: states(d).get("first") == "RUNNING", "first RUNNING")
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=20, what="the pid"))
    open_job(browser, "first")
    browser.find_element(By.CSS_SELECTOR, "#job-cancel button").click()
    WebDriverWait(browser, 10).until(ec.alert_is_present()).accept()
    wait_until(lambda: process_gone(pid), timeout=20, what=f"job process {pid} killed")
    wait_for(browser, lambda d: states(d) == {"first": "CANCELLED", "second": "CANCELLED", "third": "CANCELLED"},
             "the job and its descendants CANCELLED")
    wait_for(browser, lambda d: attrs(d, ".run-title .badge", "data-state") == ["CANCELLED"], "the run CANCELLED")

    (tmp_path / "go").touch()  # the next run's first job will not wait
    browser.find_element(By.ID, "run-resubmit").click()
    wait_for(browser, lambda d: d.current_url.split("?")[0].rsplit("/", 1)[-1] not in ("", run.run_id)
             and "/runs/cancel-me-" in d.current_url, "the new run's page")
    new_id = browser.current_url.split("?")[0].rsplit("/", 1)[-1]
    assert new_id != run.run_id
    wait_for(browser, lambda d: d.find_element(By.ID, "run-id").text == new_id, "the new run's header", timeout=30)
    wait_for(browser, lambda d: attrs(d, ".run-title .badge", "data-state") == ["SUCCEEDED"], "the new run SUCCEEDED",
             timeout=60)
    wait_for(browser, lambda d: states(d) == {"first": "COMPLETED", "second": "COMPLETED", "third": "COMPLETED"},
             "the new run's jobs COMPLETED")
    assert [j["spec"]["id"] for j in client.status(new_id, specs=True)["jobs"].values()] == ["first", "second", "third"]


def test_the_timeline_shows_every_attempt_per_worker_slot(browser: Any, ui: UiProcess, client: Any) -> None:
    jobs = [TitanJob(f"fan-{i}", command=["sleep", "0.6"]) for i in range(6)]
    jobs.append(TitanJob("flaky", command=["sh", "-c", 'sleep 0.3; test "$TITAN_ATTEMPT" -ge 2'], retries=2))
    jobs.append(TitanJob("join", command=["sleep", "0.3"], parents=[j.job_id for j in jobs]))
    run = client.submit_dag("timeline", jobs)
    run.wait(60, check=True)
    browser.get(ui.url(f"/runs/{run.run_id}"))
    wait_for(browser, lambda d: attrs(d, ".run-title .badge", "data-state") == ["SUCCEEDED"], "the run")
    browser.find_element(By.XPATH, "//div[contains(@class,'tab') and normalize-space()='Timeline']").click()
    wait_for(browser, lambda d: len(css(d, "#timeline .bars .point")) == 9, "9 bars: 8 jobs, one retried")
    wait_for(browser, lambda d: {"COMPLETED", "FAILED"} <= set(texts(d, "#timeline .legendtext")),
             "a legend with COMPLETED and FAILED")
    # parallel attempts: several lanes per worker
    wait_for(browser, lambda d: (lanes := texts(d, "#timeline .ytick text")) and len(lanes) >= 4
             and all(" · " in lane for lane in lanes), "at least 4 worker-slot lanes")
    screenshot(browser, "run-timeline")


def test_a_run_of_1000_jobs_opens_grouped_and_expands_a_layer(browser: Any, ui: UiProcess, client: Any) -> None:
    jobs = [TitanJob(f"l0-{i:03}", command=["true"]) for i in range(100)]
    for layer in range(1, 10):
        stuck = {"requirement": "NOWHERE"} if layer >= 6 else {}  # no worker has it: QUEUED for ever
        jobs += [TitanJob(f"l{layer}-{i:03}", command=["true"],
                          parents=[f"l{layer - 1}-{i:03}", f"l{layer - 1}-{(i * 7 + 3) % 100:03}"], **stuck)
                 for i in range(100)]
    run = client.submit_dag("thousand", jobs)
    try:
        wait_until(lambda: client.status(run.run_id, summary=True)["counts"].get("QUEUED") == 100, timeout=120,
                   what="layers 0-5 done, layer 6 queued")
        browser.get(ui.url(f"/runs/{run.run_id}"))
        wait_for(browser, lambda d: len(states(d)) == 1000, "1,000 jobs in the page's data")
        wait_for(browser, lambda d: "grouped by layer and state" in d.find_element(By.ID, "dag-summary").text,
                 "the grouped view")
        groups = browser.execute_script("return window.cy.nodes('[kind = \"group\"]').map(n => n.data('label'))")
        assert "100 COMPLETED" in groups and "100 QUEUED" in groups and len(groups) == 10
        assert browser.execute_script("return window.cy.nodes('[kind = \"job\"]').length") == 0
        screenshot(browser, "run-1000-grouped")
        browser.execute_script("window.cy.getElementById('group:6:QUEUED').emit('tap')")
        wait_for(browser, lambda d: d.execute_script("return window.cy.nodes('[kind = \"job\"]').length") == 100,
                 "layer 6 expanded into its 100 jobs")
        assert node_color(browser, "l6-042") == rgb(widgets.JOB_COLORS["QUEUED"])
        browser.find_element(By.CSS_SELECTOR, "#run-cancel button").click()
        WebDriverWait(browser, 10).until(ec.alert_is_present()).accept()
        wait_for(browser, lambda d: attrs(d, ".run-title .badge", "data-state") == ["CANCELLED"], "the run CANCELLED")
        wait_for(browser, lambda d: list(states(d).values()).count("CANCELLED") == 400, "400 jobs CANCELLED, live")
    finally:
        client.cancel(run.run_id)
