"""The Constructor (/new) in headless Chromium against a real cluster (issue 9, acceptance item 5): build
root -> (a, b) -> sink with args containing quotes and an uploaded script, deploy it, and run the YAML and
Python panes' text as `titan run` and a TitanClient script would; a cycle and a bad field are refused next
to the field; a draft saved in the store comes back after a reload."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.ui.conftest import UiProcess, screenshot
from tests.ui.test_pages import css
from tests.ui.test_pages import wait_for as wait_dom

pytestmark = pytest.mark.timeout(180)

ARGS = ["it's", 'say "hi"', "two words"]  # quotes of both kinds and a space: each must arrive as one argument
GREET = "import sys\nprint('greet', sys.argv[1:])\n"


def field(driver: Any, name: str, tag: str = "input") -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'[data-field="{name}"] {tag}')


def wait_for(driver: Any, condition: Any, what: str, timeout: float = 20) -> Any:
    """test_pages' wait, also retrying when the form re-renders under the test (a fresh element is found)."""
    def attempt(d: Any) -> Any:
        try:
            return condition(d)
        except (ElementNotInteractableException, ElementClickInterceptedException):
            return False
    return wait_dom(driver, attempt, what, timeout)


def click(driver: Any, element: Any) -> None:
    """Click in the middle of the window (a click scrolled to the top would land on the sticky nav bar)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def error_of(driver: Any, name: str) -> str:
    found = css(driver, f'[data-field="{name}"] .field-error')
    return str(found[0].text) if found else ""


def type_into(driver: Any, name: str, text: str, tag: str = "input") -> None:
    """Replace a field's text the way a user does (select all, type); each key fires the form's callback.
    A form re-rendered meanwhile (stale element) is simply typed into again."""
    keys = text.replace("\n", Keys.SHIFT + Keys.ENTER + Keys.SHIFT) if tag == "textarea" else text

    def typed(d: Any) -> bool:
        box = d.find_element(By.CSS_SELECTOR, f'[data-field="{name}"] {tag}')
        if box.get_attribute("value") != text:
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.DELETE)
            if text:
                box.send_keys(keys)
        return box.get_attribute("value") == text

    wait_for(driver, typed, f"{name} = {text!r}")


def form_key(driver: Any) -> str | None:
    """The node key of the job the form shows (so a test never types into the previous job's form)."""
    return driver.execute_script("const f = document.querySelector('#new-form .fields'); return f && f.dataset.key")


def chip_keys(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return [...document.querySelectorAll('#new-nodes .chip')].map(e => e.dataset.key)"))


def pane(driver: Any, which: str) -> str:
    return str(driver.find_element(By.ID, f"new-{which}").get_attribute("textContent"))


def chip_ids(driver: Any) -> list[str]:
    """The jobs' chips, read in one script (the chips re-render as one types: no stale elements)."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll('#new-nodes .chip')].map(e => e.dataset.job)"))


def open_new(driver: Any, ui: UiProcess) -> None:
    driver.get(ui.url("/new"))
    wait_for(driver, lambda d: css(d, "#new-clear") and pane(d, "yaml"), "the constructor, rendered")
    click(driver, driver.find_element(By.ID, "new-clear"))  # the draft is kept for the browser's session: start afresh
    wait_for(driver, lambda d: not chip_ids(d) and "jobs: []" in pane(d, "yaml")
             and css(d, '[data-field="name"] input'), "an empty draft")


def add_job(driver: Any, job_id: str, command: str, parents: list[str] = (), args: list[str] = (),  # type: ignore[assignment]
            button: str = "new-add-run") -> None:
    before = len(chip_ids(driver))
    click(driver, driver.find_element(By.ID, button))
    wait_for(driver, lambda d: len(chip_ids(d)) == before + 1 and form_key(d) == chip_keys(d)[-1], "the new job's form")
    type_into(driver, "id", job_id)
    wait_for(driver, lambda d: job_id in chip_ids(d), f"{job_id} in the chips")
    if command:
        type_into(driver, "command", command, "textarea")
    if args:
        type_into(driver, "args", "\n".join(args), "textarea")
    set_parents(driver, parents)


def set_parents(driver: Any, parents: list[str]) -> None:
    for option in css(driver, '[data-field="depends_on"] [role=option]'):
        box = option.find_element(By.TAG_NAME, "input")
        if (option.text.strip() in parents) != box.is_selected():
            click(driver, box)
    wait_for(driver, lambda d: sorted(o.text.strip() for o in css(d, '[data-field="depends_on"] [role=option]')
                                      if o.find_element(By.TAG_NAME, "input").is_selected()) == sorted(parents),
             f"parents {parents} ticked")


def select(driver: Any, job_id: str) -> None:
    chip = f'#new-nodes .chip[data-job="{job_id}"]'
    wait_for(driver, lambda d: click(d, d.find_element(By.CSS_SELECTOR, chip)) or True, f"{job_id}'s chip clicked")
    wait_for(driver, lambda d: field(d, "id").get_attribute("value") == job_id, f"{job_id}'s form")


def yaml_doc(driver: Any) -> Any:
    text = pane(driver, "yaml")
    return yaml.safe_load(text) if "NOT VALID" not in text else None


def test_constructor_builds_deploys_and_round_trips(browser: Any, ui: UiProcess, client: Any, tmp_path: Path) -> None:
    open_new(browser, ui)
    name = f"built-{uuid.uuid4().hex[:6]}"
    type_into(browser, "name", name)
    add_job(browser, "root", "echo\nroot")
    add_job(browser, "a", "printf\n<%s>\\n", parents=["root"], args=ARGS)
    add_job(browser, "b", "", parents=["root"], args=["from b"])
    script = tmp_path / "greet.py"
    script.write_text(GREET)
    browser.find_element(By.CSS_SELECTOR, '[data-field="file"] .upload input[type=file]').send_keys(str(script))
    wait_for(browser, lambda d: "greet.py" in d.find_element(By.CSS_SELECTOR, '[data-field="file"]').text,
             "the uploaded script chosen")
    add_job(browser, "sink", "echo\nsink", parents=["a", "b"])

    expected = {"name": name, "jobs": [
        {"id": "root", "command": ["echo", "root"]},
        {"id": "a", "command": ["printf", "<%s>\\n"], "args": ARGS, "depends_on": ["root"]},
        {"id": "b", "file": "greet.py", "args": ["from b"], "depends_on": ["root"]},
        {"id": "sink", "command": ["echo", "sink"], "depends_on": ["a", "b"]},
    ]}
    wait_for(browser, lambda d: yaml_doc(d) == expected, "the YAML pane showing the DAG")
    yaml_text, python_text = pane(browser, "yaml"), pane(browser, "python")
    assert "titan download greet.py greet.py" in yaml_text
    assert "client.download_asset('greet.py', 'greet.py')" in python_text
    assert not error_of(browser, "command") and browser.find_element(By.ID, "new-deploy").is_enabled()
    screenshot(browser, "constructor")

    click(browser, browser.find_element(By.ID, "new-deploy"))
    wait_for(browser, lambda d: "/runs/" in d.current_url and css(d, "#run-id"), "the new run's page")
    run_id = browser.current_url.split("/runs/")[1].split("?")[0]
    check_run(client, run_id)

    # the YAML pane's text, saved to a file, with the scripts fetched as its header says: `titan run`
    folder = tmp_path / "yaml"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(yaml_text)
    titan = [sys.executable, "-m", "client.cli"]
    env = dict(os.environ, TITAN_BROKER=ui_broker(client))
    got = subprocess.run([*titan, "download", "greet.py", "greet.py"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    out = subprocess.run([*titan, "run", "pipeline.yaml", "--wait"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    check_run(client, out.stdout.split()[0])

    # the Python pane's text, run as a script would be (its client is bound to the UI's broker: this cluster)
    (tmp_path / "py").mkdir()
    printed = io.StringIO()
    with contextlib.chdir(tmp_path / "py"), contextlib.redirect_stdout(printed):
        exec(compile(python_text, "constructor.py", "exec"), {"__name__": "__main__"})
    check_run(client, printed.getvalue().split()[0])


def ui_broker(client: Any) -> str:
    return str(client.address)


def check_run(client: Any, run_id: str) -> None:
    """The run SUCCEEDED with the DAG built on the page, and every argument arrived whole."""
    st = client.wait(run_id, 60)
    assert st["state"] == "SUCCEEDED", st
    parents = {job: sorted(j.get("depends_on") or []) for job, j in st["jobs"].items()}
    assert parents == {"root": [], "a": ["root"], "b": ["root"], "sink": ["a", "b"]}
    assert client.logs(run_id, "a") == [f"<{arg}>" for arg in ARGS]
    assert client.logs(run_id, "b") == ["greet ['from b']"]


def test_constructor_refuses_a_cycle_and_a_bad_field(browser: Any, ui: UiProcess) -> None:
    open_new(browser, ui)
    type_into(browser, "name", "refusals")
    add_job(browser, "x", "true")
    add_job(browser, "y", "true", parents=["x"])
    wait_for(browser, lambda d: d.find_element(By.ID, "new-deploy").is_enabled(), "Deploy enabled for a valid DAG")

    select(browser, "x")
    set_parents(browser, ["y"])  # x <- y <- x
    wait_for(browser, lambda d: "cycle between jobs" in error_of(d, "depends_on"), "the cycle next to x's parents")
    assert "cycle between jobs" in browser.find_element(By.ID, "new-dag-err").text
    assert not browser.find_element(By.ID, "new-deploy").is_enabled()
    type_into(browser, "priority", "high")
    wait_for(browser, lambda d: "expected integer" in error_of(d, "priority"), "the bad priority next to the field")
    assert "got 'high'" in error_of(browser, "priority")
    assert "NOT VALID YET" in pane(browser, "yaml")
    screenshot(browser, "constructor-errors")

    set_parents(browser, [])
    wait_for(browser, lambda d: not error_of(d, "depends_on") and not d.find_element(By.ID, "new-dag-err").text,
             "the cycle gone")
    assert not browser.find_element(By.ID, "new-deploy").is_enabled()  # the priority is still bad
    type_into(browser, "priority", "7")
    wait_for(browser, lambda d: (doc := yaml_doc(d)) and doc["jobs"][0] == {"id": "x", "command": ["true"], "priority": 7},
             "x with priority 7 in the YAML")
    assert browser.find_element(By.ID, "new-deploy").is_enabled()


def test_constructor_saves_a_draft_in_the_store_and_loads_it_after_a_reload(browser: Any, ui: UiProcess,
                                                                             client: Any) -> None:
    open_new(browser, ui)
    name = f"draft-{uuid.uuid4().hex[:6]}"
    type_into(browser, "name", name)
    add_job(browser, "first", "echo\nhello world")
    add_job(browser, "second", "true", parents=["first"], button="new-add-service")
    type_into(browser, "port", "8081")
    expected = {"name": name, "jobs": [
        {"id": "first", "command": ["echo", "hello world"]},
        {"id": "second", "command": ["true"], "type": "service", "depends_on": ["first"], "port": 8081}]}
    wait_for(browser, lambda d: yaml_doc(d) == expected, "the YAML pane showing both jobs")
    saved_yaml = pane(browser, "yaml")
    click(browser, browser.find_element(By.ID, "new-save"))
    wait_for(browser, lambda d: f"Saved draft '{name}'" in d.find_element(By.ID, "new-msg").text, "the save message")
    assert client.store_get(f"ui/drafts/{name}") is not None  # in the cluster's store, for every user

    browser.refresh()
    wait_for(browser, lambda d: css(d, "#new-clear") and pane(d, "yaml"), "the page again")
    click(browser, browser.find_element(By.ID, "new-clear"))
    wait_for(browser, lambda d: not chip_ids(d) and "jobs: []" in pane(d, "yaml"), "an empty draft")
    click(browser, browser.find_element(By.ID, "new-drafts"))
    option = wait_for(browser, lambda d: [o for o in css(d, "[role=option]") if o.text.strip() == name], "the draft listed")
    click(browser, option[0])
    click(browser, browser.find_element(By.ID, "new-load"))
    wait_for(browser, lambda d: chip_ids(d) == ["first", "second"], "the loaded draft's jobs")
    wait_for(browser, lambda d: pane(d, "yaml") == saved_yaml, "the same YAML as saved")
    assert field(browser, "name").get_attribute("value") == name
    select(browser, "second")
    assert field(browser, "port").get_attribute("value") == "8081"

