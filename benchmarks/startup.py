"""The `startup` scenario: bare start-up of the interpreter that runs Python jobs, next to a clean venv's.

Workers run `.py` jobs with their own interpreter (`titan_zmq.worker.workspace.interpreter`), so whatever
slows down every start of it (an import hook left by an editable install, a heavy `.pth` file) is paid by
every Python job. The other scenarios cannot show that: their floors run the same interpreter. Here the floor
is a throw-away venv made from the same base Python with nothing installed in it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.measure import floor_each, pct
from titan_zmq.worker.workspace import interpreter

# prints the import finders a bare start-up leaves on sys.meta_path (classes, or instances of them)
FINDERS = ("import sys\nfor f in sys.meta_path:\n    c = f if isinstance(f, type) else type(f)\n"
           "    print(f'{c.__module__}.{c.__qualname__}')\n")


def job_interpreter() -> str:
    """The Python the bench's workers run `.py` jobs with (they run under this process's interpreter)."""
    return interpreter(Path("job.py"))[0]


def clean_interpreter(where: Path) -> str:
    """A new venv at `where` without pip or anything else; its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    return str(where / "bin" / "python")


def finders(python: str) -> list[str]:
    return subprocess.run([python, "-c", FINDERS], capture_output=True, text=True, check=True).stdout.split()


def measure(quick: bool, workdir: Path) -> dict[str, Any]:
    """p50 of `python -c pass` for the job interpreter (value) and the clean one (floor), run alternately
    (after two unmeasured rounds) so that drifts of the machine hit both alike."""
    n = 20 if quick else 60
    job, clean = job_interpreter(), clean_interpreter(workdir / "clean-venv")
    took: dict[str, list[float]] = {job: [], clean: []}
    for i in range(n + 2):
        for python in took:
            t = floor_each([python, "-c", "pass"], 1)[0]
            if i >= 2:
                took[python].append(t)
    p50, f50 = pct(took[job], 0.5), pct(took[clean], 0.5)
    clean_finders = set(finders(clean))
    return {"value": p50 * 1000, "unit": "ms p50", "p99_ms": pct(took[job], 0.99) * 1000, "floor": f50 * 1000,
            "floor_p99_ms": pct(took[clean], 0.99) * 1000, "ratio": p50 / f50, "overhead_ms": (p50 - f50) * 1000,
            "n": n, "interpreter": job,
            "extra_finders": [f for f in finders(job) if f not in clean_finders]}
