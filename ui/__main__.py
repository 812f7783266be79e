"""`titan-ui`: serve the Dash UI of one broker (``python -m ui`` does the same)."""

from __future__ import annotations

import logging
import sys
import threading

import click
from werkzeug.serving import make_server

from titan_zmq import defaults
from titan_zmq.cli_common import on_stop_signals, setup_logging
from titan_zmq.errors import InvalidRequest
from ui import auth

DEFAULT_BIND = f"{defaults.HOST}:8050"


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) or a bare port on the loopback address."""
    host, sep, port = bind.rpartition(":")
    if not sep:
        host, port = defaults.HOST, bind
    host = host.strip("[]") or defaults.HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"--bind {bind!r}: expected HOST:PORT, such as 127.0.0.1:8050")
    return host, int(port)


def url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


@click.command(context_settings={"show_default": True})
@click.option("--broker", envvar="TITAN_BROKER", show_envvar=True, default=defaults.BROKER_ADDR,
              help="Broker address.")
@click.option("--bind", envvar="TITAN_UI_BIND", show_envvar=True, default=DEFAULT_BIND,
              help="HOST:PORT to serve on. A non-loopback host needs an explicit --token.")
@click.option("--token", envvar="TITAN_UI_TOKEN", show_envvar=True, default=None,
              help="Access token (random when not given; printed in the URL).")
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def main(broker: str, bind: str, token: str | None, log_level: str) -> None:
    """Serve the titan web UI: cluster, runs and agent runs of the broker at BROKER, live."""
    try:
        host, port = parse_bind(bind)
        auth.check_bind(host, token)
    except InvalidRequest as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    setup_logging(log_level)
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    token = token or auth.new_token()

    from ui.app import create_app  # Dash and the pages load here, after the arguments are checked
    from ui.data import BrokerSync
    from ui.model import Model

    sync = BrokerSync(Model(), broker).start()
    app = create_app(sync, token, port)
    try:
        server = make_server(host, port, app.server, threaded=True)
    except OSError as exc:
        click.echo(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    click.echo(f"titan-ui: {url(host, port, token)}  (broker {broker})", nl=True)
    sys.stdout.flush()
    stopped = threading.Event()
    on_stop_signals(stopped.set)
    serving = threading.Thread(target=server.serve_forever, name="titan-ui-http", daemon=True)
    serving.start()
    while not stopped.wait(0.5):
        pass
    server.shutdown()
    sync.stop()


if __name__ == "__main__":
    main()
