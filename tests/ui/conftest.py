"""UI tests: the real `titan-ui` process against a real cluster, driven by headless Chromium (selenium).

Chromium and chromedriver are Debian's (``apt-get install chromium chromium-driver``; `.ci/run`
installs them). Without them every test here is skipped with a reason saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from client.cluster import LocalCluster
from tests.helpers import REPO, port_guess, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1360,900", "--hide-scrollbars"]
TOKEN = "test-token-0123"
# `make screenshots` (TITAN_SCREENSHOTS=1) refreshes the README's pictures; other runs save them aside, so a
# test run leaves the working tree as it was.
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("TITAN_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "titan-screenshots")
MISSING = (f"Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): the UI tests need Debian's `chromium` and "
           "`chromium-driver` (apt-get install -y chromium chromium-driver; .ci/run does it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    warnings.warn(MISSING, stacklevel=1)
    print(f"\n*** SKIPPING THE UI TESTS: {MISSING} ***\n", file=sys.stderr)
    for item in items:
        if "tests/ui/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=MISSING))


@dataclass
class UiProcess:
    """A running `python -m ui`; ``url(path)`` gives a page's address."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str = "/", token: bool = True) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}{sep + 'token=' + TOKEN if token else ''}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def http_status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def start_ui(broker: str, log_dir: Path, tries: int = 5) -> UiProcess:
    """Start `python -m ui` on a free port (another guess when the bind fails) and wait until it serves."""
    for attempt in range(tries):
        port = port_guess()
        log_path = log_dir / f"ui-{port}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ui", "--broker", broker, "--bind", f"127.0.0.1:{port}", "--token", TOKEN],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        ui = UiProcess(popen, port, log_path)
        try:
            wait_until(lambda ui=ui: ui.popen.poll() is not None or http_status(ui.url("/")) == 200, timeout=30,
                       interval=0.1, what=f"the UI on port {port}")
        except AssertionError:
            ui.stop()
            raise AssertionError(f"the UI did not come up:\n{ui.output()}") from None
        if popen.poll() is None:
            return ui
        if "cannot serve" not in ui.output() or attempt == tries - 1:
            raise AssertionError(f"the UI exited with {popen.returncode}:\n{ui.output()}")
    raise AssertionError("unreachable")


@pytest.fixture
def make_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start UI processes for a broker; each is stopped at the end of the test."""
    started: list[UiProcess] = []

    def make(broker: str) -> UiProcess:
        ui = start_ui(broker, tmp_path_factory.mktemp("ui"))
        started.append(ui)
        return ui

    yield make
    for ui in started:
        ui.stop()


def new_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def quit_browser(driver: Any) -> None:
    """Quit chromium and chromedriver, and kill whatever of them is left (they are ours)."""
    proc = driver.service.process
    family = []
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    try:
        driver.quit()
    finally:
        for p in [*family, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = new_browser()
    try:
        yield driver
    finally:
        quit_browser(driver)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The module's cluster: 2 workers x 4 slots with different capability tags (the cards show them)."""
    c = LocalCluster(tmp_path_factory.mktemp("ui-cluster"), workers=2, slots=4, worker_caps=[["GENERAL", "GPU"], ["GENERAL", "HIGH_MEM"]],
                     broker_args=["--retry-backoff", "0.2"])
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def ui(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiProcess]:
    """A UI process on the module's shared cluster."""
    proc = start_ui(cluster.broker_addr, tmp_path_factory.mktemp("ui"))
    yield proc
    proc.stop()


def screenshot(driver: Any, name: str) -> None:
    """Save the whole page as <name>.png under SCREENSHOTS (docs/screenshots with `make screenshots`)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1360, "height": max(600, min(int(height), 1800)), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
