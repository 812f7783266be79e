"""`titan bench`: what titan-zmq adds on top of running the same processes directly (see docs/BENCHMARKS.md).

Sits above both `titan_zmq` and `client`; nothing there imports it, except the `titan bench` command, lazily.
"""
