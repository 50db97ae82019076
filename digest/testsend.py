"""A test send: one subscriber's digest of what they are owed now, to any address.

`digest send --subscriber EMAIL --to ADDRESS` plans, builds and signs exactly the email the
subscriber's next `digest send` would build (their papers, their links), with the Subject
marked as a test, and sends it to ADDRESS over one SMTP connection. Nothing is recorded: no
run, no outbox row, no delivery; the subscriber's own next email still carries every paper.
The papers fetched from arXiv are stored, as any fetch's are (a cache, not a delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from digest import fetch as fetch_stage
from digest import plan, store, subscribers
from digest import trending as trending_stage
from digest.build import Builder, dkim_signer
from digest.config import Settings
from digest.errors import DigestError
from digest.mailer import header_value
from digest.match import distinct_keywords
from digest.models import subscriber_key
from digest.report import Timings
from digest.smtp import Messenger

TEST_MARK = "[test] "


@dataclass(frozen=True)
class SentTest:
    to: str
    subscriber: str
    papers: int
    size: int
    accepted: bool
    detail: str


def send_test(settings: Settings, email: str, to: str, *, now: datetime | None = None) -> SentTest:
    """Send `email`'s digest to `to`. Raises DigestError when it cannot be built or sent."""
    now = now or datetime.now(UTC)
    to = header_value(to)
    if "@" not in to:
        raise DigestError(f"--to {to!r} is not an email address")
    people, _ = subscribers.load(settings.subscribers_path)
    person = next((p for p in people if p.key == subscriber_key(email)), None)
    if person is None:
        raise DigestError(
            f"{email} is not a valid subscriber in {settings.subscribers_path}; "
            f"`digest subscribers list` shows who is"
        )
    sender = settings.require_from()
    db = store.open_db(settings.db_path)
    win = plan.windows(db, [person], now, settings.lookback_days)
    fetched = fetch_stage.fetch(
        distinct_keywords([person]),
        url=settings.arxiv_url,
        since=win.earliest,
        delay=settings.arxiv_delay,
        timeout=settings.arxiv_timeout,
        retries=settings.arxiv_retries,
        backoff=settings.retry_backoff,
        page_size=settings.arxiv_page_size,
        authors=plan.followed_authors([person]),
    )
    store.save_papers(db, fetched.papers)
    day = now.astimezone(settings.tz).date().isoformat()
    board = trending_stage.load(db, day) if settings.trending else trending_stage.Board()
    planner = plan.Planner(db, [person], win, day, board, settings.trending_top)
    digest = planner.plan([person])[person.key]
    if not digest.entries:
        raise DigestError(f"{person.email} is owed no papers now: there is nothing to send")
    built = Builder(settings, sender, Timings()).build(digest, now, to=to, subject_mark=TEST_MARK)
    data = built.data
    signer = dkim_signer(settings)
    if signer is not None:
        data = signer.seal(data, built.body_hash)
    with Messenger(settings) as messenger:
        result = messenger.send(data, to)
    return SentTest(to, person.email, built.papers, len(data), result.accepted, result.detail)
