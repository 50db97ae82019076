"""`digest serve`: the small web app behind the unsubscribe links in every email.

- `POST /unsubscribe/<token>` unsubscribes at once: what a mail client's one-click button sends
  (RFC 8058, body `List-Unsubscribe=One-Click`) and what the page's button sends.
- `GET /unsubscribe/<token>` only shows a page: the address, its keywords (each with a button
  that removes it from subscribers.csv) and an unsubscribe button. A GET never changes
  anything, so link scanners that follow every URL in an email cannot unsubscribe anyone.
- A token not signed with DIGEST_SECRET (forged, altered, cut) gets a 400 page and nothing else.

An unsubscribe is a suppression in the database, which outlives edits of subscribers.csv.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlite_utils
from flask import Flask, Response, render_template_string, request
from werkzeug.serving import make_server

from digest import roster, store, subscribers
from digest.config import Settings
from digest.errors import DigestError
from digest.models import Subscriber
from digest.tokens import read_token

log = logging.getLogger(__name__)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} - arXiv digest</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
         background: #f6f8fa; color: #1f2328; margin: 0; padding: 32px 16px; }
  main { max-width: 560px; margin: 0 auto; background: #fff; border: 1px solid #d1d9e0;
         border-radius: 8px; padding: 24px 28px; }
  h1 { font-size: 22px; margin: 0 0 12px; }
  p { line-height: 1.5; }
  .note, .error { border-radius: 6px; padding: 8px 12px; }
  .note { background: #ddf4ff; border: 1px solid #54aeff66; }
  .error { background: #ffebe9; border: 1px solid #ff818266; }
  ul { list-style: none; padding: 0; margin: 0 0 20px; }
  li { display: flex; justify-content: space-between; align-items: center;
       border-bottom: 1px solid #d1d9e0; padding: 8px 0; }
  li form { margin: 0; }
  button { font: inherit; border-radius: 6px; border: 1px solid #d1d9e0; background: #f6f8fa;
           padding: 5px 14px; cursor: pointer; }
  button.danger { background: #cf222e; border-color: #a40e26; color: #fff; font-weight: 600;
                  padding: 8px 18px; }
  .meta { color: #59636e; font-size: 14px; }
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% if message %}<p class="{{ 'error' if error else 'note' }}">{{ message }}</p>{% endif %}
{% if email %}
<p>Digest for <strong>{{ email }}</strong>.</p>
{% endif %}
{% if person and not suppressed %}
<p>Your keywords:</p>
<ul>
{% for keyword in person.keywords %}
  <li><span>{{ keyword }}</span>
  {% if person.keywords | length > 1 %}
    <form method="post" action="{{ base }}/keywords/remove">
      <input type="hidden" name="keyword" value="{{ keyword }}">
      <button type="submit">Remove</button>
    </form>
  {% endif %}
  </li>
{% endfor %}
</ul>
{% endif %}
{% if email and not suppressed %}
<form method="post" action="{{ base }}">
  <input type="hidden" name="List-Unsubscribe" value="One-Click">
  <button type="submit" class="danger">Unsubscribe</button>
</form>
<p class="meta">Unsubscribing stops every digest to this address.</p>
{% endif %}
{% if suppressed %}
<p>You will receive no more digests. Changed your mind? Write to the person who runs this
digest and ask them to resubscribe you.</p>
{% endif %}
</main>
</body>
</html>
"""

SECURITY_HEADERS = {
    # The token is in the URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings) -> Flask:
    """The Flask app. Raises ConfigError when DIGEST_SECRET is not set."""
    secret = settings.require_secret()
    app = Flask("digest")

    @contextmanager
    def database() -> Iterator[sqlite_utils.Database]:
        db = store.open_db(settings.db_path)
        try:
            yield db
        finally:
            db.conn.close()

    def find(key: str) -> Subscriber | None:
        try:
            people, _ = subscribers.load(settings.subscribers_path)
        except DigestError:
            log.exception("cannot read the subscribers file")
            return None
        return next((p for p in people if p.key == key), None)

    def page(title: str, status: int = 200, **context: object) -> Response:
        context.setdefault("email", None)
        context.setdefault("person", None)
        context.setdefault("suppressed", False)
        context.setdefault("message", None)
        context.setdefault("error", False)
        body = render_template_string(PAGE, title=title, **context)
        return Response(body, status=status, mimetype="text/html")

    def invalid() -> Response:
        return page(
            "This link is not valid",
            400,
            message="The link is incomplete or was changed. Use the link from your latest "
            "digest email, or reply to that email to unsubscribe.",
            error=True,
        )

    def show(
        token: str, key: str, message: str | None = None, error: bool = False, status: int = 200
    ) -> Response:
        with database() as db:
            suppressed = store.is_suppressed(db, key)
        person = find(key)
        title = "You are unsubscribed" if suppressed else "Your arXiv digest"
        if not suppressed and person is None:
            message = message or "This address is not on the list right now."
        return page(
            title,
            status,
            email=person.email if person else key,
            person=person,
            suppressed=suppressed,
            message=message,
            error=error,
            base=f"{request.script_root}/unsubscribe/{token}",
        )

    @app.get("/unsubscribe/<token>")
    def unsubscribe_page(token: str) -> Response:
        key = read_token(secret, token)
        return invalid() if key is None else show(token, key)

    @app.post("/unsubscribe/<token>")
    def unsubscribe(token: str) -> Response:
        key = read_token(secret, token)
        if key is None:
            return invalid()
        with database() as db:
            new = roster.unsubscribe(db, key, source="web")
        log.info("unsubscribed %s (%s)", key, "new" if new else "again")
        return show(
            token, key, "You are unsubscribed." if new else "You were already unsubscribed."
        )

    @app.post("/unsubscribe/<token>/keywords/remove")
    def remove_keyword(token: str) -> Response:
        key = read_token(secret, token)
        if key is None:
            return invalid()
        keyword = request.form.get("keyword", "")
        person = find(key)
        if person is None or keyword.casefold() not in {k.casefold() for k in person.keywords}:
            return show(token, key, f"'{keyword}' is not one of your keywords.", True, 409)
        if len(person.keywords) == 1:
            return show(token, key, "That is your only keyword: unsubscribe instead.", True, 409)
        try:
            roster.change_keywords(settings.subscribers_path, key, "remove", [keyword])
        except DigestError:
            log.exception("removing %r for %s failed", keyword, key)
            return show(token, key, "Could not remove it just now; try again.", True, 409)
        return show(token, key, f"Removed '{keyword}'. It will not be in your next digest.")

    app.register_blueprint(__import__("digest.feedback").feedback.blueprint(settings))

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def serve(settings: Settings, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Run the app on host:port until interrupted; `ready` gets the URL once it listens."""
    app = create_app(settings)
    store.open_db(settings.db_path).conn.close()  # a wrong DIGEST_DB fails now, not per request
    server = make_server(host, port, app, threaded=True)
    ready(f"http://{host}:{server.server_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
