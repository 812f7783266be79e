"""The titan-zmq client library: submit jobs and DAGs, watch them, share state."""

from client.api import Run, TitanClient
from client.job import TitanJob
from titan_zmq.errors import (
    BrokerUnavailable,
    InvalidRequest,
    NotFound,
    PipelineError,
    RunFailed,
    StoreUnavailable,
    TitanError,
    WaitTimeout,
)

__all__ = [
    "TitanClient", "TitanJob", "Run", "TitanError", "BrokerUnavailable", "StoreUnavailable", "NotFound",
    "InvalidRequest", "PipelineError", "RunFailed", "WaitTimeout",
]
