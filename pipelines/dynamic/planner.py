"""Adds two jobs to the run this job belongs to; the second depends on the first and on the planner."""

from pathlib import Path

from client import TitanClient, TitanJob

with TitanClient() as c:
    child = Path("child.py")
    child.write_text("import os, sys\nprint('child', sys.argv[1:], 'of run', os.environ['TITAN_RUN_ID'])\n")
    added = c.add_jobs([
        TitanJob("child-1", filename=str(child), args=["one"]),
        TitanJob("child-2", filename=str(child), args=["two"], parents=["child-1", "planner"]),
    ])
print("planner added", added)
