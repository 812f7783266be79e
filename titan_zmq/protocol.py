"""The wire protocol: one place for the frame layout, the op codes and encode/decode.

Every message between titan processes is one ZeroMQ frame (a ROUTER adds the peer
identity frame in front of it)::

    offset 0  version  u8   = 1
    offset 1  op       u8   Op IntEnum
    offset 2  flags    u8   bit0 REPLY, bit1 ERROR; others 0
    offset 3  reserved u8   = 0
    offset 4  length   u32  big-endian, length of the body in bytes
    offset 8  body     msgpack map (never pickle)

Requests carry a request id under ``rid``; replies echo it, so one socket can have
many requests in flight.  There are no in-band delimiters: every field is a msgpack
value, so user data may contain anything.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

import msgpack

from titan_zmq.defaults import MAX_BODY_BYTES
from titan_zmq.errors import BadField, ErrorCode, ProtocolError

VERSION = 1
HEADER = struct.Struct(">BBBBI")
HEADER_SIZE = HEADER.size  # 8


class Op(IntEnum):
    """Operation codes; original Titan values kept where the meaning is the same."""

    HEARTBEAT = 0x01  # liveness ping, both directions; also "ping" for clients and the store
    REGISTER = 0x02  # worker -> broker: who I am, what I can run, what I am running
    SUBMIT_JOB = 0x03  # client -> broker: one job (a run of one job)
    SUBMIT_DAG = 0x04  # client -> broker: a run of several jobs
    STOP = 0x07  # client -> broker/store: shut down cleanly
    STATS = 0x08  # client -> broker/store: counters
    JOB_COMPLETE = 0x12  # worker -> broker: an attempt ended (kept in the worker outbox until ACK)
    GET_LOGS = 0x16  # client -> broker: the complete log of a job
    LOG_BATCH = 0x17  # worker -> broker: a batch of output lines with a sequence number
    DISPATCH = 0x20  # broker -> worker: run this attempt
    JOB_STARTED = 0x21  # worker -> broker: the process of an attempt started
    KILL_JOB = 0x22  # broker -> worker: kill this attempt's process group
    ADD_JOBS = 0x23  # client (often a running job) -> broker: add jobs to an existing run
    LIST_WORKERS = 0x24  # client -> broker: the worker registry
    LIST_RUNS = 0x25  # client -> broker: known runs, newest first
    DISCONNECT = 0x26  # worker -> broker: leaving cleanly
    RUN_FINISHED = 0x27  # broker -> workers: a run ended; its directories on the worker's host can go
    LIST_GATES = 0x28  # client -> broker: approval gates waiting for a decision, then decided ones
    DECIDE_GATE = 0x29  # client -> broker: approve or reject a waiting gate (replied to once journaled)
    LIST_AGENT_RUNS = 0x2A  # client -> broker: agent runs (runs grouped by agent_run_id)
    GET_AGENT_RUN = 0x2B  # client -> broker: one agent run and its stages
    SERVICE_READY = 0x40  # worker -> broker: a service's health check passed (its host, port, pid)
    LIST_SERVICES = 0x41  # client -> broker: every known service with its state and address
    STOP_SERVICE = 0x42  # client -> broker: stop a service for good (SIGTERM, SIGKILL after stop_grace)
    RESTART_SERVICE = 0x43  # client -> broker: restart a live service now
    ACK = 0x50  # generic positive reply
    ERROR = 0x51  # generic error reply: {"code", "message"}
    DATA = 0x52  # generic reply carrying data
    UPLOAD_ASSET = 0x53  # client -> broker: store a named blob
    FETCH_ASSET = 0x54  # client/worker -> broker: fetch a named blob
    GET_JOB_STATUS = 0x55  # client -> broker: the state of a run and its jobs
    CANCEL_JOB = 0x56  # client -> broker: cancel a job (and descendants) or a whole run
    KV_SET = 0x60  # key -> value (optional ttl seconds)
    KV_GET = 0x61
    KV_SADD = 0x62  # returns 1 when the member is new, 0 when present
    KV_SMEMBERS = 0x63
    KV_DEL = 0x64
    KV_INCR = 0x65
    KV_SREM = 0x66
    KV_KEYS = 0x67  # keys (and set names) by prefix
    KV_BATCH = 0x68  # several mutations applied and journaled as one unit
    KV_COMPACT = 0x69  # rewrite the append-only file
    SCHEDULE_ADD = 0x70  # client -> broker: create or replace a schedule (cron + the pipeline it runs)
    SCHEDULE_LIST = 0x71  # client -> broker: every schedule with its next fire time and recent runs
    SCHEDULE_SET = 0x72  # client -> broker: pause or resume a schedule
    SCHEDULE_REMOVE = 0x73  # client -> broker: delete a schedule (its runs stay)
    SCHEDULE_RUN_NOW = 0x74  # client -> broker: fire a schedule once, now
    WORKER_DRAIN = 0x75  # client -> broker -> worker: no new jobs; exit 0 once the running ones are done
    WORKER_STOP = 0x76  # client -> broker -> worker: drain and exit, or (now) kill its jobs (re-queued) and exit
    WORKER_LAUNCH = 0x77  # client -> broker: start a new worker process (on the broker's host, or on a worker)
    AUTOSCALE_REPORT = 0x78  # autoscaler -> broker: its pools and decisions (shown in stats and the UI)


class Flag(IntFlag):
    NONE = 0
    REPLY = 0x01
    ERROR = 0x02


def body_field(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], default: Any = ...) -> Any:
    """``body[name]`` checked against ``kinds`` (bools never pass as numbers); BadField otherwise.

    The one typed-field check for every server (broker and store); :meth:`Message.field` is the
    same check naming the op.
    """
    if name not in body:
        if default is ...:
            raise BadField(f"missing field '{name}'")
        return default
    value = body[name]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        want = " or ".join(k.__name__ for k in allowed)
        raise BadField(f"field '{name}' must be {want}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Message:
    op: Op
    body: dict[str, Any] = field(default_factory=dict)
    flags: int = 0

    @property
    def rid(self) -> Any:
        return self.body.get("rid")

    @property
    def is_error(self) -> bool:
        return bool(self.flags & Flag.ERROR)

    def field(self, name: str, kinds: type | tuple[type, ...], default: Any = ...) -> Any:
        """A body field of the right type, or BadField naming the op and the field."""
        try:
            return body_field(self.body, name, kinds, default)
        except BadField as exc:
            raise BadField(f"{self.op.name}: {exc}") from None


Handler = Callable[[bytes, Message], bytes | None]  # a ROUTER request: (peer identity, message) -> reply or None


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode(op: int, body: dict[str, Any] | None = None, flags: int = 0) -> bytes:
    payload = pack(body if body is not None else {})
    return HEADER.pack(VERSION, int(op), int(flags), 0, len(payload)) + payload


def reply(request: Message, body: dict[str, Any] | None = None, op: Op = Op.ACK) -> bytes:
    """Encode a reply to ``request`` echoing its request id."""
    out = dict(body or {})
    if request.rid is not None:
        out["rid"] = request.rid
    return encode(op, out, Flag.REPLY)


def error(code: str, message: str, rid: Any = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    if rid is not None:
        body["rid"] = rid
    return encode(Op.ERROR, body, Flag.REPLY | Flag.ERROR)


def error_for(exc: ProtocolError) -> bytes:
    return error(exc.code, exc.message, exc.rid)


def read_rid(body: bytes | memoryview) -> Any:
    """The request id of a body that does not decode as a whole, or None.

    Reads the map header and the entries up to ``rid`` only (senders put it first, see
    :class:`titan_zmq.reqlink.RequestLink`), so an error reply to a body that is too deep, truncated,
    too long or has junk further on still reaches the request that caused it: the sender's link
    raises at once instead of timing out (and, for the broker's store link, calling the store down).
    """
    try:
        unpacker = msgpack.Unpacker(io.BytesIO(body), raw=False, strict_map_key=False)
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "rid":
                rid = unpacker.unpack()
                return rid if isinstance(rid, int | str) and not isinstance(rid, bool) else None
            unpacker.skip()
    except Exception:  # anything unreadable before the rid: there is no rid to echo
        return None
    return None


def decode(frame: bytes, max_body: int = MAX_BODY_BYTES) -> Message:
    """Decode one frame; raise :class:`ProtocolError` (with the request id when it can be read)."""
    if len(frame) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.SHORT_FRAME, f"frame of {len(frame)} bytes is shorter than the 8-byte header")
    version, op, flags, _reserved, length = HEADER.unpack_from(frame)
    if version != VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {version} is not supported (want {VERSION})")
    body_bytes = memoryview(frame)[HEADER_SIZE:]  # no copy of a body that may be refused
    if length > max_body:
        raise ProtocolError(ErrorCode.OVERSIZE, f"body of {length} bytes exceeds the cap of {max_body}",
                            rid=read_rid(body_bytes))
    if length != len(body_bytes):
        raise ProtocolError(ErrorCode.LENGTH_MISMATCH, f"header says {length} body bytes, frame has {len(body_bytes)}",
                            rid=read_rid(body_bytes))
    try:
        op_code = Op(op)
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op 0x{op:02x}", rid=read_rid(body_bytes)) from None
    try:
        body = unpack(body_bytes) if length else {}
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, StackError...)
        raise ProtocolError(ErrorCode.BAD_BODY, f"body is not valid msgpack: {exc}", op=op_code,
                            rid=read_rid(body_bytes)) from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_BODY, f"body must be a msgpack map, got {type(body).__name__}", op=op_code)
    return Message(op_code, body, flags)
