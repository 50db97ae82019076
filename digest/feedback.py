"""The "More like this" / "Not for me" links of every paper in an email, and "your likes".

- `feedback_urls(settings, subscriber, paper_id)`: the two signed links for one reader and one
  paper (None unless DIGEST_PUBLIC_URL and DIGEST_SECRET are set).
- `GET /feedback/<token>` only shows the paper and one button: mail scanners follow every link
  in an email, so a GET never changes anything. The button POSTs to the same address, which
  records the opinion; the page then offers an undo (`POST /feedback/<token>/undo`).
- `GET /likes/<token>` lists the reader's liked papers, each with a Remove button
  (`POST /likes/<token>/remove`). A like from the likes column of subscribers.csv is removed
  from the file too.
- The pages are digest/templates/feedback.html and likes.html, in the layout every page of
  `digest serve` shares (base.html, through digest/pages.py).
- A token not signed with DIGEST_SECRET (forged, altered, cut) gets a 400 page, nothing else.
  The tokens are made and read in digest/feedback_links.py (one signature per reader, a keyed
  BLAKE2b MAC per reader and paper), which the send path uses for the links of every email.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import sqlite_utils
from flask import Blueprint, Response, request
from itsdangerous import BadSignature, URLSafeSerializer

from digest import feedback_links, feedback_store, roster, store, subscribers
from digest.config import Settings
from digest.errors import DigestError
from digest.feedback_links import LIKES_SALT
from digest.models import Paper, Subscriber
from digest.pages import notice, page

log = logging.getLogger(__name__)

KINDS = {"more": "like", "less": "dislike"}  # link kind -> what is recorded
BUTTONS = {"like": "More like this", "dislike": "Not for me"}


def make_feedback_token(secret: str, subscriber_key: str, paper_id: str, kind: str) -> str:
    return feedback_links.token(secret, subscriber_key, paper_id, kind)


def read_feedback_token(secret: str, token: str) -> tuple[str, str, str] | None:
    """(subscriber key, paper id, like|dislike), or None when we did not sign it."""
    return feedback_links.read(secret, token)


def make_likes_token(secret: str, subscriber_key: str) -> str:
    return feedback_links.likes_token(secret, subscriber_key)


def read_likes_token(secret: str, token: str) -> str | None:
    try:
        key = URLSafeSerializer(secret, salt=LIKES_SALT).loads(token)
    except BadSignature:
        return None
    return key if isinstance(key, str) and key else None


def feedback_urls(
    settings: Settings, subscriber: Subscriber, paper_id: str
) -> tuple[str, str] | None:
    """("More like this" URL, "Not for me" URL) for this reader and paper, under
    DIGEST_PUBLIC_URL; None unless DIGEST_PUBLIC_URL and DIGEST_SECRET are both set."""
    links = feedback_links.for_reader(settings.public_url, settings.secret, subscriber.key)
    return None if links is None else links.urls(paper_id)


def likes_url(settings: Settings, subscriber: Subscriber) -> str | None:
    """The reader's "your likes" page, or None without DIGEST_PUBLIC_URL and DIGEST_SECRET."""
    links = feedback_links.for_reader(settings.public_url, settings.secret, subscriber.key)
    return None if links is None else links.likes


def blueprint(settings: Settings) -> Blueprint:
    """The pages; `create_app` registers it (DIGEST_SECRET is required there already)."""
    secret = settings.require_secret()
    pages = Blueprint("feedback", __name__)

    @contextmanager
    def database() -> Iterator[sqlite_utils.Database]:
        db = store.open_db(settings.db_path)
        try:
            yield db
        finally:
            db.conn.close()

    def invalid() -> Response:
        return notice(
            "This link is not valid",
            "The link is incomplete or was changed. Use the link from your latest digest email.",
            400,
            error=True,
        )

    def paper_of(db: sqlite_utils.Database, paper_id: str) -> Paper | None:
        return store.papers_by_id(db, [paper_id]).get(paper_id)

    def show(
        token: str, key: str, paper_id: str, kind: str, message: str | None = None
    ) -> Response:
        base = f"{request.script_root}/feedback/{token}"
        with database() as db:
            paper = paper_of(db, paper_id)
            current = feedback_store.opinion(db, key, paper_id)
        done = current is not None and current.kind == kind
        if done and message is None:
            message = "Noted." if kind == "like" else "Noted: fewer papers like this one."
        return page(
            "feedback.html",
            BUTTONS[kind],
            message=message,
            paper_id=paper_id,
            paper=paper,
            button=None if done else BUTTONS[kind],
            action=base,
            undo=f"{base}/undo" if done else None,
            likes_url=f"{request.script_root}/likes/{make_likes_token(secret, key)}",
        )

    @pages.get("/feedback/<token>")
    def feedback_page(token: str) -> Response:
        found = read_feedback_token(secret, token)
        return invalid() if found is None else show(token, *found)

    @pages.post("/feedback/<token>")
    def feedback_record(token: str) -> Response:
        found = read_feedback_token(secret, token)
        if found is None:
            return invalid()
        key, paper_id, kind = found
        with database() as db:
            feedback_store.record(db, key, paper_id, kind, "web")
        log.info("feedback %s on %s from %s", kind, paper_id, key)
        message = (
            "Thanks: papers like this one will be recommended to you."
            if kind == "like"
            else "Thanks: papers like this one will move down in your digest."
        )
        return show(token, key, paper_id, kind, message)

    @pages.post("/feedback/<token>/undo")
    def feedback_undo(token: str) -> Response:
        found = read_feedback_token(secret, token)
        if found is None:
            return invalid()
        key, paper_id, kind = found
        with database() as db:
            undone = feedback_store.forget(db, key, paper_id, kind)
        if undone and kind == "like":
            _unlike_in_file(key, paper_id)
        return show(token, key, paper_id, kind, "Undone." if undone else "Nothing to undo.")

    def likes_page(token: str, key: str, message: str | None = None) -> Response:
        with database() as db:
            liked = [o.paper_id for o in feedback_store.opinions(db, key, "like")]
            disliked = {o.paper_id for o in feedback_store.opinions(db, key, "dislike")}
            person = _person(key)
            liked += [i for i in (person.likes if person else ()) if i not in disliked]
            liked = list(dict.fromkeys(liked))
            known = store.papers_by_id(db, liked)
        likes = [{"id": i, "title": known[i].title if i in known else i} for i in liked]
        return page(
            "likes.html",
            "Your likes",
            message=message,
            likes=likes,
            remove=f"{request.script_root}/likes/{token}/remove",
        )

    @pages.get("/likes/<token>")
    def likes_list(token: str) -> Response:
        key = read_likes_token(secret, token)
        return invalid() if key is None else likes_page(token, key)

    @pages.post("/likes/<token>/remove")
    def likes_remove(token: str) -> Response:
        key = read_likes_token(secret, token)
        if key is None:
            return invalid()
        paper_id = request.form.get("paper", "")
        with database() as db:
            removed = feedback_store.forget(db, key, paper_id, "like")
        in_file = _unlike_in_file(key, paper_id)
        if not (removed or in_file):
            return likes_page(token, key, "That paper is not one of your likes.")
        return likes_page(token, key, "Removed from your likes.")

    def _person(key: str) -> Subscriber | None:
        try:
            people, _ = subscribers.load(settings.subscribers_path)
        except DigestError:
            log.exception("cannot read the subscribers file")
            return None
        return next((p for p in people if p.key == key), None)

    def _unlike_in_file(key: str, paper_id: str) -> bool:
        """Take the paper out of the reader's likes column, if it is there."""
        try:
            person = _person(key)
            if person is None or paper_id not in person.likes:
                return False
            roster.change_likes(settings.subscribers_path, person.email, "unlike", [paper_id])
        except DigestError:
            log.exception("removing like %s of %s from the subscribers file failed", paper_id, key)
            return False
        return True

    return pages
