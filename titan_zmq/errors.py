"""One exception tree rooted at TitanError; each class's docstring is its default message.

Every error that can cross the wire has an :class:`ErrorCode`; a class declared with
``code=`` (``class NotFound(TitanError, code=ErrorCode.NOT_FOUND)``) is also what an ERROR
reply with that code turns back into on the other side (:func:`from_reply`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Error codes carried in ERROR bodies (strings, so they read well in logs)."""

    SHORT_FRAME = "short_frame"  # a frame shorter than the 8-byte header
    BAD_VERSION = "bad_version"  # a protocol version this side does not speak
    LENGTH_MISMATCH = "length_mismatch"  # the header's body length is not the frame's
    UNKNOWN_OP = "unknown_op"  # an op code this side does not serve
    OVERSIZE = "oversize"  # a body over the frame cap
    BAD_BODY = "bad_body"  # a body that is not a msgpack map
    BAD_REQUEST = "bad_request"  # a field missing or of the wrong type (store side)
    NOT_FOUND = "not_found"  # no such run, job, key or asset
    INVALID = "invalid"  # a request the broker refuses (bad job, bad DAG, reserved key...)
    STORE_UNAVAILABLE = "store_unavailable"  # nothing could be persisted
    UNAVAILABLE = "unavailable"  # the broker did not answer
    UNREGISTERED = "unregistered"  # a worker message from a connection the broker does not know
    RUN_FAILED = "run_failed"  # a run waited on did not succeed
    TIMEOUT = "timeout"  # a wait ran out of time
    AOF_CORRUPT = "aof_corrupt"  # the store's append-only file cannot be replayed
    GATE_NOT_PENDING = "gate_not_pending"  # a decision on a gate that is not waiting for one (decided already)
    INTERNAL = "internal"  # a bug on the other side


_BY_CODE: dict[str, type[TitanError]] = {}


class TitanError(Exception):
    """titan-zmq error."""

    code: str = ErrorCode.INTERNAL

    def __init_subclass__(cls, code: ErrorCode | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if code is not None:  # the class an ERROR reply with this code becomes
            cls.code = code
            _BY_CODE.setdefault(code, cls)

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        self.message = str(self)


class BrokerUnavailable(TitanError, code=ErrorCode.UNAVAILABLE):
    """The broker did not answer in time: is it running and is the address right?"""


class StoreUnavailable(TitanError, code=ErrorCode.STORE_UNAVAILABLE):
    """The store is unavailable: nothing can be persisted until it is back."""


class NotFound(TitanError, code=ErrorCode.NOT_FOUND):
    """No such run, job, key or asset."""


class InvalidRequest(TitanError, code=ErrorCode.INVALID):
    """The request is not valid."""


class PipelineError(InvalidRequest):
    """The pipeline definition is not valid."""


class JobRefused(InvalidRequest):
    """A worker refused this job's input (an archive too big or unsafe, a file outside the project):
    trying again would fail the same way, so the attempt fails without a retry."""


class GateNotPending(InvalidRequest, code=ErrorCode.GATE_NOT_PENDING):
    """The gate is not waiting for a decision (it was decided already, or is not reached yet)."""


class RunFailed(TitanError, code=ErrorCode.RUN_FAILED):
    """The run did not succeed."""


class WaitTimeout(TitanError, code=ErrorCode.TIMEOUT):
    """Timed out waiting for the run to finish."""


class AOFCorrupt(TitanError, code=ErrorCode.AOF_CORRUPT):
    """The store's append-only file is corrupt: run `titan-store --repair` to cut it at the last good record."""


class JournalFailed(TitanError):
    """The store could not write its journal and is stopping rather than serve state it could not persist."""


class ProtocolError(TitanError):
    """A frame that cannot be decoded; ``code`` is one of the frame-level :class:`ErrorCode` members."""

    def __init__(self, code: ErrorCode, message: str, op: int | None = None, rid: Any = None):
        super().__init__(message)
        self.code = code
        self.op = op
        self.rid = rid


class BadField(InvalidRequest):
    """A request body field is missing or has the wrong type (the store replies BAD_REQUEST)."""


class RemoteError(TitanError):
    """The remote side reported an error."""

    def __init__(self, message: str | None = None, code: str = ErrorCode.INTERNAL):
        super().__init__(message)
        self.code = code


def from_reply(code: str, message: str) -> TitanError:
    """Turn an ERROR reply into the matching exception (RemoteError for codes without a class)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(f"{message} [{code}]", code=code)
    return cls(message)
