"""One `digest send`, wiring the stages in the order the data flows:

    fetch (fetch.py) -> store (store.py) -> plan (plan.py) -> build (build.py, assemble.py)
    -> outbox (outbox.py) -> smtp (smtp.py), driven by dispatch.py -> record (outbox.py)

A paper is recorded as delivered only after the mail server accepted the email carrying it.
A run first finishes the pending emails an earlier run left (same Message-ID), then fetches,
plans and builds the new ones, a chunk of subscribers at a time. One subscriber's failure (a
bad row, a render error, a refused address) is reported and skipped; a failed fetch or a lost
mail server stops the run before anything more is sent. Only one `digest send` runs on a
database at a time (`run_lock`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import filelock
import sqlite_utils

from digest import announce, feedback_store, outbox, plan, runlog, store, subscribers
from digest import fetch as fetch_stage
from digest import trending as trending_stage
from digest.build import Builder, BuildFailed, Previews
from digest.config import Settings
from digest.dispatch import Dispatcher
from digest.errors import DigestError
from digest.match import distinct_keywords, is_due
from digest.models import Digest, Paper, Subscriber, subscriber_key
from digest.personalize import Personalizer
from digest.report import Outcome, RunReport, Timings
from digest.subscribers import DAY_NAMES

PREVIEW_SENDER = "arXiv digest <digest@localhost>"


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
            runlog.close_interrupted_runs(db)
        report.run_id = run_id = runlog.start_run(db, "dry-run" if dry_run else "send")
        timings = Timings()
        try:
            _Run(db, settings, sender, now, report, timings, progress).run(
                people, out_dir, on_start, should_stop
            )
        except DigestError as exc:
            runlog.finish_run(
                db, run_id, "failed", message=str(exc), timings=timings.as_json(), **report.counts()
            )
            raise
        status = "stopped" if report.stopped else "ok" if report.ok else "failed"
        lines = [*report.problems, *(f"{o.email}: {o.detail}" for o in report.failed)]
        if report.stopped:
            lines.insert(0, f"stopped before {report.left} of {report.subscribers} subscribers")
        runlog.finish_run(
            db,
            run_id,
            status,
            message="; ".join(lines),
            timings=timings.as_json(),
            **report.counts(),
        )
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


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector from walking every object that exists now (the run's papers,
    hits, subscribers) again and again while many short-lived ones are made (gc.freeze; the
    loop freezes again after each chunk). Frozen objects are still freed when no longer
    referenced; only cycles among them wait for the end of the block. The young generation
    is also collected less often (every 10,000 allocations, not 700: an email makes tens of
    thousands of short-lived objects, and each collection promoted some to be walked again
    by the older ones: ~0.2 ms per broad email)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _Run:
    """The stages of one run, in order."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: Settings,
        sender: str,
        now: datetime,
        report: RunReport,
        timings: Timings,
        progress: Callable[[Outcome], None] | None,
    ) -> None:
        self.db, self.settings, self.now, self.report = db, settings, now, report
        self.timings, self.progress = timings, progress
        self.day = now.astimezone(settings.tz).date().isoformat()
        self.builder = Builder(settings, sender, timings)

    def emit(self, outcome: Outcome) -> None:
        self.report.outcomes.append(outcome)
        if self.progress:
            self.progress(outcome)

    def run(
        self,
        people: list[Subscriber],
        out_dir: Path,
        on_start: Callable[[int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        report, db = self.report, self.db
        report.subscribers = len(people)
        self.likes = {p.key: p.likes for p in people}  # the likes column, for every reader
        pending = [] if report.dry_run else outbox.pending_emails(db)
        if on_start:
            on_start(len(pending) + len(people))
        suppressed = store.suppressed_keys(db)
        due = self._due(people, suppressed)
        dest: Dispatcher | Previews
        if report.dry_run:
            dest = Previews(out_dir, self.emit, self.settings)
        else:
            dest = Dispatcher(
                db, self.settings, report.run_id or 0, self.emit, self.timings, should_stop
            )
        self.dest = dest
        try:
            if isinstance(dest, Dispatcher) and (due or pending):
                dest.connect()  # an unreachable server or a refused login stops us here
                if not self._resume(dest, pending, people, suppressed, len(due)):
                    return
            if due:
                self._send_new(dest, due)
        finally:
            dest.close()
            if isinstance(dest, Dispatcher) and dest.owed:
                report.stopped = True
                report.left += dest.owed

    def _due(self, people: list[Subscriber], suppressed: set[str]) -> list[Subscriber]:
        due = []
        for person in people:
            if person.key in suppressed:
                self.emit(Outcome(person.email, "unsubscribed"))
            elif not is_due(person, self.now, self.settings.tz):
                weekday = DAY_NAMES[person.weekday or 0].capitalize()
                self.emit(Outcome(person.email, "not-due", detail=f"weekly on {weekday}"))
            else:
                due.append(person)
        return due

    def _stop_here(self, left: int) -> bool:
        """Asked to stop (between two emails): the rest stays owed to the next run."""
        if not self.dest.stopping():
            return False
        self.report.stopped, self.report.left = True, left
        return True

    def _resume(
        self,
        dest: Dispatcher,
        pending: list[outbox.PendingEmail],
        people: list[Subscriber],
        suppressed: set[str],
        due: int,
    ) -> bool:
        """Send the pending emails of earlier runs again, as they were; False: asked to stop."""
        by_key = {person.key: person for person in people}
        suspended = store.suspensions(self.db)
        s = self.settings
        for email in pending:
            if self._stop_here(due):
                return False
            person = by_key.get(email.subscriber)
            if email.subscriber in suppressed:
                outbox.mark_cancelled(self.db, email.message_id, "the subscriber unsubscribed")
                continue
            if person is None:
                why = "the address is no longer in the subscribers file"
                outbox.mark_cancelled(self.db, email.message_id, why)
                continue
            if person.key in suspended:
                continue  # stays pending until the address is enabled again
            digest = plan.replan_pending(
                self.db, person, email, self.day, s.trending is not None, s.trending_top
            )
            if not digest.entries:  # its papers no longer match the subscriber's keywords
                why = "its papers no longer match the keywords"
                outbox.mark_cancelled(self.db, email.message_id, why)
                continue
            dest.check()
            try:
                built = self.builder.build(digest, self.now, email.message_id)
            except BuildFailed as exc:  # stays pending; the next run tries again
                dest.note(Outcome(person.email, "failed", detail=str(exc)))
                continue
            if set(built.rendered.paper_ids) != set(email.paper_ids):
                outbox.set_email_papers(self.db, email.message_id, built.rendered.paper_ids)
            dest.take(built, resumed=True)
        dest.drain()
        if self._stop_here(due):
            return False
        dest.finish_retries()
        return True

    def _fetch(self, due: list[Subscriber], since: datetime) -> list[Paper]:
        s, report, db = self.settings, self.report, self.db
        started = time.perf_counter()
        # Readers' likes first: liked papers the database lacks, by id, for every reader at
        # once; then the newest papers of the liked papers' categories come with the search.
        feedback_store.sync_csv_likes(db, self.likes)
        liked = fetch_stage.fetch_ids(
            feedback_store.liked_ids_missing(db),
            url=s.arxiv_url,
            delay=s.arxiv_delay,
            timeout=s.arxiv_timeout,
            retries=s.arxiv_retries,
            backoff=s.retry_backoff,
        )
        store.save_papers(db, liked.papers)
        fetched = fetch_stage.fetch(
            distinct_keywords(due),
            url=s.arxiv_url,
            since=since,
            delay=s.arxiv_delay,
            timeout=s.arxiv_timeout,
            retries=s.arxiv_retries,
            backoff=s.retry_backoff,
            page_size=s.arxiv_page_size,
            authors=plan.followed_authors(due),
            categories=feedback_store.liked_categories(db),
        )
        report.papers_fetched = len(fetched.papers)
        report.arxiv_requests = fetched.requests + liked.requests
        store.save_papers(self.db, fetched.papers)
        self.timings.fetch_s = time.perf_counter() - started
        report.warnings.extend(_check_fetch(self.db, report.run_id or 0, fetched.papers, self.now))
        return fetched.papers

    def _send_new(self, dest: Dispatcher | Previews, due: list[Subscriber]) -> None:
        s, db = self.settings, self.db
        win = plan.windows(db, due, self.now, s.lookback_days)
        fetched = self._fetch(due, win.earliest)
        board = trending_stage.refresh(db, s, self.day, self.report.run_id or 0)
        if isinstance(dest, Dispatcher):
            dest.connect(refresh=True)  # the connection may have idled out during the fetch
        started = time.perf_counter()
        planner = plan.Planner(db, due, win, self.day, board, s.trending_top)
        self.timings.match_s = time.perf_counter() - started
        started = time.perf_counter()
        rec = feedback_store.prepare(db, self.likes, [p.key for p in due], fetched, self.now)
        personal = Personalizer(
            db,
            rec,
            fetched,
            win,
            planner.hits,
            top=s.recommend_top,
            min_likes=s.recommend_min_likes,
        )
        self.timings.recommend_s = time.perf_counter() - started
        suspended = {} if self.report.dry_run else store.suspensions(db)
        with _frozen_heap():  # papers, hits and subscribers live until the loop ends
            for start in range(0, len(due), plan.CHUNK):
                chunk = due[start : start + plan.CHUNK]
                began = time.perf_counter()
                planned = planner.plan([p for p in chunk if p.key not in suspended])
                self.timings.match_s += time.perf_counter() - began
                began = time.perf_counter()
                planned = personal.apply(planned, chunk)
                self.timings.recommend_s += time.perf_counter() - began
                self.builder.prepare(planned.values())
                for index, person in enumerate(chunk, start=start):
                    if self._stop_here(len(due) - index):
                        break
                    self._one(dest, person, planned.pop(person.key, None), suspended)
                if self.report.stopped:
                    break
                gc.freeze()  # and what the run's caches now hold (shared pieces, entries)
        rec.save(db)  # the models fitted in this run: not fitted again until feedback changes
        dest.drain()
        if not self.report.stopped and not getattr(dest, "withdrawn", 0):
            dest.finish_retries()  # stopping: refused-for-now emails stay pending, owed

    def _one(
        self,
        dest: Dispatcher | Previews,
        person: Subscriber,
        digest: Digest | None,
        suspended: dict[str, store.Suspension],
    ) -> None:
        if digest is None:
            sus = suspended[person.key]
            detail = (
                f"suspended since {sus.since} ({sus.reason}); nothing sent. "
                f"`digest subscribers enable {person.email}` sends to it again"
            )
            dest.note(Outcome(person.email, "suspended", detail=detail))
            return
        dest.check()
        if not digest.entries:
            dest.note(Outcome(person.email, "nothing-new"))
            return
        try:
            built = self.builder.build(digest, self.now)
        except BuildFailed as exc:
            dest.note(Outcome(person.email, "failed", detail=str(exc)))
            return
        ids = built.rendered.paper_ids
        new = outbox.NewEmail(person.key, built.message_id, ids, digest.day, digest.recommended)
        dest.take(built, new)


def _check_fetch(
    db: sqlite_utils.Database, run_id: int, papers: list[Paper], now: datetime
) -> list[str]:
    """Record the successful fetch; a warning when it found nothing new although arXiv
    announced papers since the last fetch."""
    previous = runlog.last_fetch(db, run_id)
    newest = max((store.now_iso(p.published) for p in papers), default=None)
    runlog.record_fetch(db, run_id, newest, now)
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


def enable_address(settings: Settings, email: str) -> store.Suspension | None:
    """Send to a suspended address again; returns the suspension lifted (None: it was not)."""
    db = store.open_db(settings.db_path)
    return store.enable_address(db, subscriber_key(email))
