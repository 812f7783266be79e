"""Worker workspaces: safe archive extraction, interpreters, and how an attempt's argv and cwd are prepared."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from titan_zmq.errors import InvalidRequest
from titan_zmq.worker.workspace import Workspace, extract_safely, interpreter


def make_tar(entries: list[tuple[str, str, bytes | str]], gz: bool = True) -> bytes:
    """entries: (name, kind, data) with kind file | dir | symlink | hardlink | chr | fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return buf.getvalue()


NORMAL_TREE = [
    ("steps", "dir", ""),
    ("steps/train.py", "file", "print('train')\n"),
    ("steps/lib/util.py", "file", "X = 1\n"),  # parent dir not listed: created on the way
    ("data/in.csv", "file", "a,b\n"),
    ("run.sh", "file", "echo hi\n"),
]


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---- extract_safely ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_extract_normal_tree(tmp_path: Path, gz: bool) -> None:
    target = tmp_path / "out"
    target.mkdir()
    extract_safely(make_tar(NORMAL_TREE, gz=gz), target)
    assert listing(target) == {"steps", "steps/train.py", "steps/lib", "steps/lib/util.py", "data", "data/in.csv", "run.sh"}
    assert (target / "steps/train.py").read_text() == "print('train')\n"
    assert (target / "steps/lib/util.py").read_bytes() == b"X = 1\n"


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([("../x", "file", "evil")], "unsafe path"),
        ([("ok/../../x", "file", "evil")], "unsafe path"),
        ([("/abs/x", "file", "evil")], "unsafe path"),
        ([("/etc/passwd", "file", "evil")], "unsafe path"),
        ([("link", "symlink", "/etc/passwd")], "not a regular file"),
        ([("link", "symlink", "steps/train.py")], "not a regular file"),  # even one pointing inside
        ([("dirlink", "symlink", ".."), ("dirlink/x", "file", "evil")], "not a regular file"),
        ([("a.txt", "file", "a"), ("hard", "hardlink", "a.txt")], "not a regular file"),
        ([("hard", "hardlink", "/etc/passwd")], "not a regular file"),
        ([("dev", "chr", "")], "not a regular file"),
        ([("pipe", "fifo", "")], "not a regular file"),
    ],
    ids=["dotdot", "nested-dotdot", "abs", "abs-etc", "symlink-out", "symlink-in", "symlink-dir",
         "hardlink-in", "hardlink-out", "device", "fifo"],
)
def test_extract_refuses_unsafe_members(tmp_path: Path, entries: list, needle: str) -> None:
    target = tmp_path / "deep" / "out"
    target.mkdir(parents=True)
    data = make_tar(NORMAL_TREE[:2] + entries)
    with pytest.raises(InvalidRequest) as info:
        extract_safely(data, target)
    assert needle in str(info.value) and "project archive" in str(info.value)
    assert listing(target) == set(), "nothing may be extracted from a refused archive"
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_extract_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(tarfile.TarError):
        extract_safely(b"this is not a tar archive at all" * 20, tmp_path)


# ---- interpreter --------------------------------------------------------------------------------------


def test_interpreter_by_suffix(tmp_path: Path) -> None:
    assert interpreter(tmp_path / "a.py") == [sys.executable, str(tmp_path / "a.py")]
    assert interpreter(tmp_path / "b.sh") == ["bash", str(tmp_path / "b.sh")]
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(0o644)
    assert interpreter(exe) == [str(exe)]
    assert exe.stat().st_mode & stat.S_IXUSR, "a script run directly is made executable"


# ---- prepare -------------------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "root")


def test_layout(ws: Workspace) -> None:
    assert (ws.root / "blobs").is_dir() and (ws.root / "runs").is_dir()
    shared = ws.shared_dir("r1")
    assert shared == ws.root / "runs" / "r1" / "shared" and not shared.exists()  # a path: nothing done on the loop
    ws.prepare("r1", "j", 1, {"command": ["true"]})
    assert shared.is_dir()


def test_prepare_inline_python_script(ws: Workspace) -> None:
    spec = {"file": "extract.py", "script": b"print('hi')\n", "args": ["--n", "3", "a b"]}
    argv, cwd = ws.prepare("r1", "extract", 2, spec)
    assert cwd == ws.root / "runs" / "r1" / "attempts" / "extract@2" and cwd.is_dir()
    assert (cwd / "extract.py").read_bytes() == b"print('hi')\n"
    assert argv == [sys.executable, str(cwd / "extract.py"), "--n", "3", "a b"]


def test_prepare_inline_shell_script(ws: Workspace) -> None:
    argv, cwd = ws.prepare("r1", "load", 1, {"file": "load.sh", "script": b"echo hi\n", "args": [5]})
    assert argv == ["bash", str(cwd / "load.sh"), "5"]


def test_prepare_inline_script_name_cannot_escape(ws: Workspace) -> None:
    argv, cwd = ws.prepare("r1", "j", 1, {"file": "../../../evil.py", "script": b"x = 1\n"})
    assert (cwd / "evil.py").read_bytes() == b"x = 1\n"
    assert argv[1] == str(cwd / "evil.py")
    assert not (ws.root / "runs" / "r1" / "evil.py").exists()


def test_prepare_command_appends_args(ws: Workspace) -> None:
    argv, cwd = ws.prepare("r1", "c", 1, {"command": ["echo", "a|b"], "args": ["c,d", "e\nf"]})
    assert argv == ["echo", "a|b", "c,d", "e\nf"] and cwd.is_dir()


def test_prepare_needs_file_or_command(ws: Workspace) -> None:
    with pytest.raises(InvalidRequest, match="neither a file nor a command"):
        ws.prepare("r1", "j", 1, {"args": ["x"]})


def test_each_attempt_gets_a_fresh_directory(ws: Workspace) -> None:
    _, cwd1 = ws.prepare("r1", "j", 1, {"command": ["true"]})
    (cwd1 / "leftover").write_text("from attempt 1")
    _, cwd2 = ws.prepare("r1", "j", 2, {"command": ["true"]})
    assert cwd1 != cwd2 and not (cwd2 / "leftover").exists()
    _, again = ws.prepare("r1", "j", 1, {"command": ["true"]})  # a re-run of the same attempt starts clean
    assert again == cwd1 and not (again / "leftover").exists()


def _save_project(ws: Workspace, entries: list) -> str:
    data = make_tar(entries)
    blob_id = hashlib.sha256(data).hexdigest()
    assert not ws.has_blob(blob_id)
    ws.save_blob(blob_id, data)
    assert ws.has_blob(blob_id)
    assert not [p for p in (ws.root / "blobs").iterdir() if ".part" in p.name]
    return blob_id


def test_prepare_project_mode_resolves_file_inside_project(ws: Workspace) -> None:
    blob = _save_project(ws, NORMAL_TREE)
    argv, cwd = ws.prepare("r1", "train", 1, {"file": "steps/train.py", "project": blob, "args": ["-v"]})
    project = ws.root / "runs" / "r1" / "project"
    assert argv == [sys.executable, str(project / "steps" / "train.py"), "-v"]
    assert (project / "steps" / "lib" / "util.py").read_text() == "X = 1\n"
    assert cwd == ws.root / "runs" / "r1" / "attempts" / "train@1"
    argv2, _ = ws.prepare("r1", "sh", 1, {"file": "run.sh", "project": blob})
    assert argv2 == ["bash", str(project / "run.sh")]
    assert not [p for p in (ws.root / "runs" / "r1").iterdir() if ".part" in p.name]


def test_project_extracted_once_per_run(ws: Workspace) -> None:
    blob = _save_project(ws, NORMAL_TREE)
    first = ws.project_dir("r1", blob)
    (first / "marker").write_text("written by a job")
    assert ws.project_dir("r1", blob) == first and (first / "marker").exists()
    other = ws.project_dir("r2", blob)
    assert other != first and not (other / "marker").exists()


@pytest.mark.parametrize("name", ["../outside.py", "../../../../outside.py", "steps/../../outside.py"])
def test_prepare_project_refuses_file_outside(ws: Workspace, name: str) -> None:
    blob = _save_project(ws, NORMAL_TREE)
    (ws.root / "runs" / "r1").mkdir(parents=True, exist_ok=True)
    for parent in [ws.root / "runs" / "r1", ws.root / "runs", ws.root, ws.root.parent]:
        (parent / "outside.py").write_text("print('escaped')\n")  # exists, so only the path check stops it
    with pytest.raises(InvalidRequest, match="outside the project"):
        ws.prepare("r1", "j", 1, {"file": name, "project": blob})


def test_prepare_project_refuses_absolute_file(ws: Workspace, tmp_path: Path) -> None:
    blob = _save_project(ws, NORMAL_TREE)
    outside = tmp_path / "abs.py"
    outside.write_text("print(1)\n")
    with pytest.raises(InvalidRequest, match="outside the project"):
        ws.prepare("r1", "j", 1, {"file": str(outside), "project": blob})


def test_prepare_project_missing_file_or_blob(ws: Workspace) -> None:
    blob = _save_project(ws, NORMAL_TREE)
    with pytest.raises(InvalidRequest, match="not in the project archive"):
        ws.prepare("r1", "j", 1, {"file": "steps/nope.py", "project": blob})
    with pytest.raises(InvalidRequest, match="not in the project archive"):
        ws.prepare("r1", "j", 1, {"file": "steps", "project": blob})  # a directory is not a script
    with pytest.raises(InvalidRequest, match="not on this worker"):
        ws.prepare("r2", "j", 1, {"file": "steps/train.py", "project": "0" * 64})


def test_unsafe_project_is_refused_and_not_installed(ws: Workspace) -> None:
    blob = _save_project(ws, NORMAL_TREE + [("../../escape.py", "file", "evil")])
    with pytest.raises(InvalidRequest, match="unsafe path"):
        ws.prepare("r1", "j", 1, {"file": "steps/train.py", "project": blob})
    assert not (ws.root / "runs" / "r1" / "project").exists()
    assert not any(p.name == "escape.py" for p in ws.root.parent.rglob("escape.py"))
    assert os.listdir(ws.root / "runs" / "r1" / "attempts" / "j@1") == []


# ---- issue 8: archive limits, workspace clean-up ---------------------------------------------------------


def zeros_tar(mb: int) -> bytes:
    """A project with one very compressible file of ``mb`` MiB (a few KiB packed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = mb << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return buf.getvalue()


def test_a_zip_bomb_is_refused_before_anything_big_is_written(tmp_path: Path) -> None:
    from titan_zmq.errors import JobRefused
    from titan_zmq.worker.workspace import Limits

    data = zeros_tar(8)
    limits = Limits(ratio=10, ratio_free=1 << 20)  # 8 MiB from a few KiB packed: far over 10x
    with pytest.raises(JobRefused, match="unpacks to more than"):
        extract_safely(data, tmp_path, limits)
    assert listing(tmp_path) == set()
    with pytest.raises(JobRefused, match="unpacks to more than"):  # the total cap alone
        extract_safely(data, tmp_path, Limits(extracted=4 << 20, ratio=0))
    with pytest.raises(JobRefused, match="over this worker's limit"):
        extract_safely(data, tmp_path, Limits(archive=len(data) - 1))
    extract_safely(data, tmp_path, Limits(ratio=0))  # within the limits: extracted
    assert (tmp_path / "big.bin").stat().st_size == 8 << 20


def test_default_limits_refuse_a_200mb_compressible_file_but_pass_small_projects() -> None:
    from titan_zmq.worker.workspace import Limits

    limits = Limits()
    assert limits.unpacked_cap(200 * 1024) < 200 << 20  # 200 MiB of zeros packs to ~200 KiB
    assert limits.unpacked_cap(10 * 1024) >= 1 << 20  # small, compressible projects pass


def test_save_blob_refuses_an_oversized_archive(tmp_path: Path) -> None:
    from titan_zmq.errors import JobRefused
    from titan_zmq.worker.workspace import Limits

    ws = Workspace(tmp_path / "root", Limits(archive=100))
    with pytest.raises(JobRefused):
        ws.save_blob("abc", b"x" * 101)
    assert list((ws.root / "blobs").iterdir()) == []


def test_an_attempt_workspace_goes_and_a_failed_one_is_kept_then_swept(ws: Workspace) -> None:
    _, ok = ws.prepare("r", "ok", 1, {"command": ["true"]})
    _, bad = ws.prepare("r", "bad", 1, {"command": ["false"]})
    (bad / "debug.txt").write_text("why")
    ws.finish_attempt("r", "ok", 1, failed=False, keep_failed=3600)
    ws.finish_attempt("r", "bad", 1, failed=True, keep_failed=3600)
    assert not ok.exists() and not bad.exists()
    kept = ws.root / "failed" / "r" / "bad@1"
    assert (kept / "debug.txt").read_text() == "why"
    ws.finish_attempt("r", "gone", 1, failed=True, keep_failed=3600)  # nothing there: no error
    assert ws.sweep_failed(3600) == 0 and kept.exists()
    assert ws.sweep_failed(3600, now=kept.stat().st_mtime + 3601) == 1
    assert not (ws.root / "failed" / "r").exists()
    _, bad2 = ws.prepare("r", "bad", 2, {"command": ["false"]})
    ws.finish_attempt("r", "bad", 2, failed=True, keep_failed=0)  # 0: failed ones are not kept
    assert not bad2.exists() and not (ws.root / "failed" / "r").exists()


def test_a_finished_run_leaves_nothing(ws: Workspace) -> None:
    ws.prepare("r", "a", 1, {"command": ["true"]})
    (ws.shared_dir("r") / "data.csv").write_text("1,2\n")
    ws.remove_run("r")
    assert not ws.run_dir("r").exists()
    ws.remove_run("never-seen")  # no error


# ---- cheap attempt directories (worker/reuse.py) -----------------------------------------------


def test_a_released_attempt_directory_is_emptied_and_reused_by_the_runs_next_attempt(ws: Workspace) -> None:
    _, first = ws.prepare("r", "a", 1, {"file": "x.py", "script": b"print(1)\n"})
    (first / "out.txt").write_text("result")
    first_inode = first.stat().st_ino
    assert ws.release_attempt("r", "a", 1)
    assert not first.exists()
    spares = [p.name for p in (ws.root / "runs" / "r" / "attempts").iterdir()]
    assert len(spares) == 1 and spares[0].startswith("@spare-")  # '@' never starts a job id
    _, second = ws.prepare("r", "b", 1, {"command": ["true"]})
    assert second.name == "b@1" and second.stat().st_ino == first_inode  # renamed into place, not made
    assert list(second.iterdir()) == []  # and empty: nothing of attempt a reaches b
    _, other = ws.prepare("other-run", "c", 1, {"command": ["true"]})
    assert other.stat().st_ino != first_inode  # spares stay within their run


def test_a_tree_or_many_files_are_not_released_on_the_loop(ws: Workspace) -> None:
    _, deep = ws.prepare("r", "deep", 1, {"command": ["true"]})
    (deep / "sub").mkdir()
    _, many = ws.prepare("r", "many", 1, {"command": ["true"]})
    for i in range(10):
        (many / f"f{i}").write_text("x")
    assert not ws.release_attempt("r", "deep", 1) and deep.exists()  # left for the clean-up thread
    assert not ws.release_attempt("r", "many", 1) and len(list(many.iterdir())) == 10
    assert ws.release_attempt("r", "never-ran", 1)  # nothing there: nothing to do


def test_spares_per_run_are_bounded_and_go_with_the_run(ws: Workspace) -> None:
    from titan_zmq.worker.reuse import SPARES_PER_RUN

    for i in range(SPARES_PER_RUN + 5):
        ws.prepare("r", f"j{i}", 1, {"command": ["true"]})
    for i in range(SPARES_PER_RUN + 5):
        assert ws.release_attempt("r", f"j{i}", 1)
    assert len(list((ws.root / "runs" / "r" / "attempts").iterdir())) == SPARES_PER_RUN
    ws.remove_run("r")
    assert not ws.run_dir("r").exists()
    _, fresh = ws.prepare("r", "late", 1, {"command": ["true"]})  # a forgotten pool hands out nothing stale
    assert fresh.is_dir()


def test_a_script_is_written_once_per_run_and_linked_after(ws: Workspace) -> None:
    spec = {"file": "job.py", "script": b"print('hi')\n"}
    _, one = ws.prepare("r", "a", 1, spec)
    _, two = ws.prepare("r", "b", 1, spec)
    assert (one / "job.py").read_bytes() == (two / "job.py").read_bytes() == b"print('hi')\n"
    assert (one / "job.py").stat().st_ino == (two / "job.py").stat().st_ino  # a link, not a second write
    _, other = ws.prepare("r", "c", 1, {"file": "job.py", "script": b"print('other')\n"})
    assert (other / "job.py").read_bytes() == b"print('other')\n"  # keyed by content, not by name


def test_a_job_that_changes_its_script_does_not_pass_the_change_on(ws: Workspace) -> None:
    spec = {"file": "job.py", "script": b"print('original')\n"}
    _, one = ws.prepare("r", "a", 1, spec)
    _, two = ws.prepare("r", "b", 1, spec)
    assert (two / "job.py").stat().st_ino == (one / "job.py").stat().st_ino
    with open(two / "job.py", "r+b") as f:  # the job edits its own file in place, same size
        f.write(b"print('EDITED!!')\n")
    _, three = ws.prepare("r", "c", 1, spec)
    assert (three / "job.py").read_bytes() == b"print('original')\n"
    assert (three / "job.py").stat().st_ino != (two / "job.py").stat().st_ino
    _, four = ws.prepare("r", "d", 1, spec)  # the fresh copy is the run's copy from now on
    assert (four / "job.py").stat().st_ino == (three / "job.py").stat().st_ino
