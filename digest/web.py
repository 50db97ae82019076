"""`digest serve`: the web app behind the links in every email, on a production WSGI server.

- `POST /unsubscribe/<token>` unsubscribes at once: what a mail client's one-click button sends
  (RFC 8058, body `List-Unsubscribe=One-Click`) and what the page's button sends.
- `GET /unsubscribe/<token>` only shows a page: the address, its keywords (each with a button
  that removes it from subscribers.csv) and an unsubscribe button. A GET never changes
  anything, so link scanners that follow every URL in an email cannot unsubscribe anyone.
- `/preferences/<token>` (prefs.py): every setting of one subscriber; `/` and `/confirm/<token>`
  (signup.py): sign-up with a one-step confirmation, when DIGEST_SIGNUP=open.
- `GET /healthz`: 200 "ok" while the app can read its database.
- A token not signed with DIGEST_SECRET for that page (forged, altered, cut, or a signed
  payload that is not ours) gets a 400 page and nothing else.

Served by waitress: idle or stalled connections closed after DIGEST_SERVE_TIMEOUT
(20 s), request bodies over
`MAX_BODY` refused (413), no Server header, no access log (paths carry tokens; log messages are
scrubbed of them too). Behind a reverse proxy, DIGEST_PUBLIC_URL's path is the prefix the app is
served under, and X-Forwarded-* headers are believed only from DIGEST_TRUST_PROXY. SIGTERM (or
Ctrl-C) stops it cleanly with exit status 0.

An unsubscribe is a suppression in the database, which outlives edits of subscribers.csv.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Callable, Iterable
from types import FrameType
from urllib.parse import urlsplit

import waitress
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from digest import roster, store
from digest.config import Settings
from digest.errors import DigestError
from digest.models import Subscriber
from digest.pages import close_db, db, field, invalid, notice, page, secret, settings
from digest.tokens import PREFERENCES_SALT, make_token, read_token

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes of a request body; the largest form is well under 2 KB
THREADS = 8

SECURITY_HEADERS = {
    # The token is in the URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_TOKEN_IN_PATH = re.compile(r"/(unsubscribe|preferences|confirm|feedback|likes)/[^\s/?\"']+")


def scrub(text: str) -> str:
    """A log line with the tokens of link paths replaced by <token>."""
    return _TOKEN_IN_PATH.sub(r"/\1/<token>", text)


class ScrubTokens(logging.Filter):
    """Keeps tokens out of every log line that passes (installed on the log handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TOKEN_IN_PATH.search(message):
            record.msg, record.args = scrub(message), ()
        return True


class DigestFlask(Flask):
    def log_exception(self, exc_info: object) -> None:
        """Flask logs the request path of an error; ours names the route, not the token."""
        rule = request.url_rule.rule if request.url_rule else scrub(request.path)
        self.logger.error("Exception on %s [%s]", rule, request.method, exc_info=exc_info)  # type: ignore[arg-type]


unsubscribe_pages = Blueprint("unsubscribe", __name__)


def _show(
    token: str, key: str, message: str | None = None, error: bool = False, status: int = 200
) -> Response:
    suppressed = store.is_suppressed(db(), key)
    person = _find(key)
    title = "You are unsubscribed" if suppressed else "Your arXiv digest"
    if not suppressed and person is None:
        message = message or "This address is not on the list right now."
    return page(
        "unsubscribe.html",
        title,
        status,
        email=person.email if person else key,
        person=person,
        suppressed=suppressed,
        message=message,
        error=error,
        base=f"{request.script_root}/unsubscribe/{token}",
        preferences=f"{request.script_root}/preferences/"
        + make_token(secret(), key, PREFERENCES_SALT),
    )


def _find(key: str) -> Subscriber | None:
    try:
        return roster.lookup(settings().subscribers_path, key)
    except DigestError:
        log.exception("cannot read the subscribers file")
        return None


@unsubscribe_pages.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> Response:
    key = read_token(secret(), token)
    return invalid() if key is None else _show(token, key)


@unsubscribe_pages.post("/unsubscribe/<token>")
def unsubscribe(token: str) -> Response:
    key = read_token(secret(), token)
    if key is None:
        return invalid()
    new = roster.unsubscribe(db(), key, source="web")
    log.info("unsubscribed %s (%s)", key, "new" if new else "again")
    return _show(token, key, "You are unsubscribed." if new else "You were already unsubscribed.")


@unsubscribe_pages.post("/unsubscribe/<token>/keywords/remove")
def remove_keyword(token: str) -> Response:
    key = read_token(secret(), token)
    if key is None:
        return invalid()
    keyword = field("keyword")
    person = _find(key)
    if person is None or keyword.casefold() not in {k.casefold() for k in person.keywords}:
        return _show(token, key, f"'{keyword}' is not one of your keywords.", True, 409)
    if len(person.keywords) == 1:
        return _show(token, key, "That is your only keyword: unsubscribe instead.", True, 409)
    try:
        roster.change_keywords(settings().subscribers_path, key, "remove", [keyword])
    except DigestError as exc:
        log.warning("removing a keyword for %s was refused: %s", key, exc)
        return _show(token, key, f"Nothing was changed: {exc}", True, 409)
    return _show(token, key, f"Removed '{keyword}'. It will not be in your next digest.")


def create_app(settings: Settings, blueprints: Iterable[Blueprint] = ()) -> Flask:
    """The Flask app: the unsubscribe, preferences and sign-up pages, plus `blueprints`.
    Raises ConfigError when DIGEST_SECRET is not set."""
    from digest import feedback, prefs, signup

    settings.require_secret()
    signup.check_settings(settings)
    app = DigestFlask("digest")
    app.config["DIGEST_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.teardown_appcontext(close_db)
    pages = (unsubscribe_pages, prefs.pages, signup.pages, feedback.blueprint(settings))
    for blueprint in (*pages, *blueprints):
        app.register_blueprint(blueprint)

    @app.get("/healthz")
    def healthz() -> Response:
        db().execute("SELECT 1")
        return Response("ok", mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            return notice("Too much data", "That form was too large; nothing was saved.", 413, True)
        return notice(error.name, error.description or "", status, error=True)

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def serve(settings: Settings, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Run the app on host:port until SIGTERM or Ctrl-C; `ready` gets the URL once it listens."""
    app = create_app(settings)
    store.open_db(settings.db_path).conn.close()  # a wrong DIGEST_DB fails now, not per request
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubTokens())
    try:  # parse subscribers.csv now, not in the first reader's request
        roster.snapshot(settings.subscribers_path)
    except DigestError as exc:
        log.warning("%s", exc)
    prefix = urlsplit(settings.public_url or "").path.rstrip("/")
    proxy: dict[str, object] = {"clear_untrusted_proxy_headers": True}
    if settings.trust_proxy:  # only then X-Forwarded-For/-Proto/-Host mean anything
        proxy.update(
            trusted_proxy=settings.trust_proxy,
            trusted_proxy_count=1,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
        )
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        ident="",  # no Server header
        channel_timeout=settings.serve_timeout,
        cleanup_interval=max(1, min(10, int(settings.serve_timeout / 2))),
        max_request_body_size=MAX_BODY,
        url_prefix=prefix,
        **proxy,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)  # waitress's loop finishes the requests in progress, then returns

    signal.signal(signal.SIGTERM, stop)
    ready(f"http://{host}:{server.effective_port}")  # type: ignore[union-attr]
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
