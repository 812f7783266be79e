"""Access to the UI: one token, given in the URL once (``/?token=...``, like Jupyter), then kept in a cookie.

Every request to the Flask server behind Dash, pages, Dash's own bundles and every callback POST
(``/_dash-update-component``), passes through :func:`install`'s ``before_request`` hook and is refused
with HTTP 403 unless it carries the token, in the ``token`` query parameter, the cookie, or an
``Authorization: Bearer`` header (for scripts).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any

from flask import Flask, Response, request

from titan_zmq.errors import InvalidRequest

COOKIE_PREFIX = "titan_ui_token_"  # + the port: browsers share cookies across a host's ports
COOKIE_AGE = 30 * 24 * 3600  # seconds the browser keeps it
FORBIDDEN = ("403 Forbidden: this titan UI needs its access token. Open the URL `titan-ui` (or `titan up`) "
             "printed, the one ending in ?token=...\n")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address with a token nobody chose (one printed to a terminal
    is a secret only on the machine that printed it)."""
    if not is_loopback(host) and not token:
        raise InvalidRequest(
            f"binding {host} exposes the UI beyond this machine: give an explicit --token (or TITAN_UI_TOKEN), "
            "or bind 127.0.0.1")


def cookie_name(port: int) -> str:
    return f"{COOKIE_PREFIX}{port}"


def install(server: Flask, token: str, port: int) -> None:
    """Guard every request of ``server`` with ``token``; a valid token in the URL sets the cookie."""
    name = cookie_name(port)

    def valid(given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())

    def guard() -> Any:
        bearer = request.headers.get("Authorization", "")
        if valid(request.cookies.get(name)) or valid(bearer.removeprefix("Bearer ").strip() or None):
            return None
        if valid(request.args.get("token")):
            request.environ["titan_ui.set_cookie"] = True
            return None
        return Response(FORBIDDEN, status=403, mimetype="text/plain")

    def remember(response: Response) -> Response:
        if request.environ.get("titan_ui.set_cookie"):
            response.set_cookie(name, token, max_age=COOKIE_AGE, httponly=True, samesite="Strict")
        return response

    # first in line, before Dash's own hooks: nothing of the app runs for a request without the token
    server.before_request_funcs.setdefault(None, []).insert(0, guard)
    server.after_request(remember)
