"""What every page of `digest serve` shares: the settings, a database connection per request,
the page layout (digest/templates/), the 400 page for links that are not ours, form fields.

The blueprints (web.py's unsubscribe pages, signup.py, prefs.py, and any later one) get these
from here, so a new blueprint needs only `app.register_blueprint` in `web.create_app`.
"""

from __future__ import annotations

import ipaddress

import sqlite_utils
from flask import Response, current_app, g, render_template, request

from digest import store
from digest.config import Settings

MAX_FIELD = 1000  # characters a form field may have (a keyword list fits many times over)


def settings() -> Settings:
    return current_app.config["DIGEST_SETTINGS"]  # type: ignore[no-any-return]


def secret() -> str:
    return settings().require_secret()


def db() -> sqlite_utils.Database:
    """This request's database connection (closed when the request ends)."""
    if "db" not in g:
        g.db = store.connect(settings().db_path)
    return g.db  # type: ignore[no-any-return]


def close_db(_: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.conn.close()


def page(template: str, title: str, status: int = 200, **context: object) -> Response:
    context.setdefault("message", None)
    context.setdefault("error", False)
    body = render_template(template, title=title, root=request.script_root, **context)
    return Response(body, status=status, mimetype="text/html")


def notice(title: str, message: str, status: int = 200, error: bool = False) -> Response:
    return page("notice.html", title, status, message=message, error=error)


def invalid() -> Response:
    return notice(
        "This link is not valid",
        "The link is incomplete or was changed. Use the link from your latest digest email, "
        "or reply to that email.",
        400,
        error=True,
    )


def field(name: str) -> str:
    """A form field, stripped; '' when missing. Longer than MAX_FIELD: cut (the page then says
    so through validation, and never echoes a megabyte back)."""
    return request.form.get(name, "")[:MAX_FIELD].strip()


def client() -> str:
    """Who is asking, for rate limits: the connecting address (the one the reverse proxy
    forwarded when DIGEST_TRUST_PROXY names it), an IPv6 address by its /64 network."""
    address = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
