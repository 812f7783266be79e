"""AOF framing, torn-tail recovery, corruption detection, repair and rewrite."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from titan_zmq.errors import AOFCorrupt
from titan_zmq.store.aof import AOF, RECORD_HEADER, encode_record, repair

RECORDS = [[["set", "a", "1", None]], [["sadd", "s", b"\x00|,\n"]], [["set", "big", "é" * 5000, 12.5]]]


def write(path: Path, records: list) -> list[int]:
    """Write records; return the byte offset of each."""
    offsets = []
    with AOF(path) as aof:
        for record in records:
            offsets.append(aof.size)
            aof.append([record])
    return offsets


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    write(path, RECORDS)
    with AOF(path) as aof:
        assert list(aof.replay()) == RECORDS
        aof.append([["more"], ["still more"]])  # several records in one append
    with AOF(path, fsync="no") as aof:
        assert list(aof.replay()) == [*RECORDS, ["more"], ["still more"]]


def test_record_layout(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    write(path, [["x"]])
    raw = path.read_bytes()
    length, _crc = RECORD_HEADER.unpack(raw[:8])
    assert length == len(raw) - 8
    assert raw == encode_record(["x"])


def test_missing_file_is_empty(tmp_path: Path) -> None:
    with AOF(tmp_path / "sub" / "store.aof") as aof:
        assert list(aof.replay()) == []
        assert aof.size == 0


@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
def test_policies_write_through(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "store.aof"
    aof = AOF(path, fsync=policy)
    aof.append([["x"]])
    aof.tick()
    # every policy flushes to the OS before append returns, so another reader sees the record
    assert path.stat().st_size == aof.size == len(encode_record(["x"]))
    aof.close()


def test_bad_policy_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        AOF(tmp_path / "store.aof", fsync="sometimes")


def test_everysec_fsyncs_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    aof = AOF(tmp_path / "store.aof", fsync="everysec")
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    for _ in range(50):
        aof.append([["x"]])
    assert calls == []  # less than a second since open
    aof._last_fsync -= 1.0  # pretend a second passed
    aof.tick()
    assert len(calls) == 1
    aof.tick()
    assert len(calls) == 1  # nothing new to sync
    monkeypatch.setattr(os, "fsync", real_fsync)
    aof.close()


def test_always_fsyncs_each_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    aof = AOF(tmp_path / "store.aof", fsync="always")
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    for _ in range(3):
        aof.append([["x"], ["y"]])
    assert len(calls) == 3  # one fsync per request, not per record
    monkeypatch.setattr(os, "fsync", real_fsync)
    aof.close()


def test_truncated_tail_is_cut_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.aof"
    offsets = write(path, RECORDS)
    full = path.read_bytes()
    last = offsets[-1]
    # inside the last header, at the start of its payload, and inside its payload
    for cut in [last + 1, last + 4, last + 7, last + 8, last + 9, len(full) // 2 + last // 2, len(full) - 1]:
        path.write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING), AOF(path) as aof:
            assert list(aof.replay()) == RECORDS[:-1], f"cut at {cut}"
            assert aof.size == last
        assert path.stat().st_size == last, f"cut at {cut}: file not truncated"
        assert any("truncating" in r.getMessage() for r in caplog.records), f"cut at {cut}: no warning"


def test_appends_after_tail_cut_are_readable(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    write(path, RECORDS)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3)
    with AOF(path) as aof:
        list(aof.replay())
        aof.append([["after"]])
    with AOF(path) as aof:
        assert list(aof.replay()) == [*RECORDS[:-1], ["after"]]


def test_crc_mismatch_on_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    offsets = write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with AOF(path) as aof:
        assert list(aof.replay()) == RECORDS[:-1]
    assert path.stat().st_size == offsets[-1]


@pytest.mark.parametrize("where", ["payload", "crc"])
def test_corrupt_middle_record_raises_with_offset(tmp_path: Path, where: str) -> None:
    path = tmp_path / "store.aof"
    offsets = write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[offsets[1] + (10 if where == "payload" else 5)] ^= 0x55
    path.write_bytes(bytes(raw))
    with AOF(path) as aof, pytest.raises(AOFCorrupt) as info:
        list(aof.replay())
    message = str(info.value)
    assert f"byte offset {offsets[1]}" in message
    assert "titan-store --repair" in message
    assert path.stat().st_size == len(raw)  # replay never cuts good data after the damage


def test_implausible_length_in_middle_is_corruption_not_a_tail(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    offsets = write(path, RECORDS)
    raw = bytearray(path.read_bytes())
    raw[offsets[1]] = 0xFF  # length's top byte: ~4 GiB
    path.write_bytes(bytes(raw))
    with AOF(path) as aof, pytest.raises(AOFCorrupt, match=f"offset {offsets[1]}"):
        list(aof.replay())


def test_undecodable_record_raises(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    bad = b"\xc1"  # never valid msgpack, but with a correct CRC
    import zlib

    path.write_bytes(
        encode_record(["ok"]) + RECORD_HEADER.pack(1, zlib.crc32(bad)) + bad + encode_record(["x"])
    )
    with AOF(path) as aof, pytest.raises(AOFCorrupt, match=f"offset {len(encode_record(['ok']))}"):
        list(aof.replay())


def test_repair_cuts_at_last_good_record(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    offsets = write(path, RECORDS)
    size = path.stat().st_size
    raw = bytearray(path.read_bytes())
    raw[offsets[1] + 10] ^= 0x55
    path.write_bytes(bytes(raw))
    assert repair(path) == size - offsets[1]
    assert repair(path) == 0
    with AOF(path) as aof:
        assert list(aof.replay()) == RECORDS[:1]
    assert repair(tmp_path / "absent.aof") == 0


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    aof = AOF(path)
    for i in range(200):
        aof.append([[["set", "k", str(i), None]]])
    before = aof.size
    after = aof.rewrite([[["set", "k", "199", None]]])
    assert after < before and after == path.stat().st_size == aof.size
    assert not (tmp_path / "store.aof.tmp").exists()
    aof.append([[["set", "j", "1", None]]])  # still appending, to the new file
    aof.close()
    with AOF(path) as again:
        assert list(again.replay()) == [[["set", "k", "199", None]], [["set", "j", "1", None]]]


def test_failed_rewrite_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    aof = AOF(path)
    aof.append([["keep"]])

    def broken():
        yield ["partial"]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        aof.rewrite(broken())
    assert not (tmp_path / "store.aof.tmp").exists()
    aof.append([["after"]])
    aof.close()
    with AOF(path) as again:
        assert list(again.replay()) == [["keep"], ["after"]]


def test_stale_tmp_from_crashed_rewrite_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "store.aof"
    write(path, RECORDS)
    (tmp_path / "store.aof.tmp").write_bytes(b"half a rewrite")
    with AOF(path) as aof:
        assert list(aof.replay()) == RECORDS
    assert not (tmp_path / "store.aof.tmp").exists()
