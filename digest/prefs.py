"""The preferences page: `/preferences/<token>`, linked from every email's footer
(`tokens.preferences_url`), signed like the unsubscribe link.

A reader adds and removes keywords, exclude phrases, categories and followed authors, sets how
often (daily or weekly on a day) and whether the trending section is shown, or unsubscribes.
Every change is one locked edit of subscribers.csv (`roster.change_list`, `roster.update`),
validated by the rules of `digest subscribers check`; a refused change says why and changes
nothing. A GET never changes anything. The page previews which papers of the last 7 days in
the database their keywords would have brought (or keywords they are trying: `?value=...`,
the Preview button), planned by the functions `digest send` uses (store.keyword_hits,
match.plan_digest).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, request

from digest import roster, store
from digest.errors import DigestError
from digest.match import author_key, plan_digest
from digest.models import Digest, Subscriber
from digest.pages import MAX_FIELD, db, field, invalid, notice, page, secret, settings
from digest.subscribers import DAY_NAMES, WEEKDAYS, format_frequency, parse_keywords
from digest.tokens import PREFERENCES_SALT, make_token, read_token

pages = Blueprint("preferences", __name__)

PREVIEW_DAYS = 7
PREVIEW_PER_SECTION = 5
LISTS = {  # column: (heading, hint, placeholder)
    "keywords": ("Keywords", "A paper matches when its title or abstract has the phrase.",
                 "e.g. graph neural network"),
    "exclude": ("Exclude phrases", "A keyword match is dropped when the paper has one of these.",
                "e.g. survey"),
    "categories": ("Categories", "Only papers in these arXiv categories (none: any).",
                   "e.g. cs.CL or cs.*"),
    "authors": ("Authors you follow", "Their papers, whatever the keywords.", "e.g. Li Wei"),
}  # fmt: skip
FREQUENCIES = [("daily", "Every day")] + [
    (f"weekly:{short}", f"Weekly, on {day.capitalize()}")
    for short, day in zip(WEEKDAYS, DAY_NAMES, strict=True)
]


def preview(subscriber: Subscriber, now: datetime | None = None) -> Digest:
    """The papers first published in the last PREVIEW_DAYS that this subscriber's keywords,
    exclude phrases, categories and authors would have brought (delivered or not)."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=PREVIEW_DAYS)
    database = db()
    hits = {
        phrase.casefold(): store.keyword_hits(database, phrase, since)
        for phrase in (*subscriber.keywords, *subscriber.exclude)
    }
    by_author: dict[str, list[str]] = {}
    if subscriber.authors:
        wanted = {author_key(a) for a in subscriber.authors}
        index = store.author_index(database, since, author_key)
        by_author = {k: ids for k, ids in index.items() if k in wanted}
    ids = {pid for found in hits.values() for pid in found}
    ids |= {pid for found in by_author.values() for pid in found}
    papers = store.papers_by_id(database, ids)
    day = now.astimezone(settings().tz).date().isoformat()
    return plan_digest(subscriber, hits, papers, set(), day, by_author=by_author, since=since)


def _show(
    token: str, key: str, message: str | None = None, error: bool = False, status: int = 200
) -> Response:
    person = roster.lookup(settings().subscribers_path, key)
    if person is None:
        return notice("Your arXiv digest", "This address is not on the list right now.", 404)
    trying = parse_keywords(request.args.get("value", "")[:MAX_FIELD])
    shown = replace(person, keywords=trying) if trying else person
    return page(
        "preferences.html",
        "Your digest preferences",
        status,
        message=message,
        error=error,
        person=person,
        suppressed=store.is_suppressed(db(), key),
        base=f"{request.script_root}/preferences/{token}",
        unsubscribe=f"{request.script_root}/unsubscribe/{make_token(secret(), key)}",
        lists=LISTS,
        frequencies=FREQUENCIES,
        frequency=format_frequency(person.weekday),
        trying=trying,
        preview=preview(shown),
        preview_days=PREVIEW_DAYS,
        per_section=PREVIEW_PER_SECTION,
    )


@pages.get("/preferences/<token>")
def preferences(token: str) -> Response:
    key = read_token(secret(), token, PREFERENCES_SALT)
    return invalid() if key is None else _show(token, key)


@pages.post("/preferences/<token>/<column>/<action>")
def change(token: str, column: str, action: str) -> Response:
    key = read_token(secret(), token, PREFERENCES_SALT)
    if key is None:
        return invalid()
    if column not in LISTS or action not in ("add", "remove"):
        return notice("Not found", "There is no such change.", 404, error=True)
    value = field("value")
    if not parse_keywords(value):
        return _show(token, key, f"Write the {roster.ITEM_NAMES[column]} to {action}.", True, 400)
    try:
        roster.change_list(settings().subscribers_path, key, column, action, [value])
    except DigestError as exc:
        return _show(token, key, f"Nothing was changed: {_web(exc)}", True, 409)
    done = "Added" if action == "add" else "Removed"
    return _show(token, key, f"{done} '{value}'. Your next digest follows it.")


@pages.post("/preferences/<token>/settings")
def save_settings(token: str) -> Response:
    key = read_token(secret(), token, PREFERENCES_SALT)
    if key is None:
        return invalid()
    options = {"frequency": field("frequency"), "trending": "yes" if field("trending") else "no"}
    try:
        roster.update(settings().subscribers_path, key, options)
    except DigestError as exc:
        return _show(token, key, f"Nothing was changed: {_web(exc)}", True, 409)
    return _show(token, key, "Saved. Your next digest follows it.")


def _web(error: DigestError) -> str:
    """A refusal as a reader should read it (the CLI's advice does not apply on the web)."""
    text = str(error).removesuffix("; nothing was written")
    if "without a keyword" in text:
        return "that is your only keyword; add another first, or unsubscribe"
    return text
