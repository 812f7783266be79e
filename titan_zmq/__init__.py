"""titan-zmq: a small distributed job and DAG orchestrator on ZeroMQ."""

__version__ = "0.1.0"
