"""Wire protocol: header layout, encode/decode round trips, and every malformed-frame error code."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest

from titan_zmq import protocol
from titan_zmq.defaults import MAX_BODY_BYTES
from titan_zmq.errors import ErrorCode, ProtocolError
from titan_zmq.protocol import Flag, Message, Op, decode, encode

# The opcode values the design contract pins (kept from the original Titan).
PINNED_OPS = {
    "HEARTBEAT": 0x01, "REGISTER": 0x02, "SUBMIT_JOB": 0x03, "SUBMIT_DAG": 0x04, "STOP": 0x07, "STATS": 0x08,
    "JOB_COMPLETE": 0x12, "GET_LOGS": 0x16, "LOG_BATCH": 0x17, "ACK": 0x50, "ERROR": 0x51, "DATA": 0x52,
    "UPLOAD_ASSET": 0x53, "FETCH_ASSET": 0x54, "GET_JOB_STATUS": 0x55, "CANCEL_JOB": 0x56,
    "KV_SET": 0x60, "KV_GET": 0x61, "KV_SADD": 0x62, "KV_SMEMBERS": 0x63,
}
VALID_OPS = {int(op) for op in Op}


def raw_frame(body: bytes, op: int = Op.ACK, version: int = 1, flags: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">BBBBI", version, op, flags, 0, len(body) if length is None else length) + body


def expect_error(frame: bytes, code: str, **kw: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(frame, **kw)
    assert info.value.code == code, f"{info.value.code} != {code}: {info.value.message}"
    assert info.value.message, "a ProtocolError must carry a message"
    return info.value


# ---- layout and round trips -------------------------------------------------------------------


def test_header_constants() -> None:
    assert protocol.VERSION == 1
    assert protocol.HEADER.format == ">BBBBI"
    assert protocol.HEADER_SIZE == 8


def test_pinned_opcode_values() -> None:
    for name, value in PINNED_OPS.items():
        assert Op[name] == value, name
    assert len(VALID_OPS) == len(list(Op)), "two ops share a value"


@pytest.mark.parametrize("op", list(Op), ids=lambda o: o.name)
def test_round_trip_every_op(op: Op) -> None:
    body = {"rid": 7, "op_name": op.name, "n": [1, 2.5, None, True], "blob": b"\x00\xff"}
    frame = encode(op, body, Flag.REPLY)
    msg = decode(frame)
    assert msg.op is op
    assert msg.body == body
    assert msg.flags == Flag.REPLY
    assert msg.rid == 7


def test_header_layout_bytes() -> None:
    body = {"rid": 1, "k": "v"}
    frame = encode(Op.SUBMIT_DAG, body, Flag.REPLY | Flag.ERROR)
    payload = msgpack.packb(body, use_bin_type=True)
    assert frame[0] == 1  # version
    assert frame[1] == 0x04  # op
    assert frame[2] == 0x03  # flags: REPLY | ERROR
    assert frame[3] == 0  # reserved
    assert struct.unpack(">I", frame[4:8])[0] == len(payload)
    assert frame[8:] == payload
    assert len(frame) == 8 + len(payload)


def test_empty_body_encodes_as_empty_map_and_zero_length_decodes_to_empty_map() -> None:
    frame = encode(Op.HEARTBEAT)
    assert decode(frame).body == {}
    msg = decode(raw_frame(b"", op=Op.HEARTBEAT))
    assert msg.op is Op.HEARTBEAT and msg.body == {} and msg.rid is None


def test_reply_echoes_rid_and_sets_reply_flag() -> None:
    req = decode(encode(Op.GET_JOB_STATUS, {"rid": "abc-1", "run_id": "r"}))
    out = decode(protocol.reply(req, {"state": "RUNNING"}, Op.DATA))
    assert out.op is Op.DATA
    assert out.rid == "abc-1"
    assert out.body["state"] == "RUNNING"
    assert out.flags & Flag.REPLY and not out.is_error


def test_error_frame_has_code_message_and_flags() -> None:
    out = decode(protocol.error(ErrorCode.NOT_FOUND, "no such run", rid=5, run_id="r1"))
    assert out.op is Op.ERROR
    assert out.is_error and out.flags & Flag.REPLY
    assert out.body == {"code": "not_found", "message": "no such run", "rid": 5, "run_id": "r1"}
    exc = ProtocolError(ErrorCode.BAD_BODY, "bad", rid=9)
    again = decode(protocol.error_for(exc))
    assert again.body["code"] == "bad_body" and again.rid == 9


def test_tricky_values_survive_round_trip() -> None:
    big = bytes(random.Random(1).getrandbits(8) for _ in range(1 << 10)) * (1 << 10)  # 1 MiB
    body = {
        "rid": 1,
        "pipes": "a|b|c||",
        "commas": "x,y,,z",
        "newlines": "line1\nline2\r\n\n",
        "unicode": "ünïcødé ✓ 🚀 日本語",
        "nul": "a\x00b",
        "list": ["|", ",", "\n", "a|b,c\nd"],
        "nested": {"k|1": {"k,2": ["v\n"]}},
        "big": big,
        "int_keys": {1: "one", -2: "minus two"},
    }
    msg = decode(encode(Op.KV_SET, body))
    assert msg.body == body
    assert isinstance(msg.body["big"], bytes) and len(msg.body["big"]) == 1 << 20
    assert isinstance(msg.body["unicode"], str)


# ---- malformed frames ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7])
def test_short_frame(n: int) -> None:
    expect_error(encode(Op.ACK, {"a": 1})[:n], ErrorCode.SHORT_FRAME)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version(version: int) -> None:
    expect_error(raw_frame(msgpack.packb({}), version=version), ErrorCode.BAD_VERSION)


def test_length_mismatch_both_ways() -> None:
    body = msgpack.packb({"a": 1})
    expect_error(raw_frame(body, length=len(body) + 1), ErrorCode.LENGTH_MISMATCH)
    expect_error(raw_frame(body, length=len(body) - 1), ErrorCode.LENGTH_MISMATCH)
    expect_error(raw_frame(body + b"\x00", length=len(body)), ErrorCode.LENGTH_MISMATCH)
    expect_error(encode(Op.ACK, {"a": 1})[:-1], ErrorCode.LENGTH_MISMATCH)


@pytest.mark.parametrize("op", [0x00, 0x05, 0x13, 0x4F, 0x9F, 0xFF])
def test_unknown_op(op: int) -> None:
    assert op not in VALID_OPS
    err = expect_error(raw_frame(msgpack.packb({}), op=op), ErrorCode.UNKNOWN_OP)
    assert f"{op:02x}" in err.message


def test_oversize_with_small_cap() -> None:
    frame = encode(Op.KV_SET, {"v": b"x" * 200})
    expect_error(frame, ErrorCode.OVERSIZE, max_body=100)
    assert decode(frame, max_body=len(frame) - 8).body["v"] == b"x" * 200  # exactly at the cap is fine


def test_oversize_refused_from_header_alone() -> None:
    # A header claiming more than the cap is refused before the frame length is even considered.
    expect_error(raw_frame(b"", length=MAX_BODY_BYTES + 1), ErrorCode.OVERSIZE)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # array of 2 with only one element
        b"\x81\xa1a",  # map with a key but no value
        b"\xa3ab",  # truncated str
        b"\xa2\xff\xfe",  # str that is not UTF-8
        msgpack.packb({}) + b"\x00",  # trailing data
    ],
)
def test_bad_msgpack(body: bytes) -> None:
    err = expect_error(raw_frame(body, op=Op.SUBMIT_JOB), ErrorCode.BAD_BODY)
    assert err.op == Op.SUBMIT_JOB


@pytest.mark.parametrize("value", [[1, 2, 3], 42, "text", b"bytes", None, 1.5, True])
def test_non_map_body(value: object) -> None:
    err = expect_error(raw_frame(msgpack.packb(value, use_bin_type=True)), ErrorCode.BAD_BODY)
    assert "map" in err.message


def test_deeply_nested_body_is_bad_body_not_a_crash() -> None:
    body = b"\x91" * 100_000 + b"\xc0"  # 100k nested one-element arrays
    expect_error(raw_frame(b"\x81\xa1k" + body), ErrorCode.BAD_BODY)
    expect_error(raw_frame(body), ErrorCode.BAD_BODY)


def test_unhashable_map_key_is_bad_body() -> None:
    body = b"\x81\x91\x01\x01"  # {[1]: 1}
    expect_error(raw_frame(body), ErrorCode.BAD_BODY)


# ---- fuzz -----------------------------------------------------------------------------------------


def _random_msgpack(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 1:
        return rng.random()
    if kind == 2:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF)])) for _ in range(rng.randrange(8)))
    if kind == 3:
        return rng.randbytes(rng.randrange(16))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return [_random_msgpack(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(rng.randrange(100)): _random_msgpack(rng, depth + 1) for _ in range(rng.randrange(4))}


def _fuzz_frame(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(40))
    if kind == 1:  # valid header, random body bytes
        body = rng.randbytes(rng.randrange(64))
        return raw_frame(body, op=rng.choice(sorted(VALID_OPS)), flags=rng.randrange(256))
    if kind == 2:  # valid header, random (valid) msgpack value of any type
        body = msgpack.packb(_random_msgpack(rng), use_bin_type=True)
        return raw_frame(body, op=rng.choice(sorted(VALID_OPS)))
    if kind == 3:  # truncated valid frame
        frame = encode(rng.choice(list(Op)), {"rid": rng.randrange(1000), "v": _random_msgpack(rng)})
        return frame[: rng.randrange(len(frame))]
    if kind == 4:  # deep nesting (lists or maps)
        n = rng.choice([1_000, 10_000, 100_000])
        unit = b"\x91" if rng.random() < 0.5 else b"\x81\x00"
        return raw_frame(unit * n + b"\xc0", op=Op.SUBMIT_DAG)
    # valid frame with random byte flips
    frame = bytearray(encode(rng.choice(list(Op)), {"rid": 1, "v": _random_msgpack(rng)}))
    for _ in range(rng.randrange(1, 4)):
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    return bytes(frame)


def test_fuzz_only_protocol_errors() -> None:
    rng = random.Random(20240611)
    outcomes = {"ok": 0}
    for i in range(5000):
        frame = _fuzz_frame(rng)
        try:
            msg = decode(frame)
        except ProtocolError as exc:
            assert exc.code in {
                ErrorCode.SHORT_FRAME, ErrorCode.BAD_VERSION, ErrorCode.LENGTH_MISMATCH,
                ErrorCode.UNKNOWN_OP, ErrorCode.OVERSIZE, ErrorCode.BAD_BODY,
            }, (i, frame[:40])
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
        except Exception as exc:  # anything else is the failure under test
            pytest.fail(f"frame {i} ({frame[:40]!r}...) raised {type(exc).__name__}: {exc}")
        else:
            assert isinstance(msg, Message) and isinstance(msg.body, dict) and isinstance(msg.op, Op)
            outcomes["ok"] += 1
    # the generator really exercised the decoder's branches
    for code in ("ok", ErrorCode.SHORT_FRAME, ErrorCode.BAD_VERSION, ErrorCode.LENGTH_MISMATCH, ErrorCode.BAD_BODY):
        assert outcomes.get(code, 0) > 0, outcomes
