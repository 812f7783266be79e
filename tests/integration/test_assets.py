"""Assets move in pieces (issue 8): bounded memory on the CLI and the broker, a clear limit, and a
half-uploaded asset is never served."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.protocol import Op

MB = 1024 * 1024

# Runs the `titan` CLI as a child and prints its exit status and peak RSS (kB), then its output.
MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    out = subprocess.run([sys.executable, "-m", "client.cli", *sys.argv[1:]], capture_output=True, text=True)
    print(out.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(out.stdout + out.stderr)
""")


def titan_measured(broker: str, *args: str) -> tuple[int, int, str]:
    """Run `titan ARGS`; (exit status, peak RSS in bytes, output)."""
    env = dict(os.environ, TITAN_BROKER=broker)
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=240)
    head, _, rest = out.stdout.partition("\n")
    code, peak_kb = head.split()
    return int(code), int(peak_kb) * 1024, rest


def random_file(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MB):
            block = os.urandom(MB)
            sha.update(block)
            f.write(block)
    return sha.hexdigest()


@pytest.mark.timeout(300)
def test_a_file_bigger_than_the_frame_cap_uploads_and_downloads_with_bounded_memory(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=0)
    src = tmp_path / "big.bin"
    digest = random_file(src, 80 * MB)  # over the 64 MiB frame cap: one frame could not carry it
    with cluster.client() as c:
        broker_before = c.stats()["rss_bytes"]
    code, peak, out = titan_measured(cluster.broker_addr, "upload", str(src), "--name", "data/big.bin")
    assert code == 0, out
    assert peak < 150 * MB, f"titan upload peaked at {peak / MB:.0f} MB"
    dest = tmp_path / "back.bin"
    code, peak, out = titan_measured(cluster.broker_addr, "download", "data/big.bin", str(dest))
    assert code == 0, out
    assert peak < 150 * MB, f"titan download peaked at {peak / MB:.0f} MB"
    assert digest in out
    sha = hashlib.sha256()
    with dest.open("rb") as f:
        while block := f.read(MB):
            sha.update(block)
    assert sha.hexdigest() == digest
    assert not list(tmp_path.glob(".back.bin*"))  # no partial file left behind
    with cluster.client() as c:
        grown = c.stats()["rss_bytes"] - broker_before
    assert grown < 60 * MB, f"broker RSS grew by {grown / MB:.0f} MB"


@pytest.mark.timeout(120)
def test_an_asset_over_the_limit_is_refused_clearly(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=0, broker_args=["--max-asset-bytes", str(MB)])
    src = tmp_path / "two.bin"
    random_file(src, 2 * MB)
    code, _, out = titan_measured(cluster.broker_addr, "upload", str(src))
    assert code == 2, out
    assert "over the broker's limit of 1048576 bytes" in out and "--max-asset-bytes" in out, out
    with cluster.client() as c, pytest.raises(NotFound):
        c.fetch_artifact("two.bin")


@pytest.mark.timeout(120)
def test_a_half_uploaded_asset_is_never_served_and_a_replacement_is_atomic(make_cluster):
    cluster = make_cluster(workers=0)
    with cluster.client() as c:
        first = c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 3000, "offset": 0, "data": b"1" * 1000})
        assert not first["done"]
        with pytest.raises(NotFound):
            c.fetch_artifact("a")  # one piece of three is in: nothing is served
        c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 3000, "offset": 1000, "data": b"2" * 1000,
                                  "upload": first["upload"]})
        with pytest.raises(InvalidRequest, match="offset"):  # a piece out of order is refused
            c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 3000, "offset": 500, "data": b"x",
                                      "upload": first["upload"]})
        done = c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 3000, "offset": 2000, "data": b"3" * 1000,
                                         "upload": first["upload"]})
        assert done["done"] and done["sha256"] == hashlib.sha256(b"1" * 1000 + b"2" * 1000 + b"3" * 1000).hexdigest()
        c.chunk_bytes = 700  # pieces of 700 bytes from here on
        assert c.fetch_artifact("a") == b"1" * 1000 + b"2" * 1000 + b"3" * 1000
        second = c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 11, "offset": 0, "data": b"new"})
        assert c.fetch_artifact("a") == b"1" * 1000 + b"2" * 1000 + b"3" * 1000  # the old one until complete
        c._call(Op.UPLOAD_ASSET, {"name": "a", "size": 11, "offset": 3, "data": b"-version", "upload": second["upload"]})
        assert c.fetch_artifact("a") == b"new-version"
        assert c.store_keys("chunk/") and len(c.store_keys("chunk/")) == 2  # the old version's pieces are gone
        # the single-request form still works for a small asset (old clients)
        c._call(Op.UPLOAD_ASSET, {"name": "small", "data": b"whole"})
        assert c._call(Op.FETCH_ASSET, {"name": "small"})["data"] == b"whole"
        assert c.publish_artifact("out.txt", b"x" * 2000, run_id="r1") == "runs/r1/out.txt"
        assert c.get_artifact("out.txt", run_id="r1") == b"x" * 2000
