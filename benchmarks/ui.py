"""`titan bench --only ui`: the Run page in headless Chromium (Debian's chromium + chromedriver, selenium).

Four figures, on a cluster of 2 workers x 4 slots with the UI as its own process (``LocalCluster(ui=True)``):

- ``ui-colour``: a job's state change (its ``finished_at`` in the broker) to the node's colour change in
  Cytoscape (``cy.on('data')`` in the page, wall clock; one host, one clock), for gated jobs released one
  by one;
- ``ui-first-render``: opening a 1,000-job run's page until its 1,000 jobs are in the page and drawn
  (the first open, when the UI process loads the run, and again, warm);
- ``ui-log``: a line printed by a job (its own timestamp in the text) to that line in the side panel;
- ``ui-broker-cpu``: the broker's CPU with the UI process connected and no page open, then with 5 pages
  of a 1,000-job run open (5 browser windows): on a run standing still (the pages' own cost) and on one
  that executes.

Only run when asked for (``--only ui``): it needs Chromium, which the other scenarios do not.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks.measure import pct
from client.api import TitanClient
from client.cluster import LocalCluster
from client.job import TitanJob

CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1360,900", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]
RECORD_COLOURS = """
window.__colours = [];
window.cy.on('data', 'node', function (e) {
    window.__colours.push([e.target.id(), e.target.data('state'), Date.now() / 1000]);
});
"""
RECORD_LINES = """
window.__lines = [];
window.__seenLines = new Set();
new MutationObserver(function (muts) {
    const now = Date.now() / 1000;
    muts.forEach(m => m.addedNodes.forEach(n => {
        const text = n.textContent;
        if (text && !window.__seenLines.has(text)) { window.__seenLines.add(text); window.__lines.push([text, now]); }
    }));
}).observe(document.getElementById('log-lines'), {childList: true});
"""


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def until(fn: Any, timeout: float, what: str, every: float = 0.02) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"ui bench: timed out waiting for {what}")


def page_url(cluster: LocalCluster, path: str) -> str:
    return cluster.ui_url.replace("/?", f"{path}?")


def job_count(driver: Any) -> int:
    return int(driver.execute_script("return document.querySelectorAll('#dag-jobs span').length"))


def drawn(driver: Any) -> bool:
    return bool(driver.execute_script("return !!(window.cy && window.cy.nodes().length)"))


def thousand(prefix: str, command: list[str], **extra: Any) -> list[TitanJob]:
    """1,000 jobs in 10 layers of 100, each after two of the layer before (``extra``: more job fields)."""
    jobs = [TitanJob(f"{prefix}0-{i:03}", command=command, **extra) for i in range(100)]
    for n in range(1, 10):
        jobs += [TitanJob(f"{prefix}{n}-{i:03}", command=command, **extra,
                          parents=[f"{prefix}{n - 1}-{i:03}", f"{prefix}{n - 1}-{(i * 7 + 3) % 100:03}"])
                 for i in range(100)]
    return jobs


def colour(cluster: LocalCluster, c: TitanClient, driver: Any, gates: Path, n: int) -> dict[str, Any]:
    jobs = [TitanJob(f"g{i:02}", command=["sh", "-c", f"while [ ! -e '{gates / str(i)}' ]; do sleep 0.02; done"])
            for i in range(n)]
    run = c.submit_dag("ui-colour", jobs)
    driver.get(page_url(cluster, f"/runs/{run.run_id}"))
    until(lambda: driver.execute_script("return document.querySelectorAll('#dag-jobs [data-state=RUNNING]').length")
          >= min(n, 8), 60, "jobs running")
    driver.execute_script(RECORD_COLOURS)
    for i in range(n):
        (gates / str(i)).touch()
        until(lambda i=i: driver.execute_script(
            "return window.__colours.some(r => r[0] === arguments[0] && r[1] === 'COMPLETED')", f"g{i:02}"),
            30, f"g{i:02} green")
    seen = {job: ts for job, state, ts in driver.execute_script("return window.__colours") if state == "COMPLETED"}
    st = c.wait(run.run_id, 60)
    lat = [seen[j] - st["jobs"][j]["finished_at"] for j in seen]
    return {"value": pct(lat, 0.5) * 1000, "unit": "ms", "p90_ms": pct(lat, 0.9) * 1000, "max_ms": max(lat) * 1000,
            "samples": len(lat)}


def first_render(cluster: LocalCluster, c: TitanClient, driver: Any, warm: int) -> dict[str, Any]:
    run = c.submit_dag("ui-render", thousand("r", ["true"]))
    c.wait(run.run_id, 600)
    times = []
    for _ in range(1 + warm):
        driver.get("about:blank")
        t0 = time.perf_counter()
        driver.get(page_url(cluster, f"/runs/{run.run_id}"))
        until(lambda: job_count(driver) == 1000 and drawn(driver), 60, "1,000 jobs drawn")
        times.append(time.perf_counter() - t0)
    return {"value": times[0], "unit": "s", "warm_p50_s": pct(times[1:], 0.5) if warm else None, "jobs": 1000}


def log_latency(cluster: LocalCluster, c: TitanClient, driver: Any, gates: Path, n: int) -> dict[str, Any]:
    script = (f"import time, os\nwhile not os.path.exists({str(gates / 'talk')!r}): time.sleep(0.02)\n"
              f"for i in range({n}):\n    print(f'at {{time.time():.4f}}', flush=True)\n    time.sleep(0.25)\n")
    run = c.submit_dag("ui-log", [TitanJob("talker", command=["python3", "-c", script])])
    driver.get(page_url(cluster, f"/runs/{run.run_id}"))
    until(lambda: drawn(driver), 30, "the graph")
    driver.execute_script("window.cy.getElementById('talker').emit('tap')")
    until(lambda: driver.execute_script("return document.getElementById('panel-title').textContent") == "talker",
          30, "the panel")
    driver.execute_script(RECORD_LINES)
    (gates / "talk").touch()
    until(lambda: len(driver.execute_script("return window.__lines")) >= n, 60, "every line")
    lat = [seen - float(text.split()[1]) for text, seen in driver.execute_script("return window.__lines")
           if text.startswith("at ")]
    c.wait(run.run_id, 60)
    return {"value": pct(lat, 0.5) * 1000, "unit": "ms", "p90_ms": pct(lat, 0.9) * 1000, "samples": len(lat)}


def broker_cpu(cluster: LocalCluster, c: TitanClient, driver: Any, window: float) -> dict[str, Any]:
    """Broker (and UI process) CPU with no page and with 5 pages open on a 1,000-job run: once on a run
    that stands still (its jobs need a capability no worker has: only the pages' cost shows), once on a
    run that executes (the pages' browsers then also take CPU from the workers on this machine, so the
    run does less meanwhile: ``jobs_done_*`` says how much)."""
    broker = psutil.Process(cluster.procs["broker"].popen.pid)  # type: ignore[union-attr]
    ui = psutil.Process(cluster.procs["ui"].popen.pid)  # type: ignore[union-attr]
    out: dict[str, Any] = {"window_s": window}
    for label, command, extra in (("still", ["true"], {"requirement": "NOWHERE"}), ("busy", ["sleep", "0.2"], {})):
        run = c.submit_dag(f"ui-cpu-{label}", thousand(label, command, **extra))

        def done(run_id: str = run.run_id) -> int:
            return int(c.status(run_id, summary=True)["counts"].get("COMPLETED", 0))

        if label == "busy":
            until(lambda: done() > 20, 60, "the run under way")
        idle = _cpu_window(broker, ui, done, window)
        handles = []
        for _ in range(5):
            driver.switch_to.new_window("window")
            driver.get(page_url(cluster, f"/runs/{run.run_id}"))
            handles.append(driver.current_window_handle)
        until(lambda: job_count(driver) == 1000, 60, "the pages loaded")
        busy = _cpu_window(broker, ui, done, window)
        for h in handles:
            driver.switch_to.window(h)
            driver.close()
        driver.switch_to.window(driver.window_handles[0])
        c.cancel(run.run_id)
        out.update({f"{label}_broker_0_pages_pct": idle[0], f"{label}_broker_5_pages_pct": busy[0],
                    f"{label}_ui_0_pages_pct": idle[1], f"{label}_ui_5_pages_pct": busy[1]})
        if label == "busy":
            out.update(busy_jobs_done_0_pages=idle[2], busy_jobs_done_5_pages=busy[2])
    out.update(value=out["still_broker_5_pages_pct"] - out["still_broker_0_pages_pct"], unit="% CPU")
    return out


def _cpu_window(broker: psutil.Process, ui: psutil.Process, done: Any, window: float) -> tuple[float, float, int]:
    """(broker %CPU, UI process %CPU, jobs completed) over ``window`` seconds."""
    def cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    b0, u0, d0, t0 = cpu(broker), cpu(ui), done(), time.perf_counter()
    time.sleep(window)
    dt = time.perf_counter() - t0
    return (cpu(broker) - b0) / dt * 100, (cpu(ui) - u0) / dt * 100, done() - d0


def run(quick: bool, workdir: Path, record: Any) -> None:
    cluster = LocalCluster(workdir / "ui", workers=2, slots=4, ui=True).start()
    driver = None
    try:
        until(lambda: _ok(cluster.ui_url), 30, "the UI")
        driver = browser()
        gates = workdir / "ui-gates"
        gates.mkdir(exist_ok=True)
        with cluster.client(timeout=30) as c:
            record("ui-colour", **colour(cluster, c, driver, gates, 10 if quick else 30))
            record("ui-first-render", **first_render(cluster, c, driver, 2 if quick else 5))
            record("ui-log", **log_latency(cluster, c, driver, gates, 10 if quick else 30))
            record("ui-broker-cpu", **broker_cpu(cluster, c, driver, 8.0 if quick else 12.0))
    finally:
        if driver is not None:
            driver.quit()
        cluster.stop()


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False
