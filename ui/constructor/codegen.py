"""The Constructor's code panes: a draft as a YAML pipeline (``titan run``) and as Python (``TitanClient``).

Both are generated from the job maps :func:`ui.constructor.draft.check` built (schema field names, the
values as YAML would hold them), in the schema's field order, fields left empty left out. Scripts are
uploaded files (assets): a job's ``file`` is the asset's name, so the YAML's header says how to fetch them
next to the file (``titan download``), and the Python fetches them itself before submitting. Deploying
from the page goes through :func:`titan_jobs`, the same ``TitanJob`` arguments the Python pane prints.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml

from client.job import SDK_NAMES, TitanJob
from ui.constructor.draft import TOP_FIELDS, Report

SDK_ARGUMENT = {name: sdk for sdk, name in SDK_NAMES.items()}  # schema field -> TitanJob keyword


def jobs(draft: dict[str, Any], report: Report) -> list[dict[str, Any]]:
    """The draft's jobs as YAML job maps, from the fields that passed the check."""
    return [report.raws.get(n["key"], {}) for n in draft["nodes"]]


def scripts(job_maps: list[dict[str, Any]]) -> list[str]:
    """The uploaded files the jobs run, each once, in order."""
    return list(dict.fromkeys(j["file"] for j in job_maps if j.get("file")))


def _header(report: Report, lead: str) -> list[str]:
    if report.ok:
        return []
    problems = report.problems()
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return [f"{lead} NOT VALID YET: {problems[0]}{more}"]


def to_yaml(draft: dict[str, Any], report: Report) -> str:
    """The pipeline as ``titan run`` takes it (client/pipeline.py loads exactly this)."""
    maps = jobs(draft, report)
    doc: dict[str, Any] = {top: draft[top] for top in TOP_FIELDS if draft.get(top)}
    doc["jobs"] = maps
    lines = _header(report, "#")
    files = scripts(maps)
    if files:
        lines.append("# The scripts are files uploaded to the cluster; fetch them next to this file first:")
        for name in files:
            folder = PurePosixPath(name).parent
            mkdir = f"mkdir -p {folder} && " if str(folder) != "." else ""
            lines.append(f"#   {mkdir}titan download {name} {name}")
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    return "\n".join([*lines, body]) if lines else body


def job_arguments(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A job map as TitanJob's arguments: its id, and keywords under the SDK's names (filename, parents...)."""
    kwargs = {"filename" if name == "file" else SDK_ARGUMENT.get(name, name): value
              for name, value in job.items() if name != "id"}
    return str(job.get("id", "")), kwargs


def titan_jobs(job_maps: list[dict[str, Any]]) -> list[TitanJob]:
    """The jobs to submit (scripts are read from disk by ``TitanJob``, relative to the submit's base_dir)."""
    return [TitanJob(job_id, **kwargs) for job_id, kwargs in map(job_arguments, job_maps)]


def to_python(draft: dict[str, Any], report: Report, broker: str) -> str:
    """The pipeline as a Python script using the client library, submitting to ``broker``."""
    maps = jobs(draft, report)
    lines = _header(report, "#")
    lines += ["from pathlib import Path", "", "from client.api import TitanClient", "from client.job import TitanJob",
              "", "jobs = ["]
    for job in maps:
        lines.append(_job_call(*job_arguments(job)))
    lines += ["]", "", f"with TitanClient({broker!r}) as client:"]
    for name in scripts(maps):
        if "/" in name:
            lines.append(f"    Path({name!r}).parent.mkdir(parents=True, exist_ok=True)")
        lines.append(f"    client.download_asset({name!r}, {name!r})  # an uploaded script")
    lines.append(f"    run = client.submit_dag({draft.get('name') or ''!r}, jobs"
                 + (f", agent_run_id={draft['agent_run_id']!r})" if draft.get("agent_run_id") else ")"))
    lines.append("    print(run.run_id)")
    return "\n".join(lines) + "\n"


def _job_call(job_id: str, kwargs: dict[str, Any]) -> str:
    parts = [repr(job_id)] + [f"{k}={v!r}" for k, v in kwargs.items()]
    one = f"    TitanJob({', '.join(parts)}),"
    if len(one) <= 110:
        return one
    inner = ",\n".join(f"        {p}" for p in parts)
    return f"    TitanJob(\n{inner},\n    ),"
