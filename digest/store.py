"""The SQLite store: opening the database, papers (with an FTS5 index), unsubscribes and
suspensions, trending upvotes, runs and the daemon's heartbeat.

One function opens the database and brings its schema up to date (digest/migrations.py); the
emails and their states live in digest/outbox.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from digest import volume
from digest.errors import DigestError
from digest.match import HIGHLIGHT_END, HIGHLIGHT_START, Hit, fts_phrase, spans_from_highlight
from digest.migrations import MIGRATIONS
from digest.models import Paper, TrendingPaper

BUSY_TIMEOUT_MS = 30_000


def open_db(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, migrated to the current schema."""
    if path.parent and not path.parent.exists():
        raise DigestError(
            f"{path}: the folder {path.parent} does not exist; create it or "
            f"point DIGEST_DB elsewhere"
        )
    volume.check_database_file(path)  # SQLite would open another user's file read-only
    try:
        db = sqlite_utils.Database(path)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(db)
        # In WAL mode a commit then writes the log without waiting for the disk (tens of
        # microseconds): it survives a killed process, not a power cut (see README, "What
        # happens when things fail").
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db)
    except sqlite3.OperationalError as exc:  # e.g. the folder (a volume) is not writable
        if error := volume.database_error(path, exc):
            raise error from None
        raise
    return db


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch to write-ahead logging. Switching needs the database to itself and SQLite does
    not wait for that (busy_timeout does not apply): when two processes open a new database
    at once, one finds it locked; it waits and tries again (by then it is usually WAL)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if db.journal_mode != "wal":
                db.enable_wal()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def migrate(db: sqlite_utils.Database) -> None:
    with immediate(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
        )
        done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                migration(db)
                db.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    [migration.__name__, now_iso()],
                )


# The threads of one process (the run's main thread and its SMTP senders, each with its own
# connection) take turns for write transactions here rather than in SQLite, whose busy handler
# sleeps in steps of up to 100 ms: a commit takes tens of microseconds, a wait should too.
_WRITER = threading.RLock()


@contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[None]:
    """A write transaction taken up front (`BEGIN IMMEDIATE`), so read-then-write is safe."""
    conn = db.conn
    with _WRITER:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


# Papers -------------------------------------------------------------------------------------


def _paper_row(paper: Paper, fetched_at: str) -> dict[str, object]:
    return {
        "id": paper.id,
        "version": paper.version,
        "title": paper.title,
        "authors": json.dumps(list(paper.authors), ensure_ascii=False),
        "abstract": paper.abstract,
        "comment": paper.comment,
        "categories": json.dumps(list(paper.categories)),
        "primary_category": paper.primary_category,
        "published": now_iso(paper.published),
        "updated": now_iso(paper.updated),
        "abs_url": paper.abs_url,
        "pdf_url": paper.pdf_url,
        "fetched_at": fetched_at,
    }


def _paper(row: Mapping[str, object]) -> Paper:
    return Paper(
        id=str(row["id"]),
        version=int(row["version"]),  # type: ignore[call-overload]
        title=str(row["title"]),
        authors=tuple(json.loads(str(row["authors"]))),
        abstract=str(row["abstract"]),
        comment=str(row["comment"] or ""),
        categories=tuple(json.loads(str(row["categories"]))),
        primary_category=str(row["primary_category"]),
        published=datetime.fromisoformat(str(row["published"])),
        updated=datetime.fromisoformat(str(row["updated"])),
        abs_url=str(row["abs_url"]),
        pdf_url=str(row["pdf_url"]),
    )


def save_papers(db: sqlite_utils.Database, papers: Iterable[Paper]) -> int:
    """Insert new papers and newer versions of known ones; returns how many rows changed.

    `upsert` keeps each row's rowid, which the external-content FTS index is keyed on.
    """
    fetched_at = now_iso()
    changed = 0
    with immediate(db):
        for paper in papers:
            known = db.execute("SELECT version FROM papers WHERE id = ?", [paper.id]).fetchone()
            if known is not None and known[0] >= paper.version:
                continue
            db["papers"].upsert(_paper_row(paper, fetched_at), pk="id")
            changed += 1
    return changed


IN_CHUNK = 500  # values bound per `IN (...)`, well under SQLite's limit of bound variables


def rows_in(
    db: sqlite_utils.Database, sql: str, values: Iterable[object], params: Iterable[object] = ()
) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql`, whose `{marks}` is the list of an `IN (...)`, for every one of
    `values` (bound after `params`): one query per IN_CHUNK values, however many there are."""
    wanted, before = list(values), list(params)
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        yield from db.execute(sql.format(marks=marks), [*before, *chunk]).fetchall()


def papers_by_id(db: sqlite_utils.Database, ids: Iterable[str]) -> dict[str, Paper]:
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Paper] = {}
    for chunk_start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[chunk_start : chunk_start + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"SELECT * FROM papers WHERE id IN ({marks})", chunk):
            found[row["id"]] = _paper(row)
    return found


def keyword_hits(
    db: sqlite_utils.Database,
    keyword: str,
    since: datetime | None,
    ids: Iterable[str] | None = None,
) -> dict[str, Hit]:
    """Papers first published at or after `since` (any date: None) whose title or abstract has
    `keyword`, optionally only among `ids`.

    One FTS5 query per keyword; the keyword enters it only as a quoted phrase of plain words.
    """
    phrase = fts_phrase(keyword)
    if phrase is None:
        return {}
    sql = (
        "SELECT papers.id, highlight(papers_fts, 0, ?, ?), highlight(papers_fts, 1, ?, ?) "
        "FROM papers_fts JOIN papers ON papers.rowid = papers_fts.rowid "
        "WHERE papers_fts MATCH ? AND papers.published >= ?"
    )
    params: list[object] = [HIGHLIGHT_START, HIGHLIGHT_END] * 2
    params += [phrase, now_iso(since) if since is not None else ""]
    if ids is not None:
        wanted = list(ids)
        sql += f" AND papers.id IN ({','.join('?' * len(wanted))})"
        params += wanted
    rows = db.execute(sql, params).fetchall()
    return {
        paper_id: (spans_from_highlight(title), spans_from_highlight(abstract))
        for paper_id, title, abstract in rows
    }


def author_index(
    db: sqlite_utils.Database, since: datetime, key: Callable[[str], str]
) -> dict[str, list[str]]:
    """`key(author)` -> ids of the papers first published at or after `since` by that author."""
    index: dict[str, list[str]] = {}
    rows = db.execute(
        "SELECT id, authors FROM papers WHERE published >= ? ORDER BY published DESC, id",
        [now_iso(since)],
    ).fetchall()
    for paper_id, authors in rows:
        for author in json.loads(authors):
            index.setdefault(key(author), []).append(paper_id)
    return index


# Suppressions (unsubscribes) ------------------------------------------------------------------


def suppress(db: sqlite_utils.Database, subscriber_key: str, email: str, source: str) -> bool:
    """Record an unsubscribe; False when the address was already unsubscribed."""
    with immediate(db):
        cursor = db.execute(
            "INSERT OR IGNORE INTO suppressions (subscriber, email, created_at, source) "
            "VALUES (?, ?, ?, ?)",
            [subscriber_key, email, now_iso(), source],
        )
        return cursor.rowcount > 0


def unsuppress(db: sqlite_utils.Database, subscriber_key: str) -> bool:
    """Lift an unsubscribe; False when the address was not unsubscribed."""
    with immediate(db):
        cursor = db.execute("DELETE FROM suppressions WHERE subscriber = ?", [subscriber_key])
        return cursor.rowcount > 0


def suppressed_keys(db: sqlite_utils.Database) -> set[str]:
    return {row[0] for row in db.execute("SELECT subscriber FROM suppressions").fetchall()}


def is_suppressed(db: sqlite_utils.Database, subscriber_key: str) -> bool:
    row = db.execute("SELECT 1 FROM suppressions WHERE subscriber = ?", [subscriber_key]).fetchone()
    return row is not None


# Trending (Hugging Face daily papers) --------------------------------------------------------


def save_trending(db: sqlite_utils.Database, day: str, papers: Iterable[TrendingPaper]) -> None:
    """Today's upvotes per arXiv id (a later fetch the same day replaces the counts)."""
    fetched_at = now_iso()
    with immediate(db):
        db["trending"].upsert_all(
            (
                {
                    "day": day,
                    "paper_id": p.id,
                    "upvotes": p.upvotes,
                    "title": p.title,
                    "fetched_at": fetched_at,
                }
                for p in papers
            ),
            pk=("day", "paper_id"),
        )


def trending_papers(db: sqlite_utils.Database, day: str) -> tuple[TrendingPaper, ...]:
    """The day's trending papers, most upvoted first."""
    rows = db.execute(
        "SELECT paper_id, title, upvotes FROM trending WHERE day = ? "
        "ORDER BY upvotes DESC, paper_id",
        [day],
    ).fetchall()
    return tuple(TrendingPaper(pid, title, upvotes) for pid, title, upvotes in rows)


def record_trending(db: sqlite_utils.Database, run_id: int, outcome: str) -> None:
    """How the run's trending fetch went: "N papers" or "failed: why"."""
    with immediate(db):
        db["runs"].update(run_id, {"trending": outcome})


# Suspensions (addresses the mail server refused for good) ----------------------------------


@dataclass(frozen=True)
class Suspension:
    subscriber: str
    since: str
    reason: str


def suspensions(db: sqlite_utils.Database) -> dict[str, Suspension]:
    """Suspended addresses (casefolded) and why."""
    rows = db.execute(
        "SELECT subscriber, suspended_since, suspended_reason FROM mailboxes "
        "WHERE suspended_since IS NOT NULL"
    ).fetchall()
    return {row[0]: Suspension(*row) for row in rows}


def enable_address(db: sqlite_utils.Database, subscriber_key: str) -> Suspension | None:
    """Lift a suspension (and forget the failures); returns the suspension lifted, if any."""
    with immediate(db):
        row = db.execute(
            "SELECT subscriber, suspended_since, suspended_reason FROM mailboxes "
            "WHERE subscriber = ?",
            [subscriber_key],
        ).fetchone()
        db.execute(
            "UPDATE mailboxes SET permanent_failures = 0, suspended_since = NULL, "
            "suspended_reason = NULL WHERE subscriber = ?",
            [subscriber_key],
        )
    if row is None or row[1] is None:
        return None
    return Suspension(*row)


# The web app (`digest serve`) -------------------------------------------------------------------


def connect(path: Path) -> sqlite_utils.Database:
    """A connection to a database already opened (and migrated) once by `open_db` in this
    process: no schema check, so a web request does not take the write lock to look."""
    db = sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False))
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def signup_request(
    db: sqlite_utils.Database,
    subscriber_key: str,
    client: str,
    now: datetime,
    *,
    address_every: timedelta,
    client_limit: int,
    client_window: timedelta,
) -> str:
    """Record a sign-up request and say what may be done: "send" (a confirmation email to the
    address), "quiet" (one was sent to it less than `address_every` ago: send none) or
    "client" (this client asked `client_limit` times within `client_window`: refuse)."""
    with immediate(db):
        db.execute("DELETE FROM signup_requests WHERE at < ?", [now_iso(now - client_window)])
        count = db.execute(
            "SELECT count(*) FROM signup_requests WHERE client = ? AND at >= ?",
            [client, now_iso(now - client_window)],
        ).fetchone()[0]
        if count >= client_limit:
            return "client"
        db.execute("INSERT INTO signup_requests (client, at) VALUES (?, ?)", [client, now_iso(now)])
        last = db.execute(
            "SELECT sent_at FROM signup_emails WHERE subscriber = ?", [subscriber_key]
        ).fetchone()
        if last is not None and datetime.fromisoformat(last[0]) > now - address_every:
            return "quiet"
        db.execute(
            "INSERT OR REPLACE INTO signup_emails (subscriber, sent_at) VALUES (?, ?)",
            [subscriber_key, now_iso(now)],
        )
        return "send"


def forget_signup_email(db: sqlite_utils.Database, subscriber_key: str) -> None:
    """A confirmation email that could not be sent does not count against the address."""
    with immediate(db):
        db.execute("DELETE FROM signup_emails WHERE subscriber = ?", [subscriber_key])
