"""The one place that wires the stages: fetch -> store -> match -> render -> send -> record.

A paper is recorded as delivered to a subscriber only after the mail server accepted that
subscriber's email. One subscriber's failure (a bad row, a render error, a refused address) is
reported and skipped; a failed fetch or a lost mail server stops the run before anything more
is sent or recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from digest import fetch as fetch_stage
from digest import render as render_stage
from digest import store, subscribers
from digest.config import Settings
from digest.errors import DigestError
from digest.mailer import Messenger, build_message, new_message_id
from digest.match import Hit, literal_pattern, literal_spans, needs_literal, plan_digest
from digest.models import Digest, Paper, RenderedEmail, Subscriber

log = logging.getLogger(__name__)

PREVIEW_SENDER = "arXiv digest <digest@localhost>"


@dataclass(frozen=True)
class Outcome:
    email: str
    status: str  # sent | failed | previewed | nothing-new
    papers: int = 0
    size: int = 0  # bytes of the whole message
    detail: str = ""


@dataclass
class RunReport:
    run_id: int | None = None
    dry_run: bool = False
    papers_fetched: int = 0
    arxiv_requests: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, for standard error

    @property
    def sent(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "sent")

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed


def run_send(
    settings: Settings,
    *,
    dry_run: bool = False,
    out_dir: Path = Path("previews"),
    now: datetime | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> RunReport:
    """One daily run. Raises DigestError when the run as a whole cannot go on."""
    now = now or datetime.now(UTC)
    report = RunReport(dry_run=dry_run)
    people, problems = subscribers.load(settings.subscribers_path)
    report.problems.extend(str(p) for p in problems)
    sender = PREVIEW_SENDER if dry_run and not settings.from_addr else settings.require_from()

    db = store.open_db(settings.db_path)
    report.run_id = run_id = store.start_run(db, "dry-run" if dry_run else "send")
    try:
        _run(db, settings, people, sender, now, report, out_dir, progress)
    except DigestError as exc:
        store.finish_run(db, run_id, "failed", message=str(exc), **_counts(report))
        raise
    status = "ok" if report.ok else "failed"
    message = "; ".join([*report.problems, *(f"{o.email}: {o.detail}" for o in report.failed)])
    store.finish_run(db, run_id, status, message=message, **_counts(report))
    return report


def _counts(report: RunReport) -> dict[str, int]:
    return {
        "papers_fetched": report.papers_fetched,
        "arxiv_requests": report.arxiv_requests,
        "emails_sent": report.sent,
        "emails_failed": len(report.failed),
    }


def _run(
    db: sqlite_utils.Database,
    settings: Settings,
    people: list[Subscriber],
    sender: str,
    now: datetime,
    report: RunReport,
    out_dir: Path,
    progress: Callable[[Outcome], None] | None,
) -> None:
    if not people:
        return
    since = fetch_stage.lookback_start(now, settings.lookback_days)
    keywords = distinct_keywords(people)
    fetched = fetch_stage.fetch(
        keywords,
        url=settings.arxiv_url,
        since=since,
        delay=settings.arxiv_delay,
        timeout=settings.arxiv_timeout,
    )
    report.papers_fetched, report.arxiv_requests = len(fetched.papers), fetched.requests
    store.save_papers(db, fetched.papers)

    hits, papers = match_keywords(db, keywords, since)
    day = now.astimezone(settings.tz).date().isoformat()
    outbox = _Outbox(db, settings, sender, report.run_id or 0, dry_run=report.dry_run, out=out_dir)
    try:
        for person in people:
            candidates = {pid for k in person.keywords for pid in hits.get(k.casefold(), {})}
            delivered = store.delivered_ids(db, person.key, candidates)
            digest = plan_digest(person, hits, papers, delivered, day)
            outcome = outbox.deliver(digest, now)
            report.outcomes.append(outcome)
            if progress:
                progress(outcome)
    finally:
        outbox.close()


def distinct_keywords(people: Iterable[Subscriber]) -> list[str]:
    """Every keyword any subscriber follows, once (case-insensitively), in first-seen order."""
    seen: dict[str, str] = {}
    for person in people:
        for keyword in person.keywords:
            seen.setdefault(keyword.casefold(), keyword)
    return list(seen.values())


def match_keywords(
    db: sqlite_utils.Database, keywords: Iterable[str], since: datetime
) -> tuple[dict[str, dict[str, Hit]], dict[str, Paper]]:
    """One FTS query per distinct keyword: keyword (casefolded) -> paper id -> where it matched."""
    hits: dict[str, dict[str, Hit]] = {}
    for keyword in keywords:
        hits[keyword.casefold()] = store.keyword_hits(db, keyword, since)
    papers = store.papers_by_id(db, (pid for found in hits.values() for pid in found))
    for keyword in keywords:
        if needs_literal(keyword):
            pattern = literal_pattern(keyword)
            found = {}
            for pid in hits[keyword.casefold()]:
                title_spans = literal_spans(pattern, papers[pid].title)
                abstract_spans = literal_spans(pattern, papers[pid].abstract)
                if title_spans or abstract_spans:
                    found[pid] = (title_spans, abstract_spans)
            hits[keyword.casefold()] = found
    return hits, papers


class _Outbox:
    """Renders each digest and either previews it or sends it, recording only what was accepted."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: Settings,
        sender: str,
        run_id: int,
        *,
        dry_run: bool,
        out: Path,
    ) -> None:
        self.db, self.settings, self.sender, self.run_id = db, settings, sender, run_id
        self.dry_run, self.out = dry_run, out
        self.messenger: Messenger | None = None

    def deliver(self, digest: Digest, now: datetime) -> Outcome:
        person = digest.subscriber
        if not digest.entries:
            return Outcome(person.email, "nothing-new")
        try:
            rendered = render_stage.render(
                digest, sender=self.sender, budget=self.settings.html_budget
            )
        except Exception as exc:  # a template or data bug must skip one subscriber, not the run
            log.exception("rendering the digest for %s failed", person.email)
            return Outcome(person.email, "failed", detail=f"could not render the email: {exc!r}")
        if not rendered.paper_ids:
            return Outcome(person.email, "failed", detail="not even one paper fits in an email")
        message_id = new_message_id(self.sender)
        msg = build_message(
            rendered, sender=self.sender, to=person.email, message_id=message_id, when=now
        )
        size = len(msg.as_bytes())
        if self.dry_run:
            self._preview(person, rendered, msg.as_bytes())
            return Outcome(person.email, "previewed", len(rendered.paper_ids), size)
        store.add_pending_email(self.db, self.run_id, person.key, message_id, rendered.paper_ids)
        if self.messenger is None:
            self.messenger = Messenger(self.settings)
            self.messenger.connect()
        try:
            result = self.messenger.send(msg, person.email)
        except DigestError as exc:
            store.mark_failed(self.db, message_id, str(exc))
            raise
        if not result.accepted:
            detail = f"the mail server refused it: {result.code} {result.reply}"
            store.mark_failed(self.db, message_id, detail)
            return Outcome(person.email, "failed", len(rendered.paper_ids), size, detail)
        store.mark_sent(self.db, message_id)
        return Outcome(person.email, "sent", len(rendered.paper_ids), size)

    def _preview(self, person: Subscriber, rendered: RenderedEmail, eml: bytes) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        stem = person.email.replace("/", "_").replace("\\", "_")
        (self.out / f"{stem}.html").write_text(rendered.html, encoding="utf-8")
        (self.out / f"{stem}.txt").write_text(rendered.text, encoding="utf-8")
        (self.out / f"{stem}.eml").write_bytes(eml)

    def close(self) -> None:
        if self.messenger is not None:
            self.messenger.close()
