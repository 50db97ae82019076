"""Sign-up (DIGEST_SIGNUP=open): the root page of `digest serve` is a form (email, keywords;
optional categories and frequency). It sends a confirmation email whose link opens a page with
one button; pressing it adds the row to subscribers.csv through the same locked edit as every
other change (so the next `digest send` includes them). A GET never changes anything.

Abuse limits: a honeypot field (a filled one gets the usual answer and nothing happens), at
most one confirmation email per address per hour, at most CLIENT_LIMIT sign-ups per client
(address, or /64 for IPv6) per hour. Whatever the address (new, already subscribed, asked a
minute ago), the answer is the same page: it never tells a stranger who is subscribed. An
address already subscribed gets no email. Confirmation links carry the sign-up, signed, and
work for 7 days (tokens.CONFIRM_MAX_AGE).
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, request
from markupsafe import escape

from digest import roster, store
from digest.config import Settings
from digest.document import address_key, valid_address
from digest.errors import ConfigError, DigestError
from digest.mailer import message_bytes, new_message_id
from digest.models import RenderedEmail
from digest.pages import client, db, field, notice, page, secret, settings
from digest.prefs import FREQUENCIES
from digest.smtp import Messenger
from digest.subscribers import KEYWORD_SEPARATOR, check_row, parse_keywords
from digest.tokens import (
    CONFIRM_PATH,
    PREFERENCES_SALT,
    make_signup_token,
    make_token,
    read_signup_token,
)

log = logging.getLogger(__name__)
pages = Blueprint("signup", __name__)

ADDRESS_EVERY = timedelta(hours=1)  # at most one confirmation email per address this often
CLIENT_LIMIT = 5  # sign-ups one client may ask for ...
CLIENT_WINDOW = timedelta(hours=1)  # ... within this time


def check_settings(settings: Settings) -> None:
    """With sign-up open, confirmation links need DIGEST_PUBLIC_URL and emails DIGEST_FROM."""
    if settings.signup and not settings.public_url:
        raise ConfigError(
            "DIGEST_SIGNUP=open needs DIGEST_PUBLIC_URL (the address of digest serve that "
            "readers reach, e.g. https://example.org/digest): confirmation emails link to it"
        )
    if settings.signup:
        settings.require_from()


def send_confirmation(settings: Settings, to: str, url: str) -> bool:
    """Send one confirmation email; whether the mail server accepted it. (The one place that
    sends it: kept small for the send path's redesign.)"""
    sender = settings.require_from()
    text = (
        f"Someone (we hope you) asked for the arXiv digest at {to}.\r\n\r\n"
        f"To start receiving it, open this link and press the button:\r\n{url}\r\n\r\n"
        f"If it was not you, ignore this email: nothing is sent unless the link is used.\r\n"
    )
    html = (
        f"<p>Someone (we hope you) asked for the arXiv digest at {escape(to)}.</p>"
        f'<p><a href="{escape(url)}">Confirm your subscription</a></p>'
        f"<p>If it was not you, ignore this email: nothing is sent unless the link is used.</p>"
    )
    rendered = RenderedEmail("Confirm your arXiv digest subscription", html, text, ())
    data = message_bytes(
        rendered, sender=sender, to=to, message_id=new_message_id(sender), when=datetime.now(UTC)
    )
    with Messenger(settings) as messenger:
        return messenger.send(data, to).accepted


# Confirmation emails go out one at a time from a worker thread, so the answer to the form takes
# as long whether an email is sent or not.
_outbox: queue.Queue[tuple[Settings, str, str]] = queue.Queue()
_worker_lock = threading.Lock()
_worker: list[threading.Thread] = []


def _post(settings: Settings, to: str, url: str) -> None:
    with _worker_lock:
        if not _worker:
            thread = threading.Thread(target=_deliver, name="signup-mail", daemon=True)
            thread.start()
            _worker.append(thread)
    _outbox.put((settings, to, url))


def _deliver() -> None:
    while True:
        settings, to, url = _outbox.get()
        try:
            sent = send_confirmation(settings, to, url)
        except DigestError as exc:
            log.warning("the confirmation email to %s was not sent: %s", to, exc)
            sent = False
        if sent:
            log.info("sent a confirmation email to %s", to)
            continue
        database = store.connect(settings.db_path)
        try:  # not sent: the address may ask again at once
            store.forget_signup_email(database, address_key(to))
        finally:
            database.conn.close()


def _closed() -> Response:
    return notice("arXiv digest", "This digest does not take sign-ups here.", 404)


def _form(message: str | None = None, status: int = 200) -> Response:
    values = {name: field(name) for name in ("email", "keywords", "categories", "frequency")}
    return page(
        "signup.html",
        "Subscribe to the arXiv digest",
        status,
        message=message,
        error=message is not None,
        values=values,
        frequencies=FREQUENCIES,
    )


@pages.get("/")
def form() -> Response:
    return _form() if settings().signup else _closed()


@pages.post("/")
def submit() -> Response:
    config = settings()
    if not config.signup:
        return _closed()
    try:
        address = valid_address(field("email"))
    except DigestError as exc:
        return _form(str(exc), 400)
    keywords = parse_keywords(field("keywords"))
    signup = {
        "email": address,
        "keywords": f"{KEYWORD_SEPARATOR} ".join(keywords),
        "categories": f"{KEYWORD_SEPARATOR} ".join(parse_keywords(field("categories"))),
        "frequency": field("frequency") or "daily",
    }
    problem = check_row(signup)
    if problem:
        return _form(problem, 400)
    sent = page("signup_sent.html", "Check your inbox", email=address)
    if field("website"):  # the honeypot: people never see it, bots fill it in
        log.info("sign-up with the honeypot filled in, ignored")
        return sent
    key = address_key(address)
    decision = store.signup_request(
        db(),
        key,
        client(),
        datetime.now(UTC),
        address_every=ADDRESS_EVERY,
        client_limit=CLIENT_LIMIT,
        client_window=CLIENT_WINDOW,
    )
    if decision == "client":
        return notice(
            "Too many sign-ups",
            "Too many sign-ups came from your network in the last hour; try again later.",
            429,
            error=True,
        )
    subscribed = roster.lookup(config.subscribers_path, key) is not None
    if decision == "send" and not (subscribed and not store.is_suppressed(db(), key)):
        url = config.public_url.rstrip("/") + CONFIRM_PATH + make_signup_token(secret(), signup)  # type: ignore[union-attr]
        _post(config, address, url)
    return sent


@pages.get("/confirm/<token>")
def confirm_page(token: str) -> Response:
    signup = read_signup_token(secret(), token)
    if signup is None:
        return _expired()
    return page(
        "confirm.html",
        "Confirm your subscription",
        signup=signup,
        keywords=parse_keywords(signup.get("keywords", "")),
        action=f"{request.script_root}{CONFIRM_PATH}{token}",
    )


@pages.post("/confirm/<token>")
def confirm(token: str) -> Response:
    signup = read_signup_token(secret(), token)
    if signup is None:
        return _expired()
    config = settings()
    address = signup["email"]
    key = address_key(address)
    options = {k: signup.get(k) or None for k in ("categories", "frequency")}
    try:
        if roster.lookup(config.subscribers_path, key) is None:
            roster.add(config.subscribers_path, address, [signup["keywords"]], options=options)
            log.info("signed up %s", key)
        elif store.is_suppressed(db(), key):  # back after unsubscribing: what they asked now
            roster.update(config.subscribers_path, key, {"keywords": signup["keywords"], **options})
        # else: confirmed before (twice, or in two tabs): nothing more to do
    except DigestError as exc:
        if "already listed" not in str(exc):  # two confirmations at once: the other added it
            log.warning("the sign-up of %s was refused: %s", key, exc)
            return notice("Not subscribed", f"Nothing was changed: {exc}", 409, error=True)
    store.unsuppress(db(), key)  # confirming from their own inbox is a fresh opt-in
    preferences = f"{request.script_root}/preferences/" + make_token(
        secret(), key, PREFERENCES_SALT
    )
    return page("confirmed.html", "You are subscribed", email=address, preferences=preferences)


def _expired() -> Response:
    return notice(
        "This link is not valid",
        "The confirmation link is incomplete, was changed, or is older than 7 days. "
        "Sign up again to get a new one.",
        400,
        error=True,
    )
