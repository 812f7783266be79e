"""One exception tree rooted at TitanError; each class's docstring is its default message."""

from __future__ import annotations


class TitanError(Exception):
    """titan-zmq error."""

    code = "internal"

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        self.message = str(self)


class BrokerUnavailable(TitanError):
    """The broker did not answer in time: is it running and is the address right?"""

    code = "unavailable"


class StoreUnavailable(TitanError):
    """The store is unavailable: nothing can be persisted until it is back."""

    code = "store_unavailable"


class NotFound(TitanError):
    """No such run, job, key or asset."""

    code = "not_found"


class InvalidRequest(TitanError):
    """The request is not valid."""

    code = "invalid"


class PipelineError(InvalidRequest):
    """The pipeline definition is not valid."""


class RunFailed(TitanError):
    """The run did not succeed."""

    code = "run_failed"


class WaitTimeout(TitanError):
    """Timed out waiting for the run to finish."""

    code = "timeout"


class AOFCorrupt(TitanError):
    """The store's append-only file is corrupt: run `titan-store --repair` to cut it at the last good record."""

    code = "aof_corrupt"


class RemoteError(TitanError):
    """The remote side reported an error."""

    def __init__(self, message: str | None = None, code: str = "internal"):
        super().__init__(message)
        self.code = code


_BY_CODE: dict[str, type[TitanError]] = {
    "not_found": NotFound,
    "invalid": InvalidRequest,
    "store_unavailable": StoreUnavailable,
}


def from_reply(code: str, message: str) -> TitanError:
    """Turn an ERROR reply into the matching exception."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(f"{message} [{code}]", code=code)
    return cls(message)
