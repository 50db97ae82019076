"""The one place that wires the stages: fetch -> store -> match -> render -> send -> record.

A paper is recorded as delivered to a subscriber only after the mail server accepted that
subscriber's email. Each email is committed to the outbox (pending) before it is sent; a run
first finishes the pending emails an earlier run left (same Message-ID), then builds new ones.
One subscriber's failure (a bad row, a render error, a refused address) is reported and
skipped; a failed fetch or a lost mail server stops the run before anything more is sent.
Only one `digest send` runs on a database at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import filelock
import sqlite_utils

from digest import announce, store, subscribers
from digest import fetch as fetch_stage
from digest import render as render_stage
from digest import trending as trending_stage
from digest.config import Settings
from digest.errors import DigestError
from digest.mailer import Messenger, SendResult, message_bytes, new_message_id
from digest.match import (
    Hit,
    author_key,
    is_due,
    literal_pattern,
    literal_spans,
    needs_literal,
    owed_since,
    plan_digest,
)
from digest.models import Digest, Paper, RenderedEmail, Subscriber
from digest.subscribers import DAY_NAMES
from digest.tokens import unsubscribe_url

log = logging.getLogger(__name__)

PREVIEW_SENDER = "arXiv digest <digest@localhost>"
FAILED = ("failed", "deferred", "pending")  # outcomes that leave an email owed


@dataclass(frozen=True)
class Outcome:
    email: str
    # sent | failed | deferred | pending | previewed | nothing-new | suspended | not-due |
    # unsubscribed
    status: str
    papers: int = 0
    size: int = 0  # bytes of the whole message
    detail: str = ""
    resumed: bool = False  # a pending email of an earlier run, sent again as it was


@dataclass
class RunReport:
    run_id: int | None = None
    dry_run: bool = False
    papers_fetched: int = 0
    arxiv_requests: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, for standard error
    warnings: list[str] = field(default_factory=list)  # suspicious but not a failure
    subscribers: int = 0  # valid subscribers this run was for
    stopped: bool = False  # asked to stop (should_stop) before every subscriber was done
    left: int = 0  # when stopped: subscribers not served

    @property
    def sent(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "sent")

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in FAILED]

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
    on_start: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunReport:
    """One daily run. Raises DigestError when the run as a whole cannot go on.

    `on_start(n)` is called once the papers are in, before building the first of `n` emails;
    `progress(outcome)` after each subscriber. `should_stop()` is asked before each subscriber:
    when it says yes, the run ends there (the email in flight was finished and recorded) and is
    recorded with status `stopped`, so the next run still owes the others their digest."""
    now = now or datetime.now(UTC)
    report = RunReport(dry_run=dry_run)
    people, problems = subscribers.load(settings.subscribers_path)
    report.problems.extend(str(p) for p in problems)
    sender = PREVIEW_SENDER if dry_run and not settings.from_addr else settings.require_from()
    if settings.public_url and not settings.secret:
        report.warnings.append(
            "DIGEST_PUBLIC_URL is set but DIGEST_SECRET is not, so emails carry only a mailto: "
            "unsubscribe link; set DIGEST_SECRET (the same value for `digest serve`) to add "
            "one-click unsubscribe links"
        )

    db = store.open_db(settings.db_path)
    with run_lock(settings.db_path, shared=dry_run):
        if not dry_run:
            store.close_interrupted_runs(db)
        report.run_id = run_id = store.start_run(db, "dry-run" if dry_run else "send")
        try:
            _run(
                db, settings, people, sender, now, report, out_dir, progress, on_start, should_stop
            )
        except DigestError as exc:
            store.finish_run(db, run_id, "failed", message=str(exc), **_counts(report))
            raise
        status = "stopped" if report.stopped else "ok" if report.ok else "failed"
        lines = [*report.problems, *(f"{o.email}: {o.detail}" for o in report.failed)]
        if report.stopped:
            lines.insert(0, f"stopped before {report.left} of {report.subscribers} subscribers")
        message = "; ".join(lines)
        store.finish_run(db, run_id, status, message=message, **_counts(report))
    return report


@contextmanager
def run_lock(db_path: Path, *, shared: bool = False) -> Iterator[None]:
    """Only one `digest send` per database at a time. The lock is an OS file lock next to the
    database, so a run that dies (even by kill -9) holds it no longer. A dry run sends nothing
    and does not take it."""
    if shared:
        yield
        return
    path = f"{db_path}.lock"
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DigestError(
            f"another `digest send` is running on {db_path} (it holds {path}); this run did "
            f"nothing. Wait for it to finish; a run that died holds no lock."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _counts(report: RunReport) -> dict[str, object]:
    return {
        "papers_fetched": report.papers_fetched,
        "arxiv_requests": report.arxiv_requests,
        "emails_sent": report.sent,
        "emails_failed": len(report.failed),
        "warning": "; ".join(report.warnings) or None,
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
    on_start: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    def emit(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if progress:
            progress(outcome)

    def stop_here(left: int) -> bool:
        """Asked to stop (between two emails): the rest stays owed to the next run."""
        if should_stop is None or not should_stop():
            return False
        report.stopped, report.left = True, left
        return True

    report.subscribers = len(people)

    pending = [] if report.dry_run else store.pending_emails(db)
    if on_start:
        on_start(len(pending) + len(people))
    suppressed = store.suppressed_keys(db)
    due: list[Subscriber] = []
    for person in people:
        if person.key in suppressed:
            emit(Outcome(person.email, "unsubscribed"))
        elif not is_due(person, now, settings.tz):
            weekday = DAY_NAMES[person.weekday or 0].capitalize()
            emit(Outcome(person.email, "not-due", detail=f"weekly on {weekday}"))
        else:
            due.append(person)
    day = now.astimezone(settings.tz).date().isoformat()
    suspended = store.suspensions(db)
    outbox = _Outbox(
        db, settings, sender, report.run_id or 0, dry_run=report.dry_run, out=out_dir, emit=emit
    )
    try:
        if not report.dry_run:
            if due or pending:  # an unreachable server or a refused login stops us here
                outbox.connect()
            by_key = {person.key: person for person in people}
            for email in pending:  # first, what an earlier run committed but did not finish
                if stop_here(len(due)):
                    return
                if email.subscriber in suppressed:
                    store.mark_cancelled(db, email.message_id, "the subscriber unsubscribed")
                    continue
                outbox.resume(email, by_key.get(email.subscriber), suspended, day, now)
            outbox.finish_retries()
        if not due:
            return
        windows = {
            p.key: owed_since(
                p,
                now,
                settings.lookback_days,
                None if p.weekday is None else store.last_sent(db, p.key),
            )
            for p in due
        }
        since = min(windows.values())
        keywords = distinct_keywords(due)
        authors = list({author_key(a): a for p in due for a in p.authors}.values())
        fetched = fetch_stage.fetch(
            keywords,
            url=settings.arxiv_url,
            since=since,
            delay=settings.arxiv_delay,
            timeout=settings.arxiv_timeout,
            retries=settings.arxiv_retries,
            backoff=settings.retry_backoff,
            page_size=settings.arxiv_page_size,
            authors=authors,
        )
        report.papers_fetched, report.arxiv_requests = len(fetched.papers), fetched.requests
        store.save_papers(db, fetched.papers)
        report.warnings.extend(_check_fetch(db, report.run_id or 0, fetched.papers, now))
        board = trending_stage.refresh(db, settings, day, report.run_id or 0)
        if not report.dry_run:
            outbox.connect(refresh=True)  # the connection may have idled out during the fetch

        excludes = [phrase for p in due for phrase in p.exclude]
        hits, papers = match_keywords(db, distinct_keywords(due, excludes), since)
        followed = {author_key(a) for a in authors}
        by_author = {
            k: ids for k, ids in store.author_index(db, since, author_key).items() if k in followed
        }
        papers.update(store.papers_by_id(db, (i for ids in by_author.values() for i in ids)))
        for index, person in enumerate(due):
            if stop_here(len(due) - index):
                break
            if person.key in suspended and not report.dry_run:
                s = suspended[person.key]
                emit(
                    Outcome(
                        person.email,
                        "suspended",
                        detail=f"suspended since {s.since} ({s.reason}); nothing sent. "
                        f"`digest subscribers enable {person.email}` sends to it again",
                    )
                )
                continue
            window = windows[person.key]
            person_hits, person_papers = _with_refused(db, person, hits, papers, window)
            own_authors = {
                author_key(a): [
                    i for i in by_author.get(author_key(a), ()) if _new(papers, i, window)
                ]
                for a in person.authors
            }
            candidates = {pid for found in person_hits.values() for pid in found}
            candidates.update(i for ids in own_authors.values() for i in ids)
            taken = store.taken_ids(db, person.key, candidates)
            digest = plan_digest(
                person, person_hits, person_papers, taken, day, by_author=own_authors
            )
            digest = trending_stage.decorate(digest, board, settings.trending_top)
            outbox.deliver(digest, now)
        if not report.stopped:  # stopping: the refused-for-now emails stay pending, owed
            outbox.finish_retries()
    finally:
        outbox.close()


def _check_fetch(
    db: sqlite_utils.Database, run_id: int, papers: list[Paper], now: datetime
) -> list[str]:
    """Record the successful fetch; a warning when it found nothing new although arXiv
    announced papers since the last fetch."""
    previous = store.last_fetch(db, run_id)
    newest = max((store.now_iso(p.published) for p in papers), default=None)
    store.record_fetch(db, run_id, newest, now)
    last_fetch, seen_up_to = previous if previous else (None, None)
    new = [p for p in papers if seen_up_to is None or store.now_iso(p.published) > seen_up_to]
    if new or not announce.new_papers_expected(now, last_fetch):
        return []
    when = announce.last_announcement(now).strftime("%A %d %B %H:%M")
    warning = (
        f"arXiv returned no new papers although it announced new ones ({when} US Eastern); "
        f"nothing was lost, but if this repeats check DIGEST_ARXIV_URL and arXiv's status"
    )
    return [warning]


def distinct_keywords(people: Iterable[Subscriber], extra: Iterable[str] = ()) -> list[str]:
    """Every keyword any subscriber follows (then `extra`), once case-insensitively, in order."""
    seen: dict[str, str] = {}
    for person in people:
        for keyword in person.keywords:
            seen.setdefault(keyword.casefold(), keyword)
    for keyword in extra:
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
    _literal_filter(keywords, hits, papers)
    return hits, papers


def _new(papers: dict[str, Paper], paper_id: str, since: datetime) -> bool:
    return paper_id in papers and papers[paper_id].published >= since


def _with_refused(
    db: sqlite_utils.Database,
    person: Subscriber,
    hits: dict[str, dict[str, Hit]],
    papers: dict[str, Paper],
    since: datetime,
) -> tuple[dict[str, dict[str, Hit]], dict[str, Paper]]:
    """The run's hits for this subscriber's keywords and exclude phrases, first published in
    their window (`since`), plus the papers of their refused emails (still owed even once older
    than the window) that still match their keywords."""
    phrases = [*person.keywords, *person.exclude]
    own = {
        k.casefold(): {
            pid: hit for pid, hit in hits.get(k.casefold(), {}).items() if _new(papers, pid, since)
        }
        for k in phrases
    }
    known = {pid for found in own.values() for pid in found}
    extra = store.refused_ids(db, person.key) - known
    if not extra:
        return own, papers
    extra_hits = {k.casefold(): store.keyword_hits(db, k, None, extra) for k in phrases}
    extra_papers = store.papers_by_id(db, extra)
    _literal_filter(phrases, extra_hits, extra_papers)
    merged = {k: {**extra_hits.get(k, {}), **found} for k, found in own.items()}
    return merged, {**papers, **extra_papers}


def _literal_filter(
    keywords: Iterable[str], hits: dict[str, dict[str, Hit]], papers: dict[str, Paper]
) -> None:
    """Keywords whose meaning is in symbols (C++) must also appear literally."""
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


@dataclass
class _Item:
    """One email on its way: what to send and what became of the last try."""

    person: Subscriber
    message_id: str
    data: bytes
    papers: int
    size: int
    resumed: bool = False
    last: SendResult | None = None


class _Outbox:
    """Renders each digest and either previews it or sends it, recording only what was accepted.

    A refusal for now (4xx) or a lost connection is tried again within the run, `smtp_retries`
    times with a doubling backoff, after the other subscribers; then a refused email is left
    for the next run (deferred: its papers go in the next email), an email whose fate is
    unknown stays pending (sent again as it was). A 5xx is final and counts towards suspending
    the address."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: Settings,
        sender: str,
        run_id: int,
        *,
        dry_run: bool,
        out: Path,
        emit: Callable[[Outcome], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db, self.settings, self.sender, self.run_id = db, settings, sender, run_id
        self.dry_run, self.out, self.emit, self.sleep = dry_run, out, emit, sleep
        self.messenger: Messenger | None = None
        self.retry: list[_Item] = []

    def deliver(self, digest: Digest, now: datetime) -> None:
        person = digest.subscriber
        if not digest.entries:
            self.emit(Outcome(person.email, "nothing-new"))
            return
        rendered = self._render(digest)
        if rendered is None:
            return
        message_id = new_message_id(self.sender)
        data = message_bytes(
            rendered,
            sender=self.sender,
            to=person.email,
            message_id=message_id,
            when=now,
            unsubscribe_url=self._unsubscribe_link(person),
        )
        size = len(data)
        if self.dry_run:
            self._preview(person, rendered, data)
            self.emit(Outcome(person.email, "previewed", len(rendered.paper_ids), size))
            return
        self.connect()  # an unreachable server stops the run before anything is committed
        store.add_pending_email(
            self.db, self.run_id, person.key, message_id, rendered.paper_ids, digest.day
        )
        self._attempt(_Item(person, message_id, data, len(rendered.paper_ids), size))

    def resume(
        self,
        pending: store.PendingEmail,
        person: Subscriber | None,
        suspended: dict[str, store.Suspension],
        today: str,
        now: datetime,
    ) -> None:
        """Send a pending email of an earlier run again, as it was: same papers, same
        Message-ID (a reader's mail program can then drop it if the first one did arrive)."""
        if person is None:
            store.mark_cancelled(
                self.db, pending.message_id, "the address is no longer in the subscribers file"
            )
            return
        if person.key in suspended:
            return  # stays pending until the address is enabled again
        phrases = [*person.keywords, *person.exclude]
        hits = {
            phrase.casefold(): store.keyword_hits(self.db, phrase, None, pending.paper_ids)
            for phrase in phrases
        }
        papers = store.papers_by_id(self.db, pending.paper_ids)
        _literal_filter(phrases, hits, papers)
        by_author: dict[str, list[str]] = {}
        for paper_id, paper in papers.items():
            for author in paper.authors:
                by_author.setdefault(author_key(author), []).append(paper_id)
        digest = plan_digest(person, hits, papers, set(), pending.day or today, by_author=by_author)
        if self.settings.trending is not None:  # with the trending list stored for its day
            board = trending_stage.load(self.db, digest.day)
            digest = trending_stage.decorate(digest, board, self.settings.trending_top)
        rendered = self._render(digest) if digest.entries else None
        if rendered is None or not rendered.paper_ids:
            if not digest.entries:  # its papers no longer match the subscriber's keywords
                store.mark_cancelled(
                    self.db, pending.message_id, "its papers no longer match the keywords"
                )
            return
        if set(rendered.paper_ids) != set(pending.paper_ids):
            store.set_email_papers(self.db, pending.message_id, rendered.paper_ids)
        data = message_bytes(
            rendered,
            sender=self.sender,
            to=person.email,
            message_id=pending.message_id,
            when=now,
            unsubscribe_url=self._unsubscribe_link(person),
        )
        item = _Item(person, pending.message_id, data, len(rendered.paper_ids), len(data), True)
        self.connect()
        self._attempt(item)

    def _unsubscribe_link(self, person: Subscriber) -> str | None:
        if self.settings.public_url and self.settings.secret:
            return unsubscribe_url(self.settings.public_url, self.settings.secret, person.key)
        return None

    def _render(self, digest: Digest) -> RenderedEmail | None:
        person = digest.subscriber
        try:
            rendered = render_stage.render(
                digest,
                sender=self.sender,
                budget=self.settings.html_budget,
                unsubscribe_url=self._unsubscribe_link(person),
            )
        except Exception as exc:  # a template or data bug must skip one subscriber, not the run
            log.exception("rendering the digest for %s failed", person.email)
            detail = f"could not render the email: {exc!r}"
            self.emit(Outcome(person.email, "failed", detail=detail))
            return None
        if not rendered.paper_ids:
            self.emit(Outcome(person.email, "failed", detail="not even one paper fits in an email"))
            return None
        return rendered

    def connect(self, *, refresh: bool = False) -> None:
        """Open the connection to the mail server if it is not open (`refresh`: check it is
        still alive, else reopen it). Raises SmtpError when it cannot."""
        if self.messenger is None:
            self.messenger = Messenger(self.settings)
        if refresh:
            self.messenger.refresh()
        elif not self.messenger.connected:
            self.messenger.connect()

    def _attempt(self, item: _Item) -> None:
        """One try; a DigestError (the server is gone or refuses us) leaves the email pending
        and stops the run."""
        assert self.messenger is not None
        result = self.messenger.send(item.data, item.person.email)
        item.last = result
        email, papers, size = item.person.email, item.papers, item.size
        if result.accepted:
            store.mark_sent(self.db, item.message_id)
            self.emit(Outcome(email, "sent", papers, size, resumed=item.resumed))
            return
        store.record_attempt(self.db, item.message_id, result.code, result.detail)
        if result.permanent:
            detail = result.detail
            if store.mark_failed(
                self.db, item.message_id, detail, suspend_after=self.settings.suspend_after
            ):
                detail += (
                    f"; after {self.settings.suspend_after} permanent failures in a row the "
                    f"address is suspended: `digest subscribers enable {email}` sends to it again"
                )
            self.emit(Outcome(email, "failed", papers, size, detail, item.resumed))
            return
        log.warning("%s: %s; trying again later in this run", email, result.detail)
        self.retry.append(item)

    def finish_retries(self) -> None:
        """Try the temporarily refused emails again, waiting longer each round."""
        for attempt in range(1, self.settings.smtp_retries + 1):
            if not self.retry:
                return
            self.sleep(fetch_stage.retry_delay(attempt, self.settings.retry_backoff))
            queue, self.retry = self.retry, []
            for item in queue:
                self._attempt(item)
        for item in self.retry:
            assert item.last is not None
            tries = self.settings.smtp_retries + 1
            tried = "tried once" if tries == 1 else f"tried {tries} times"
            email, papers, size = item.person.email, item.papers, item.size
            if item.last.lost:  # the server may have taken it: send this very email next run
                detail = (
                    f"{item.last.detail} ({tried}); the email stays pending "
                    f"and goes out again as it is with the next run"
                )
                self.emit(Outcome(email, "pending", papers, size, detail, item.resumed))
            else:
                detail = (
                    f"{item.last.detail} ({tried}); its papers stay owed and go in the next email"
                )
                store.mark_deferred(self.db, item.message_id, detail)
                self.emit(Outcome(email, "deferred", papers, size, detail, item.resumed))
        self.retry = []

    def _preview(self, person: Subscriber, rendered: RenderedEmail, eml: bytes) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        stem = person.email.replace("/", "_").replace("\\", "_")
        (self.out / f"{stem}.html").write_text(rendered.html, encoding="utf-8")
        (self.out / f"{stem}.txt").write_text(rendered.text, encoding="utf-8")
        (self.out / f"{stem}.eml").write_bytes(eml)

    def close(self) -> None:
        if self.messenger is not None:
            self.messenger.close()


def enable_address(settings: Settings, email: str) -> store.Suspension | None:
    """Send to a suspended address again; returns the suspension lifted (None: it was not)."""
    db = store.open_db(settings.db_path)
    return store.enable_address(db, email.strip().casefold())
