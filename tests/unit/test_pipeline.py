"""YAML pipelines: loading, error messages that point at the problem, inline and project modes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from client import pipeline
from client.job import TitanJob, wire_jobs
from client.pipeline import Pipeline, StrictLoader, load, pack_folder
from tests.helpers import BAD_PIPELINES
from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest, PipelineError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(PipelineError) as info:
        load(path)
    assert isinstance(info.value, InvalidRequest)  # the client maps it to an "invalid" error
    return str(info.value)


def archive_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


# ---- errors ---------------------------------------------------------------------------------------


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", "name: x\njobs:\n  - id: a\n    command: echo: hi: x\n")
    msg = load_error(p)
    assert "line 4" in msg and "invalid YAML" in msg and str(p) in msg


def test_bad_yaml_indentation_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", "name: x\njobs:\n  - id: a\n    command: echo\n   bad: 1\n")
    assert "line 5" in load_error(p)


def test_unreadable_file(tmp_path: Path) -> None:
    msg = load_error(tmp_path / "missing.yaml")
    assert "missing.yaml" in msg and "cannot read" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", """\
        name: x
        jobz: []
        jobs:
          - id: a
            command: [echo]
    """)
    msg = load_error(p)
    assert "jobz: unknown field" in msg


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("- just\n- a list\n", "expected a map"),
        ("name: x\n", "name and jobs are required"),
        ("name: x\njobs: []\n", "at least one job"),
        ("name: [x]\njobs:\n  - {id: a, command: [echo]}\n", "name: expected str"),
        ("name: x\nproject: yes please\njobs:\n  - {id: a, command: [echo]}\n", "project: expected bool"),
        ("name: x\njobs: {a: 1}\n", "jobs: expected list"),
    ],
)
def test_top_level_shape_errors(tmp_path: Path, doc: str, needle: str) -> None:
    assert needle in load_error(write(tmp_path / "p.yaml", doc))


def test_unknown_job_key(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", """\
        name: x
        jobs:
          - id: a
            command: [echo]
          - id: b
            command: [echo]
            dependson: [a]
    """)
    assert "jobs[1].dependson: unknown field" in load_error(p)


@pytest.mark.parametrize("key", ["script", "project"])
def test_wire_only_job_keys_are_not_allowed_in_yaml(tmp_path: Path, key: str) -> None:
    p = write(tmp_path / "p.yaml", f"name: x\njobs:\n  - id: a\n    command: [echo]\n    {key}: abc\n")
    assert f"jobs[0].{key}: unknown field" in load_error(p)


def test_wrong_type_message(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", """\
        name: x
        jobs:
          - {id: a, command: [echo]}
          - {id: b, command: [echo]}
          - {id: c, command: [echo], priority: high}
    """)
    msg = load_error(p)
    assert "jobs[2].priority: expected integer" in msg and str(p) in msg


def test_missing_script_names_the_job(tmp_path: Path) -> None:
    write(tmp_path / "ok.py", "print(1)\n")
    p = write(tmp_path / "p.yaml", """\
        name: x
        jobs:
          - {id: fine, file: ok.py}
          - {id: lost-job, file: nowhere.py, depends_on: [fine]}
    """)
    msg = load_error(p)
    assert "jobs[1].file" in msg and "nowhere.py" in msg and "lost-job" in msg


def test_cycle_rejected(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", """\
        name: x
        jobs:
          - {id: a, command: [echo], depends_on: [c]}
          - {id: b, command: [echo], depends_on: [a]}
          - {id: c, command: [echo], depends_on: [b]}
    """)
    msg = load_error(p)
    assert "cycle" in msg and all(j in msg for j in ("a", "b", "c"))


def test_unknown_parent_rejected(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", "name: x\njobs:\n  - {id: a, command: [echo], depends_on: [ghost]}\n")
    assert "ghost" in load_error(p)


# ---- inline mode ----------------------------------------------------------------------------------


def test_inline_mode_ships_script_bytes(tmp_path: Path) -> None:
    script = "import sys\nprint('ünï | , \\n', sys.argv[1:])\n".encode()
    write(tmp_path / "scripts" / "extract.py", script)
    write(tmp_path / "load.sh", "echo loaded\n")
    p = write(tmp_path / "etl.yaml", """\
        name: etl
        agent_run_id: agent-7
        jobs:
          - id: extract
            file: scripts/extract.py
            args: "--n 3 'a b'"
            env: {K: v}
          - id: load
            file: load.sh
            depends_on: extract
            priority: 2
            retries: 0
            timeout: 5
          - id: cmd
            command: "echo 'hello world'"
    """)
    pl = load(p)
    assert isinstance(pl, Pipeline)
    assert pl.name == "etl" and pl.agent_run_id == "agent-7" and pl.project is None and pl.path == p
    extract, load_job, cmd = pl.jobs
    assert extract["id"] == "extract" and extract["script"] == script
    assert extract["file"] == "extract.py"
    assert extract["args"] == ["--n", "3", "a b"] and extract["env"] == {"K": "v"}
    assert "project" not in extract
    assert load_job["script"] == b"echo loaded\n" and load_job["depends_on"] == ["extract"]
    assert load_job["priority"] == 2 and load_job["retries"] == 0 and load_job["timeout"] == 5
    assert cmd["command"] == ["echo", "hello world"] and "script" not in cmd and "file" not in cmd
    body = pl.submission()
    assert body == {"name": "etl", "jobs": pl.jobs, "agent_run_id": "agent-7"}


# ---- project mode -----------------------------------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    base = tmp_path / "proj"
    write(base / "steps" / "train.py", "print('train')\n")
    write(base / "steps" / "lib" / "util.py", "X = 1\n")
    write(base / "data" / "input.csv", "a,b\n1,2\n")
    write(base / ".git" / "HEAD", "ref: main\n")
    write(base / ".env", "SECRET=1\n")
    write(base / "__pycache__" / "x.pyc", b"\x00junk")
    write(base / "steps" / "__pycache__" / "y.pyc", b"\x00junk")
    write(base / "pipe.yaml", """\
        name: proj
        project: true
        jobs:
          - {id: train, file: steps/train.py}
          - {id: echo, command: [echo, hi], depends_on: [train]}
    """)
    return base


def test_project_mode_packs_folder(tmp_path: Path) -> None:
    base = _project(tmp_path)
    pl = load(base / "pipe.yaml")
    assert pl.project is not None
    assert pl.project[:2] == b"\x1f\x8b"  # gzip
    names = archive_names(pl.project)
    for name in ("pipe.yaml", "steps/train.py", "steps/lib/util.py", "data/input.csv"):
        assert name in names
    for name in names:
        assert not name.startswith(".") and "__pycache__" not in name and not name.startswith("/")
    train, echo = pl.jobs
    assert train["project"] == hashlib.sha256(pl.project).hexdigest()
    assert train["file"] == "steps/train.py"
    assert "script" not in train
    assert "project" not in echo  # a command job needs no project
    assert pl.submission()["project"] == {"data": pl.project}
    with tarfile.open(fileobj=io.BytesIO(pl.project), mode="r:gz") as tar:
        member = tar.getmember("steps/train.py")
        assert member.isfile() and member.mtime == 0 and member.uid == 0 and member.uname == ""
        assert tar.extractfile(member).read() == b"print('train')\n"


def test_pack_is_deterministic(tmp_path: Path) -> None:
    base = _project(tmp_path)
    first = pack_folder(base)
    for path in base.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))  # times do not matter
    assert pack_folder(base) == first
    assert gzip.decompress(first)  # a valid gzip stream
    assert load(base / "pipe.yaml").project == first
    (base / "data" / "input.csv").write_text("changed\n")
    assert pack_folder(base) != first


def test_pack_skips_symlinks(tmp_path: Path) -> None:
    base = _project(tmp_path)
    outside = write(tmp_path / "outside.txt", "secret\n")
    (base / "link.txt").symlink_to(outside)
    assert "link.txt" not in archive_names(pack_folder(base))


def test_project_mode_refuses_file_outside_folder(tmp_path: Path) -> None:
    base = _project(tmp_path)
    write(tmp_path / "outside.py", "print(1)\n")
    write(base / "pipe.yaml", "name: p\nproject: true\njobs:\n  - {id: a, file: ../outside.py}\n")
    assert "outside the project folder" in load_error(base / "pipe.yaml")


def test_project_mode_job_file_is_always_in_the_archive(tmp_path: Path) -> None:
    base = _project(tmp_path)
    write(base / ".tools" / "run.py", "print(1)\n")
    write(base / "pipe.yaml", "name: p\nproject: true\njobs:\n  - {id: a, file: .tools/run.py}\n")
    try:
        pl = load(base / "pipe.yaml")
    except PipelineError as exc:  # refusing it up front, naming the file, is fine too
        assert ".tools/run.py" in str(exc)
        return
    assert pl.project is not None
    assert pl.jobs[0]["file"] in archive_names(pl.project)


# ---- hostile and careless input (issue 8) ---------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_PIPELINES))
def test_bad_pipelines_are_pipeline_errors_naming_the_problem(tmp_path: Path, case: str) -> None:
    content, needle = BAD_PIPELINES[case]
    p = write(tmp_path / "p.yaml", content)
    msg = load_error(p)
    assert needle in msg and str(p) in msg, msg
    assert len(msg) < 500, msg  # the offending value is not echoed back whole


def test_deep_nesting_is_an_error_with_the_pure_python_loader_too(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    class PyStrict(yaml.SafeLoader):
        construct_mapping = StrictLoader.construct_mapping

    monkeypatch.setattr(pipeline, "StrictLoader", PyStrict)
    p = write(tmp_path / "p.yaml", BAD_PIPELINES["nested-990"][0])
    assert "nested too deeply" in load_error(p)


def test_yaml_is_read_with_libyaml_when_pyyaml_has_it() -> None:
    if yaml.__with_libyaml__:
        assert issubclass(StrictLoader, yaml.CSafeLoader)


def test_duplicate_keys_in_flow_maps_and_merges(tmp_path: Path) -> None:
    p = write(tmp_path / "p.yaml", "name: x\njobs:\n  - {id: a, command: [echo], id: b}\n")
    assert "duplicate key 'id'" in load_error(p)
    merged = write(tmp_path / "m.yaml", """\
        name: x
        jobs:
          - &a {id: a, command: [echo], retries: 1}
          - {<<: *a, id: b, retries: 2}
    """)
    assert [j["retries"] for j in load(merged).jobs] == [1, 2]  # a merged key may be overridden


def test_job_count_is_capped_before_any_job_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "MAX_JOBS_PER_SUBMISSION", 3)
    jobs = "".join(f"  - {{id: j{i}, command: [echo]}}\n" for i in range(4))
    msg = load_error(write(tmp_path / "p.yaml", f"name: x\njobs:\n{jobs}"))
    assert "jobs: 4 jobs, over the cap of 3 per submission" in msg
    with pytest.raises(InvalidRequest, match="over the cap of 3"):
        wire_jobs([TitanJob(f"j{i}", command=["true"]) for i in range(4)])
