"""The store's key namespace: which prefixes belong to the broker's journal and what lives where.

Shared by the broker (which writes the journal), the store (which refuses writes to the journal
from anybody else), the client (which may read it) and the benchmarks. All values are msgpack.

    run/<run_id>              run meta (name, agent run, state, times)
    spec/<run_id>/<job_id>    a job's spec, written once when the job is accepted
    job/<run_id>/<job_id>     a job's changing state (state, attempts, worker, times...)
    blob/<sha256>             a project archive
    asset/<name>              an uploaded file or artifact: its manifest (id, size, sha256, pieces)
    chunk/<upload_id>/<n>     the pieces of an asset, written by the broker as an upload goes
    sched/<name>              a schedule: its cron, options, the pipeline it runs, the last tick it fired
                              for and its recent runs (one record, written with the run a tick fires)
    quarantine/<key>          a journal record the broker could not read at start-up, moved here with
                              its value (logged; never read back: inspect it, then delete it)
    anything else             the users' shared KV and sets
"""

from __future__ import annotations

RUN = "run/"
SPEC = "spec/"
JOB = "job/"
BLOB = "blob/"
ASSET = "asset/"
CHUNK = "chunk/"
SCHEDULE = "sched/"
QUARANTINE = "quarantine/"  # not reserved: nothing reads it back, and operators clear it with ordinary tools
RESERVED = (RUN, SPEC, JOB, BLOB, CHUNK, SCHEDULE)  # the broker's prefixes: anybody may read them, only the broker writes


def run_key(run_id: str) -> str:
    return f"{RUN}{run_id}"


def spec_key(run_id: str, job_id: str) -> str:
    return f"{SPEC}{run_id}/{job_id}"


def job_key(run_id: str, job_id: str) -> str:
    return f"{JOB}{run_id}/{job_id}"


def blob_key(blob_id: str) -> str:
    return f"{BLOB}{blob_id}"


def asset_key(name: str) -> str:
    return f"{ASSET}{name}"


def chunk_key(upload_id: str, index: int) -> str:
    return f"{CHUNK}{upload_id}/{index:08d}"


def schedule_key(name: str) -> str:
    return f"{SCHEDULE}{name}"


def quarantine_key(key: str) -> str:
    return f"{QUARANTINE}{key}"


def is_reserved(key: str) -> bool:
    """Whether ``key`` is part of the broker's journal (refused to every other writer)."""
    return key.startswith(RESERVED)


def reserved_message(key: str) -> str:
    return f"key {key!r} is reserved for the broker's journal"
