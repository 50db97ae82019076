"""The one place that wires the stages: fetch -> store -> match -> render -> send -> record.

A paper is recorded as delivered to a subscriber only after the mail server accepted that
subscriber's email. Each email is committed to the outbox (pending) before it is sent; a run
first finishes the pending emails an earlier run left (same Message-ID), then builds new ones.
One subscriber's failure (a bad row, a render error, a refused address) is reported and
skipped; a failed fetch or a lost mail server stops the run before anything more is sent.
Only one `digest send` runs on a database at a time.
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import resource
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import filelock
import sqlite_utils

from digest import announce, store, subscribers
from digest import fetch as fetch_stage
from digest import render as render_stage
from digest import trending as trending_stage
from digest.config import Settings
from digest.errors import DigestError, SmtpError
from digest.mailer import Messenger, SendResult, Spacer, message_bytes, new_message_id
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
from digest.models import Digest, Paper, RenderedEmail, Section, Subscriber
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
    `progress(outcome)` after each subscriber, in the subscribers' order, on this thread.
    `should_stop()` is asked before each subscriber and while waiting for the mail server: when
    it says yes, nothing more is handed out (the emails in flight are finished and recorded) and
    the run is recorded with status `stopped`, so the next run still owes the others their
    digest."""
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
        timings = Timings()
        try:
            _run(
                db,
                settings,
                people,
                sender,
                now,
                report,
                out_dir,
                progress,
                on_start,
                should_stop,
                timings,
            )
        except DigestError as exc:
            store.finish_run(
                db,
                run_id,
                "failed",
                message=str(exc),
                timings=timings.as_json(),
                **_counts(report),
            )
            raise
        status = "stopped" if report.stopped else "ok" if report.ok else "failed"
        lines = [*report.problems, *(f"{o.email}: {o.detail}" for o in report.failed)]
        if report.stopped:
            lines.insert(0, f"stopped before {report.left} of {report.subscribers} subscribers")
        message = "; ".join(lines)
        store.finish_run(
            db, run_id, status, message=message, timings=timings.as_json(), **_counts(report)
        )
    return report


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector from walking every object that exists now (the run's papers,
    hits, subscribers) again and again while many short-lived ones are made (gc.freeze); they
    are collectable again afterwards. Planning 10,000 subscribers takes half the time."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


CHUNK = 200  # subscribers planned together: one bulk query for their deliveries and refusals


@dataclass
class Timings:
    """How long the stages of one run took; stored as JSON in `runs.timings` (bench/ reads
    these exact keys)."""

    fetch_s: float = 0.0  # the arXiv fetch and storing its papers
    match_s: float = 0.0  # the keyword queries plus every subscriber's planning
    build: array = field(default_factory=lambda: array("d"))  # ms per email: render + bytes
    send_started: float | None = None  # when the first email was handed to the senders
    send_ended: float | None = None  # when the last result came back
    emails: int = 0  # emails the mail server accepted
    email_bytes: int = 0  # bytes of every email built
    built: int = 0
    blocks_s: float = 0.0  # finishing the papers' blocks for each batch (Renderer.prepare)
    assembled: int = 0  # emails joined from finished pieces
    rendered_in_full: int = 0  # emails the renderer had to render the slow way

    def as_json(self) -> str:
        send_s = (
            self.send_ended - self.send_started
            if self.send_started is not None and self.send_ended is not None
            else 0.0
        )
        return json.dumps(
            {
                "fetch_s": round(self.fetch_s, 4),
                "match_s": round(self.match_s, 4),
                "build_ms_median": round(statistics.median(self.build), 4) if self.build else 0.0,
                "send_s": round(send_s, 4),
                "emails": self.emails,
                "messages_per_s": round(self.emails / send_s, 2) if send_s > 0 else 0.0,
                "avg_email_bytes": round(self.email_bytes / self.built) if self.built else 0,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "blocks_s": round(self.blocks_s, 4),
                "assembled": self.assembled,
                "rendered_in_full": self.rendered_in_full,
            }
        )


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
    timings: Timings | None = None,
) -> None:
    timings = timings or Timings()

    def emit(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if outcome.status == "sent":
            timings.emails += 1
        if progress:
            progress(outcome)

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
        db,
        settings,
        sender,
        report.run_id or 0,
        dry_run=report.dry_run,
        out=out_dir,
        emit=emit,
        timings=timings,
        should_stop=should_stop,
    )

    def stop_here(left: int) -> bool:
        """Asked to stop (between two emails): the rest stays owed to the next run."""
        if not outbox.stopping():
            return False
        report.stopped, report.left = True, left
        return True

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
            outbox.drain()
            if stop_here(len(due)):
                return
            outbox.finish_retries()
        if not due:
            return
        weekly = store.last_sent_many(db, (p.key for p in due if p.weekday is not None))
        daily_since = now - timedelta(days=settings.lookback_days)
        windows = {
            p.key: owed_since(p, now, settings.lookback_days, weekly.get(p.key))
            for p in due
            if p.weekday is not None
        }
        since = min([daily_since, *windows.values()])
        keywords = distinct_keywords(due)
        authors = list({author_key(a): a for p in due for a in p.authors}.values())
        started = time.perf_counter()
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
        timings.fetch_s = time.perf_counter() - started
        report.warnings.extend(_check_fetch(db, report.run_id or 0, fetched.papers, now))
        board = trending_stage.refresh(db, settings, day, report.run_id or 0)
        if not report.dry_run:
            outbox.connect(refresh=True)  # the connection may have idled out during the fetch

        started = time.perf_counter()
        excludes = [phrase for p in due for phrase in p.exclude]
        hits, papers = match_keywords(db, distinct_keywords(due, excludes), since)
        followed = {author_key(a) for a in authors}
        by_author = {
            k: ids for k, ids in store.author_index(db, since, author_key).items() if k in followed
        }
        papers.update(store.papers_by_id(db, (i for ids in by_author.values() for i in ids)))
        timings.match_s = time.perf_counter() - started
        with _frozen_heap():  # papers, hits and subscribers live until the loop ends
            for chunk_start in range(0, len(due), CHUNK):
                started = time.perf_counter()
                chunk = due[chunk_start : chunk_start + CHUNK]
                active = [p for p in chunk if report.dry_run or p.key not in suspended]
                refused = store.refused_many(db, [p.key for p in active])
                drafts: dict[str, Digest] = {}
                for person in active:  # planned as if nothing had been delivered yet...
                    window = windows.get(person.key, daily_since)
                    own_refused = refused.get(person.key)
                    if own_refused:  # rare: papers of a refused email, owed past the window
                        drafts[person.key] = _plan_with_refused(
                            db, person, hits, papers, by_author, own_refused, window, day
                        )
                    else:
                        drafts[person.key] = plan_digest(
                            person,
                            hits,
                            papers,
                            set(),
                            day,
                            by_author=by_author,
                            since=window if window > since else None,  # else: all are new
                        )
                # ...then one look-up of exactly those (subscriber, paper) pairs for the chunk
                taken = store.taken_many(db, {k: d.paper_ids for k, d in drafts.items()})
                planned = {
                    key: trending_stage.decorate(
                        _without(draft, taken.get(key, set())), board, settings.trending_top
                    )
                    for key, draft in drafts.items()
                }
                timings.match_s += time.perf_counter() - started
                outbox.prepare(planned.values())
                for index, person in enumerate(chunk, start=chunk_start):
                    if stop_here(len(due) - index):
                        break
                    if person.key not in planned:
                        s = suspended[person.key]
                        outbox.note(
                            Outcome(
                                person.email,
                                "suspended",
                                detail=f"suspended since {s.since} ({s.reason}); nothing sent. "
                                f"`digest subscribers enable {person.email}` sends to it again",
                            )
                        )
                        continue
                    outbox.deliver(planned.pop(person.key), now)
                if report.stopped:
                    break
        outbox.drain()
        if not report.stopped and not outbox.withdrawn:  # stopping: refused-for-now emails
            outbox.finish_retries()  # stay pending, owed
    finally:
        outbox.close()
        # Still owed: built but never handed to the mail server, or handed out and cut off (or
        # refused for now) when the run halted, so never retried: they stay pending.
        owed = outbox.withdrawn + (len(outbox.retry) if outbox.halted else 0)
        if owed:
            report.stopped = True
            report.left += owed


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
    refused: set[str],
) -> tuple[dict[str, dict[str, Hit]], dict[str, Paper]]:
    """The run's hits for this subscriber's keywords and exclude phrases, first published in
    their window (`since`), plus the papers of their `refused` emails (still owed even once
    older than the window) that still match their keywords."""
    phrases = [*person.keywords, *person.exclude]
    own = {
        k.casefold(): {
            pid: hit for pid, hit in hits.get(k.casefold(), {}).items() if _new(papers, pid, since)
        }
        for k in phrases
    }
    known = {pid for found in own.values() for pid in found}
    extra = refused - known
    if not extra:
        return own, papers
    extra_hits = {k.casefold(): store.keyword_hits(db, k, None, extra) for k in phrases}
    extra_papers = store.papers_by_id(db, extra)
    _literal_filter(phrases, extra_hits, extra_papers)
    merged = {k: {**extra_hits.get(k, {}), **found} for k, found in own.items()}
    return merged, {**papers, **extra_papers}


def _plan_with_refused(
    db: sqlite_utils.Database,
    person: Subscriber,
    hits: dict[str, dict[str, Hit]],
    papers: dict[str, Paper],
    by_author: dict[str, list[str]],
    refused: set[str],
    since: datetime,
    day: str,
) -> Digest:
    """A subscriber with papers of refused emails still owed: the run's papers in their window
    plus those (the common case, without, is one `plan_digest` call with `since`)."""
    person_hits, person_papers = _with_refused(db, person, hits, papers, since, refused)
    own_authors = {
        author_key(a): [i for i in by_author.get(author_key(a), ()) if _new(papers, i, since)]
        for a in person.authors
    }
    return plan_digest(person, person_hits, person_papers, set(), day, by_author=own_authors)


def _without(digest: Digest, taken: set[str]) -> Digest:
    """`digest` without the papers in `taken` (sections left empty dropped): what
    `plan_digest` gives when told those papers were delivered already."""
    if not taken or taken.isdisjoint(digest.paper_ids):
        return digest
    sections = []
    for section in digest.sections:
        entries = tuple(e for e in section.entries if e.paper.id not in taken)
        if entries:
            sections.append(Section(section.keyword, entries))
    return replace(digest, sections=tuple(sections))


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
    seq: int = 0  # its place in the order outcomes are reported
    new: store.NewEmail | None = None  # not in the outbox yet: commit it before handing it out
    tries: int = 0
    connection: int = 0  # the sender it was last handed to


SENDER_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005


class _Senders:
    """One thread per SMTP connection, each with its own Messenger reused for many messages.
    They only send: results go back to the main thread, which does every database write.
    Each email goes to the connection with the fewest emails waiting, in turn among equals,
    so every connection carries its share."""

    def __init__(self, settings: Settings) -> None:
        spacer = Spacer(settings.smtp_rate)  # DIGEST_SMTP_RATE is for all connections together
        self.messengers = [Messenger(settings, spacer) for _ in range(settings.smtp_connections)]
        self.jobs: list[queue.SimpleQueue[_Item | None]] = [
            queue.SimpleQueue() for _ in self.messengers
        ]
        self.load = [0] * len(self.messengers)  # emails handed to each, result not yet taken
        self.turn = 0
        self.results: queue.SimpleQueue[tuple[_Item, SendResult | Exception]] = queue.SimpleQueue()
        self.threads: list[tuple[threading.Thread, queue.SimpleQueue[_Item | None]]] = []
        self.switch_interval: float | None = None

    def connect(self, *, refresh: bool = False) -> None:
        """Open every connection (`refresh`: check each is still alive, else reopen it); only
        while no message is out. Raises SmtpError when one cannot be opened."""
        for n, messenger in enumerate(list(self.messengers)):
            try:
                if refresh:
                    messenger.refresh()
                elif not messenger.connected:
                    messenger.connect()
            except SmtpError as exc:
                if n == 0 or self.threads:
                    raise
                # e.g. a server that limits connections per client: go on with fewer
                log.warning("sending over %d SMTP connections, not more: %s", n, exc)
                del self.messengers[n:], self.jobs[n:], self.load[n:]
                return

    def submit(self, item: _Item) -> None:
        if not self.threads:
            # The senders mostly wait on the server; when a reply comes they must get the GIL
            # from the main thread (building the next emails) at once, not after the default
            # 5 ms, or each connection idles for a few ms at every reply.
            self.switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SENDER_SWITCH_INTERVAL)
            for n, (messenger, jobs) in enumerate(zip(self.messengers, self.jobs, strict=True)):
                thread = threading.Thread(
                    target=self._work, args=(messenger, jobs), name=f"smtp-{n + 1}", daemon=True
                )
                thread.start()
                self.threads.append((thread, jobs))
        count = len(self.messengers)
        order = [(self.turn + k) % count for k in range(count)]
        chosen = min(order, key=lambda n: self.load[n])
        self.turn = (chosen + 1) % count
        item.connection = chosen
        self.load[chosen] += 1
        self.jobs[chosen].put(item)

    def done(self, item: _Item) -> None:
        self.load[item.connection] -= 1

    def _work(self, messenger: Messenger, jobs: queue.SimpleQueue[_Item | None]) -> None:
        while (item := jobs.get()) is not None:
            try:
                result: SendResult | Exception = messenger.send(item.data, item.person.email)
            except Exception as exc:  # SmtpError (the server is gone) or a bug: the main
                result = exc  # thread stops the run; the email stays pending
            self.results.put((item, result))

    def take_back(self) -> list[_Item]:
        """The emails handed out that no sender has picked up yet."""
        items = []
        for jobs in self.jobs:
            while True:
                try:
                    item = jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    items.append(item)
                    self.done(item)
        return items

    def close(self) -> None:
        for _, jobs in self.threads:
            jobs.put(None)
        for thread, _ in self.threads:
            thread.join()
        self.threads = []
        if self.switch_interval is not None:
            sys.setswitchinterval(self.switch_interval)
            self.switch_interval = None
        for messenger in self.messengers:
            messenger.close()


class _Outbox:
    """Renders each digest and either previews it or sends it, recording only what was accepted.

    Sending: the main thread builds each email and commits it to the outbox (pending) before
    handing it to one of `DIGEST_SMTP_CONNECTIONS` sender threads; it does every database
    write. Built emails wait in a small buffer and are committed in one transaction when a
    sender is idle or the buffer is full, together with the emails accepted since the last
    commit (marked sent; at least every SENT_BATCH emails or SENT_EVERY seconds, and before
    the run ends). Outcomes are reported in the subscribers' order.

    A refusal for now (4xx) or a lost connection is tried again within the run, `smtp_retries`
    times with a doubling backoff, after the other subscribers; then a refused email is left
    for the next run (deferred: its papers go in the next email), an email whose fate is
    unknown stays pending (sent again as it was). A 5xx is final and counts towards suspending
    the address."""

    PER_CONNECTION = 4  # emails built ahead per connection (memory stays flat)
    SENT_BATCH = 50
    SENT_EVERY = 0.5  # seconds
    TICK = 0.1  # seconds between two looks at `should_stop` while waiting

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
        timings: Timings,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db, self.settings, self.sender, self.run_id = db, settings, sender, run_id
        self.dry_run, self.out, self.emit, self.sleep = dry_run, out, emit, sleep
        self.timings, self.should_stop = timings, should_stop
        self.renderer = render_stage.Renderer(sender=sender, budget=settings.html_budget)
        self.senders: _Senders | None = None
        self.retry: list[_Item] = []
        self.buffer: list[_Item] = []
        self.batch = self.PER_CONNECTION * settings.smtp_connections
        self.outstanding = 0  # handed to the senders, result not yet taken
        self.sent_ids: list[str] = []  # accepted, not yet committed as sent
        self.sent_since: float | None = None
        self.halted = False  # no more emails are handed out (asked to stop, or a failure)
        self.failure: Exception | None = None
        self.withdrawn = 0  # emails built but never handed out, because the run stopped
        self.slots: dict[int, Outcome | None] = {}
        self.next_seq = self.emit_seq = 0

    # Outcomes, in order --------------------------------------------------------------------

    def note(self, outcome: Outcome) -> None:
        """Report an outcome decided here and now (in its turn, after the emails before it)."""
        self._fill(self._reserve(), outcome)

    def _reserve(self) -> int:
        self.next_seq += 1
        return self.next_seq - 1

    def _fill(self, seq: int, outcome: Outcome | None) -> None:
        self.slots[seq] = outcome
        while self.emit_seq in self.slots:
            ready = self.slots.pop(self.emit_seq)
            self.emit_seq += 1
            if ready is not None:
                self.emit(ready)

    # Building ------------------------------------------------------------------------------

    def deliver(self, digest: Digest, now: datetime) -> None:
        person = digest.subscriber
        self._raise_failure()
        if not digest.entries:
            self.note(Outcome(person.email, "nothing-new"))
            return
        started = time.perf_counter()
        link = self._unsubscribe_link(person)
        rendered = self._render(digest, link)
        if rendered is None:
            return
        message_id = new_message_id(self.sender)
        data = message_bytes(
            rendered,
            sender=self.sender,
            to=person.email,
            message_id=message_id,
            when=now,
            unsubscribe_url=link,
        )
        self._built(started, data)
        if self.dry_run:
            self._preview(person, rendered, data)
            self.note(Outcome(person.email, "previewed", len(rendered.paper_ids), len(data)))
            return
        new = store.NewEmail(person.key, message_id, rendered.paper_ids, digest.day)
        self._queue(_Item(person, message_id, data, len(rendered.paper_ids), len(data), new=new))

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
        self._raise_failure()
        if person is None:
            store.mark_cancelled(
                self.db, pending.message_id, "the address is no longer in the subscribers file"
            )
            return
        if person.key in suspended:
            return  # stays pending until the address is enabled again
        started = time.perf_counter()
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
        link = self._unsubscribe_link(person)
        rendered = self._render(digest, link) if digest.entries else None
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
            unsubscribe_url=link,
        )
        self._built(started, data)
        count = len(rendered.paper_ids)
        self._queue(_Item(person, pending.message_id, data, count, len(data), resumed=True))

    def prepare(self, digests: Iterable[Digest]) -> None:
        """Finish the paper blocks a batch of subscribers needs, in one go."""
        started = time.perf_counter()
        self.renderer.prepare(digests)
        self.timings.blocks_s += time.perf_counter() - started

    def _built(self, started: float, data: bytes) -> None:
        self.timings.assembled = self.renderer.assembled
        self.timings.rendered_in_full = self.renderer.count - self.renderer.assembled
        self.timings.build.append((time.perf_counter() - started) * 1000)
        self.timings.built += 1
        self.timings.email_bytes += len(data)

    def _unsubscribe_link(self, person: Subscriber) -> str | None:
        if self.settings.public_url and self.settings.secret:
            return unsubscribe_url(self.settings.public_url, self.settings.secret, person.key)
        return None

    def _render(self, digest: Digest, unsubscribe_link: str | None) -> RenderedEmail | None:
        person = digest.subscriber
        try:
            rendered = self.renderer.render(digest, unsubscribe_link)
        except Exception as exc:  # a template or data bug must skip one subscriber, not the run
            log.exception("rendering the digest for %s failed", person.email)
            detail = f"could not render the email: {exc!r}"
            self.note(Outcome(person.email, "failed", detail=detail))
            return None
        if not rendered.paper_ids:
            self.note(Outcome(person.email, "failed", detail="not even one paper fits in an email"))
            return None
        return rendered

    # Handing out and taking results --------------------------------------------------------

    def connect(self, *, refresh: bool = False) -> None:
        """Open the connections to the mail server if they are not open (`refresh`: check they
        are still alive, else reopen them). Raises SmtpError when it cannot."""
        if self.senders is None:
            self.senders = _Senders(self.settings)
        self.senders.connect(refresh=refresh)

    def stopping(self) -> bool:
        """Whether the run was asked to stop (then nothing more is handed out)."""
        if not self.halted and self.should_stop is not None and self.should_stop():
            self._halt()
        return self.halted

    def _queue(self, item: _Item) -> None:
        item.seq = self._reserve()
        self.buffer.append(item)
        self._pump()
        while len(self.buffer) >= self.batch and not self.halted:  # memory stays flat
            self._wait()
            self._pump()
        self._raise_failure()

    def _pump(self) -> None:
        """Hand built emails to the senders: as many as are idle, or the whole buffer once it
        is full (one commit for many). Each is committed to the outbox first."""
        if self.stopping() or not self.buffer:
            return
        assert self.senders is not None
        idle = len(self.senders.messengers) - self.outstanding
        if len(self.buffer) >= self.batch and self.outstanding <= self.batch:
            take = len(self.buffer)
        elif idle > 0:
            take = idle
        else:
            return
        items, self.buffer = self.buffer[:take], self.buffer[take:]
        store.commit_outbox(
            self.db, self.run_id, (i.new for i in items if i.new is not None), self.sent_ids
        )
        self.sent_ids, self.sent_since = [], None
        assert self.senders is not None
        if self.timings.send_started is None:
            self.timings.send_started = time.perf_counter()
        for item in items:
            item.new = None
            item.tries += 1
            self.outstanding += 1
            self.senders.submit(item)

    def _wait(self) -> None:
        """Take the results that came back (waiting up to TICK for one); flush the sent marks
        that are due; look whether we are asked to stop."""
        assert self.senders is not None
        try:
            self._take(*self.senders.results.get(timeout=self.TICK))
            while True:
                self._take(*self.senders.results.get_nowait())
        except queue.Empty:
            pass
        due = self.sent_since is not None and time.perf_counter() - self.sent_since >= (
            self.SENT_EVERY
        )
        if len(self.sent_ids) >= self.SENT_BATCH or due:
            self._commit_sent()
        self.stopping()

    def _take(self, item: _Item, result: SendResult | Exception) -> None:
        assert self.senders is not None
        self.senders.done(item)
        self.outstanding -= 1
        self.timings.send_ended = time.perf_counter()
        if isinstance(result, Exception):  # the server is gone or refuses us: the email
            if self.failure is None:  # stays pending and the run stops
                self.failure = result
            self._halt()
            self._fill(item.seq, None)
            return
        item.last = result
        email, papers, size = item.person.email, item.papers, item.size
        if result.accepted:
            self.sent_ids.append(item.message_id)
            if self.sent_since is None:
                self.sent_since = time.perf_counter()
            self._fill(item.seq, Outcome(email, "sent", papers, size, resumed=item.resumed))
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
            self._fill(item.seq, Outcome(email, "failed", papers, size, detail, item.resumed))
            return
        log.warning("%s: %s; trying again later in this run", email, result.detail)
        self.retry.append(item)
        self._fill(item.seq, None)  # its outcome comes once the retries are over

    def _commit_sent(self) -> None:
        if self.sent_ids:
            store.commit_outbox(self.db, self.run_id, sent=self.sent_ids)
        self.sent_ids, self.sent_since = [], None

    def _halt(self) -> None:
        """Hand out nothing more: the emails built or handed out but not picked up by a sender
        are withdrawn (new ones never reached the mail server: forgotten, their papers owed;
        resumed or retried ones stay pending)."""
        if self.halted:
            return
        self.halted = True
        back = self.senders.take_back() if self.senders is not None else []
        self.outstanding -= len(back)
        never_out = [i.message_id for i in back if i.tries == 1 and not i.resumed]
        store.withdraw_pending(self.db, never_out)
        for item in [*back, *self.buffer]:
            self._fill(item.seq, None)
        self.withdrawn += len(back) + len(self.buffer)
        self.buffer = []

    def drain(self) -> None:
        """Hand out what is built and wait for every result; commit the sent marks."""
        if self.senders is None:
            return
        while self.buffer or self.outstanding:
            self._pump()
            if self.outstanding:
                self._wait()
            elif self.halted:
                break
        self._commit_sent()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            failure = self.failure
            self.failure = None
            while self.outstanding:  # let the emails in flight finish and record them
                self._wait()
            self._commit_sent()
            raise failure

    def finish_retries(self) -> None:
        """Try the temporarily refused emails again, waiting longer each round."""
        for attempt in range(1, self.settings.smtp_retries + 1):
            if not self.retry or self.halted:
                break
            self.sleep(fetch_stage.retry_delay(attempt, self.settings.retry_backoff))
            again, self.retry = self.retry, []
            for item in again:
                item.seq = self._reserve()
                self.buffer.append(item)
            self.drain()
        if self.halted:  # asked to stop: they stay pending, owed
            return
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
                self.note(Outcome(email, "pending", papers, size, detail, item.resumed))
            else:
                detail = (
                    f"{item.last.detail} ({tried}); its papers stay owed and go in the next email"
                )
                store.mark_deferred(self.db, item.message_id, detail)
                self.note(Outcome(email, "deferred", papers, size, detail, item.resumed))
        self.retry = []

    def _preview(self, person: Subscriber, rendered: RenderedEmail, eml: bytes) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        stem = person.email.replace("/", "_").replace("\\", "_")
        (self.out / f"{stem}.html").write_text(rendered.html, encoding="utf-8")
        (self.out / f"{stem}.txt").write_text(rendered.text, encoding="utf-8")
        (self.out / f"{stem}.eml").write_bytes(eml)

    def close(self) -> None:
        """End of the run (or an error): results still coming are taken and every accepted
        email is committed as sent before the connections close."""
        if self.senders is None:
            return
        try:
            self._halt()
            while self.outstanding:
                self._wait()
            self._commit_sent()
        finally:
            self.senders.close()
            self.senders = None


def enable_address(settings: Settings, email: str) -> store.Suspension | None:
    """Send to a suspended address again; returns the suspension lifted (None: it was not)."""
    db = store.open_db(settings.db_path)
    return store.enable_address(db, email.strip().casefold())
