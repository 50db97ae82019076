"""The SQLite store: papers (with an FTS5 index), emails, deliveries and runs.

One function opens the database and brings its schema up to date; migrations are a list of plain
functions, applied in order and recorded in `_migrations`, never edited once released.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from digest.errors import DigestError
from digest.match import HIGHLIGHT_END, HIGHLIGHT_START, Hit, fts_phrase, spans_from_highlight
from digest.models import Paper

BUSY_TIMEOUT_MS = 30_000


def _m001_initial(db: sqlite_utils.Database) -> None:
    db["papers"].create(
        {
            "id": str,
            "version": int,
            "title": str,
            "authors": str,  # JSON list
            "abstract": str,
            "comment": str,
            "categories": str,  # JSON list
            "primary_category": str,
            "published": str,  # ISO 8601 UTC: compares as text
            "updated": str,
            "abs_url": str,
            "pdf_url": str,
            "fetched_at": str,
        },
        pk="id",
    )
    db["papers"].create_index(["published"])
    db["papers"].enable_fts(
        ["title", "abstract"], fts_version="FTS5", tokenize="porter", create_triggers=True
    )
    db["runs"].create(
        {
            "id": int,
            "kind": str,  # send | dry-run
            "started_at": str,
            "finished_at": str,
            "status": str,  # running | ok | failed
            "papers_fetched": int,
            "arxiv_requests": int,
            "emails_sent": int,
            "emails_failed": int,
            "message": str,
        },
        pk="id",
    )
    db["emails"].create(
        {
            "message_id": str,
            "run_id": int,
            "subscriber": str,
            "created_at": str,
            "status": str,  # pending | sent | failed
            "sent_at": str,
            "error": str,
        },
        pk="message_id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["emails"].create_index(["subscriber", "status"])
    db["email_papers"].create(
        {"message_id": str, "paper_id": str},
        pk=("message_id", "paper_id"),
        foreign_keys=[("message_id", "emails", "message_id")],
    )
    db["deliveries"].create(
        {"subscriber": str, "paper_id": str, "message_id": str, "delivered_at": str},
        pk=("subscriber", "paper_id"),
    )


def _m_delivery_faults(db: sqlite_utils.Database) -> None:
    """Crash-safe delivery and fault handling (issue 3).

    emails: `day` (the digest's date, to rebuild a pending email as it was), `attempts` and
    `last_attempt_at` (tries at the mail server), `last_code` (the server's last reply code).
    Status is now pending | sent | deferred (4xx through every retry) | failed (5xx) | cancelled.
    runs: `warning` (e.g. a suspiciously empty fetch), `fetched_at` (when the fetch succeeded)
    and `newest_paper` (the newest first-version date it returned).
    mailboxes: per subscriber address, consecutive permanent failures and the suspension.
    """
    db["emails"].add_column("day", str)
    db["emails"].add_column("attempts", int, not_null_default=0)
    db["emails"].add_column("last_attempt_at", str)
    db["emails"].add_column("last_code", int)
    db["runs"].add_column("warning", str)
    db["runs"].add_column("fetched_at", str)
    db["runs"].add_column("newest_paper", str)
    db["mailboxes"].create(
        {
            "subscriber": str,
            "permanent_failures": int,  # consecutive 5xx refusals; a 250 resets it
            "last_error": str,
            "last_failure_at": str,
            "suspended_since": str,  # NULL while the address is active
            "suspended_reason": str,
        },
        pk="subscriber",
        defaults={"permanent_failures": 0},
    )
    db["email_papers"].create_index(["paper_id"])


def _m_daemon_heartbeat(db: sqlite_utils.Database) -> None:
    """One row (id 1) for `digest run`: since when it runs and when it was last seen alive."""
    db["daemon"].create(
        {"id": int, "pid": int, "started_at": str, "heartbeat_at": str, "stopped_at": str},
        pk="id",
    )


def _m_trending_upvotes(db: sqlite_utils.Database) -> None:
    """Hugging Face daily papers: upvotes per arXiv id for each day fetched; the run's outcome."""
    db["trending"].create(
        {
            "day": str,  # the digest's date the list was fetched for
            "paper_id": str,  # arXiv id without version
            "upvotes": int,
            "title": str,
            "fetched_at": str,
        },
        pk=("day", "paper_id"),
    )
    db["runs"].add_column("trending", str)  # "N papers" | "failed: why" | NULL (off)


def _m_suppressions(db: sqlite_utils.Database) -> None:
    """Unsubscribes: kept here, not in subscribers.csv, so pasting a row back does not undo one."""
    db["suppressions"].create(
        {"subscriber": str, "email": str, "created_at": str, "source": str},
        pk="subscriber",
    )


def _m_run_timings(db: sqlite_utils.Database) -> None:
    """How long each stage of a `digest send` took (JSON, see `pipeline.Timings`)."""
    db["runs"].add_column("timings", str)


def _m_bounces(db: sqlite_utils.Database) -> None:
    """`digest bounces` (issue 12): each bounce or complaint read from DIGEST_BOUNCE_MAILBOX,
    keyed by the SHA-256 of its bytes (so reading it twice changes nothing), and each read."""
    db["bounces"].create(
        {
            "id": str,  # sha256 of the message as read
            "read_at": str,
            "kind": str,  # hard | soft | complaint | other (not a bounce)
            "subscriber": str,  # NULL: not attributed
            "message_id": str,  # our email it is about, when known
            "attributed_by": str,  # Message-ID | VERP | NULL
            "recipient": str,  # the address the report names
            "status": str,  # the DSN status (5.1.1) or the complaint's feedback type
            "detail": str,  # the diagnostic, one line
            "action": str,  # suspended | counted | already suspended | not attributed | ignored
            "source": str,  # the report's From and Subject
        },
        pk="id",
    )
    db["bounces"].create_index(["subscriber", "kind"])
    db["bounce_checks"].create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "mailbox": str,  # as shown to users: never the password
            "messages": int,
            "status": str,  # ok | failed
            "error": str,
        },
        pk="id",
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial,
    _m_delivery_faults,
    _m_daemon_heartbeat,
    _m_trending_upvotes,
    _m_suppressions,
    _m_run_timings,
    _m_bounces,
]


def open_db(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, migrated to the current schema."""
    if path.parent and not path.parent.exists():
        raise DigestError(
            f"{path}: the folder {path.parent} does not exist; create it or "
            f"point DIGEST_DB elsewhere"
        )
    db = sqlite_utils.Database(path)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(db)
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db)
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


@contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[None]:
    """A write transaction taken up front (`BEGIN IMMEDIATE`), so read-then-write is safe."""
    conn = db.conn
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


def papers_by_id(db: sqlite_utils.Database, ids: Iterable[str]) -> dict[str, Paper]:
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Paper] = {}
    for chunk_start in range(0, len(wanted), 500):
        chunk = wanted[chunk_start : chunk_start + 500]
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


# Deliveries, emails, runs ---------------------------------------------------------------------


def start_run(db: sqlite_utils.Database, kind: str) -> int:
    with immediate(db):
        table = db["runs"].insert({"kind": kind, "started_at": now_iso(), "status": "running"})
        return int(table.last_pk)


INTERRUPTED = (
    "interrupted: the process stopped before the run finished (killed, crashed or the machine "
    "went down); the next run finishes its pending emails"
)


def close_interrupted_runs(db: sqlite_utils.Database) -> int:
    """Mark as failed the send runs still 'running' (call holding the run lock: they are dead)."""
    with immediate(db):
        cursor = db.execute(
            "UPDATE runs SET status = 'failed', message = ? "
            "WHERE status = 'running' AND kind = 'send'",
            [INTERRUPTED],
        )
        return cursor.rowcount


def finish_run(db: sqlite_utils.Database, run_id: int, status: str, **counts: object) -> None:
    with immediate(db):
        db["runs"].update(run_id, {"status": status, "finished_at": now_iso(), **counts})


@dataclass(frozen=True)
class PendingEmail:
    """An email committed to the outbox whose fate is unknown: never tried, or in flight when
    the run died. It is sent again as it was, with the same Message-ID."""

    message_id: str
    subscriber: str
    day: str
    paper_ids: tuple[str, ...]
    attempts: int


def pending_emails(db: sqlite_utils.Database) -> list[PendingEmail]:
    """Every pending email, oldest first."""
    rows = db.execute(
        "SELECT message_id, subscriber, day, attempts FROM emails WHERE status = 'pending' "
        "ORDER BY created_at, rowid"
    ).fetchall()
    pending = []
    for message_id, subscriber, day, attempts in rows:
        ids = db.execute(
            "SELECT paper_id FROM email_papers WHERE message_id = ? ORDER BY paper_id",
            [message_id],
        ).fetchall()
        pending.append(
            PendingEmail(message_id, subscriber, day or "", tuple(r[0] for r in ids), attempts)
        )
    return pending


def set_email_papers(db: sqlite_utils.Database, message_id: str, paper_ids: Iterable[str]) -> None:
    """Make a pending email carry exactly `paper_ids` (what its rebuilt body shows)."""
    with immediate(db):
        db.execute("DELETE FROM email_papers WHERE message_id = ?", [message_id])
        db["email_papers"].insert_all(
            {"message_id": message_id, "paper_id": paper_id} for paper_id in paper_ids
        )


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def last_sent_many(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, datetime]:
    """When the mail server last accepted an email for each of these subscribers (those never
    sent to are left out). One query per 500 subscribers."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(keys)):
        rows = db.execute(
            "SELECT subscriber, max(sent_at) FROM emails WHERE status = 'sent' "
            f"AND subscriber IN ({','.join('?' * len(chunk))}) GROUP BY subscriber",
            chunk,
        ).fetchall()
        found.update((key, datetime.fromisoformat(when)) for key, when in rows if when)
    return found


def taken_many(
    db: sqlite_utils.Database, wanted: Mapping[str, Iterable[str]]
) -> dict[str, set[str]]:
    """Of each subscriber's `wanted` paper ids, those delivered to them, plus the papers waiting
    in their pending emails. Looks up exactly those (subscriber, paper) pairs, so the cost does
    not grow with their past deliveries. Two queries per 500 subscribers."""
    taken: dict[str, set[str]] = {}
    keys = list(wanted)
    for chunk in _chunks(keys):
        pairs = json.dumps({key: list(wanted[key]) for key in chunk})  # {subscriber: [ids]}
        rows = db.execute(
            "SELECT deliveries.subscriber, deliveries.paper_id "
            "FROM json_each(?) AS person CROSS JOIN json_each(person.value) AS paper "
            "CROSS JOIN deliveries ON deliveries.subscriber = person.key "
            "AND deliveries.paper_id = paper.value",
            [pairs],
        ).fetchall()
        rows += db.execute(
            "SELECT emails.subscriber, email_papers.paper_id FROM emails "
            "JOIN email_papers USING (message_id) "
            f"WHERE emails.subscriber IN ({','.join('?' * len(chunk))}) "
            "AND emails.status = 'pending'",
            chunk,
        ).fetchall()
        for key, paper_id in rows:
            taken.setdefault(key, set()).add(paper_id)
    return taken


def refused_many(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, set[str]]:
    """Papers of each subscriber's refused emails (deferred or failed) never delivered since:
    still owed to them, however old (subscribers with none are left out)."""
    refused: dict[str, set[str]] = {}
    for chunk in _chunks(list(keys)):
        rows = db.execute(
            "SELECT DISTINCT emails.subscriber, email_papers.paper_id FROM emails "
            "JOIN email_papers USING (message_id) "
            f"WHERE emails.subscriber IN ({','.join('?' * len(chunk))}) "
            "AND emails.status IN ('deferred', 'failed') AND NOT EXISTS (SELECT 1 FROM "
            "deliveries WHERE deliveries.subscriber = emails.subscriber "
            "AND deliveries.paper_id = email_papers.paper_id)",
            chunk,
        ).fetchall()
        for key, paper_id in rows:
            refused.setdefault(key, set()).add(paper_id)
    return refused


def record_attempt(db: sqlite_utils.Database, message_id: str, code: int, error: str) -> None:
    """One try at the mail server that did not end in a 250 (the email stays pending)."""
    with immediate(db):
        db.execute(
            "UPDATE emails SET attempts = attempts + 1, last_attempt_at = ?, last_code = ?, "
            "error = ? WHERE message_id = ?",
            [now_iso(), code, error, message_id],
        )


def _mark_sent(db: sqlite_utils.Database, message_ids: list[str], when: str) -> None:
    """The server accepted these emails: they and their papers are delivered (inside the
    caller's transaction)."""
    conn = db.conn
    conn.executemany(
        "UPDATE emails SET status = 'sent', sent_at = ?, attempts = attempts + 1, "
        "last_attempt_at = ?, last_code = 250, error = NULL WHERE message_id = ?",
        [(when, when, message_id) for message_id in message_ids],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO deliveries (subscriber, paper_id, message_id, delivered_at) "
        "SELECT emails.subscriber, email_papers.paper_id, emails.message_id, ? "
        "FROM emails JOIN email_papers USING (message_id) WHERE emails.message_id = ?",
        [(when, message_id) for message_id in message_ids],
    )
    conn.executemany(
        "UPDATE mailboxes SET permanent_failures = 0 WHERE subscriber = "
        "(SELECT subscriber FROM emails WHERE message_id = ?)",
        [(message_id,) for message_id in message_ids],
    )


@dataclass(frozen=True)
class NewEmail:
    """An email for the outbox: committed as pending before it is handed to a sender."""

    subscriber: str
    message_id: str
    paper_ids: tuple[str, ...]
    day: str


def commit_outbox(
    db: sqlite_utils.Database,
    run_id: int,
    new: Iterable[NewEmail] = (),
    sent: Iterable[str] = (),
) -> None:
    """In one transaction (one fsync): the emails the server accepted (`sent` Message-IDs) are
    marked sent with their deliveries, and the `new` emails enter the outbox as pending."""
    sent, new = list(sent), list(new)
    if not sent and not new:
        return
    when = now_iso()
    with immediate(db):
        if sent:
            _mark_sent(db, sent, when)
        db.conn.executemany(
            "INSERT INTO emails (message_id, run_id, subscriber, created_at, status, day, "
            "attempts) VALUES (?, ?, ?, ?, 'pending', ?, 0)",
            [(e.message_id, run_id, e.subscriber, when, e.day) for e in new],
        )
        db.conn.executemany(
            "INSERT INTO email_papers (message_id, paper_id) VALUES (?, ?)",
            [(e.message_id, paper_id) for e in new for paper_id in e.paper_ids],
        )


def withdraw_pending(db: sqlite_utils.Database, message_ids: Iterable[str]) -> None:
    """Forget pending emails that were never handed to the mail server (a stopped run): their
    papers are simply still owed."""
    ids = list(message_ids)
    if not ids:
        return
    with immediate(db):
        for message_id in ids:
            db.execute("DELETE FROM email_papers WHERE message_id = ?", [message_id])
            db.execute(
                "DELETE FROM emails WHERE message_id = ? AND status = 'pending' AND attempts = 0",
                [message_id],
            )


def mark_deferred(db: sqlite_utils.Database, message_id: str, error: str) -> None:
    """Refused for now (4xx) through every retry: not delivered; its papers stay owed and go
    in the subscriber's next email."""
    with immediate(db):
        db["emails"].update(message_id, {"status": "deferred", "error": error})


def mark_cancelled(db: sqlite_utils.Database, message_id: str, why: str) -> None:
    with immediate(db):
        db["emails"].update(message_id, {"status": "cancelled", "error": why})


def mark_failed(
    db: sqlite_utils.Database, message_id: str, error: str, suspend_after: int = 0
) -> bool:
    """Refused for good (5xx): recorded with the server's reply. Counts towards suspending the
    address; returns True when this failure suspended it."""
    when = now_iso()
    with immediate(db):
        db["emails"].update(message_id, {"status": "failed", "error": error})
        row = db.execute("SELECT subscriber FROM emails WHERE message_id = ?", [message_id])
        subscriber = row.fetchone()[0]
        db.execute(
            "INSERT INTO mailboxes (subscriber, permanent_failures, last_error, last_failure_at) "
            "VALUES (?, 1, ?, ?) ON CONFLICT (subscriber) DO UPDATE SET "
            "permanent_failures = permanent_failures + 1, last_error = excluded.last_error, "
            "last_failure_at = excluded.last_failure_at",
            [subscriber, error, when],
        )
        failures, since = db.execute(
            "SELECT permanent_failures, suspended_since FROM mailboxes WHERE subscriber = ?",
            [subscriber],
        ).fetchone()
        if suspend_after and since is None and failures >= suspend_after:
            reason = f"{failures} permanent failures in a row, the last: {error}"
            db["mailboxes"].update(
                subscriber, {"suspended_since": when, "suspended_reason": reason}
            )
            return True
    return False


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


def record_fetch(
    db: sqlite_utils.Database, run_id: int, newest_paper: str | None, when: datetime
) -> None:
    """The run's fetch succeeded at `when` (and returned papers up to `newest_paper`)."""
    with immediate(db):
        db["runs"].update(run_id, {"fetched_at": now_iso(when), "newest_paper": newest_paper})


def last_fetch(db: sqlite_utils.Database, before_run: int) -> tuple[datetime, str | None] | None:
    """When the latest successful fetch before run `before_run` happened, and the newest paper
    it had seen (the newest any earlier fetch returned)."""
    row = db.execute(
        "SELECT max(fetched_at), max(newest_paper) FROM runs "
        "WHERE id < ? AND fetched_at IS NOT NULL",
        [before_run],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return datetime.fromisoformat(row[0]), row[1]


# The daemon and `digest status` -------------------------------------------------------------


def last_ok_send(db: sqlite_utils.Database) -> datetime | None:
    """When the latest successful `send` run started (what "today's run happened" is read from)."""
    row = db.execute(
        "SELECT max(started_at) FROM runs WHERE kind = 'send' AND status = 'ok'"
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def failed_sends_since(db: sqlite_utils.Database, since: datetime) -> list[datetime]:
    """When each `send` run started at or after `since` ended in failure, oldest first."""
    rows = db.execute(
        "SELECT coalesce(finished_at, started_at) FROM runs "
        "WHERE kind = 'send' AND status = 'failed' AND started_at >= ? ORDER BY started_at",
        [now_iso(since)],
    ).fetchall()
    return [datetime.fromisoformat(row[0]) for row in rows]


def daemon_started(db: sqlite_utils.Database, pid: int, now: datetime | None = None) -> None:
    when = now_iso(now)
    with immediate(db):
        db["daemon"].upsert(
            {"id": 1, "pid": pid, "started_at": when, "heartbeat_at": when, "stopped_at": None},
            pk="id",
        )


def daemon_heartbeat(db: sqlite_utils.Database, now: datetime | None = None) -> None:
    with immediate(db):
        db.execute("UPDATE daemon SET heartbeat_at = ? WHERE id = 1", [now_iso(now)])


def daemon_stopped(db: sqlite_utils.Database, now: datetime | None = None) -> None:
    with immediate(db):
        db.execute("UPDATE daemon SET stopped_at = ? WHERE id = 1", [now_iso(now)])


def daemon_row(db: sqlite_utils.Database) -> dict[str, object] | None:
    rows = list(db.query("SELECT pid, started_at, heartbeat_at, stopped_at FROM daemon"))
    return rows[0] if rows else None


def recent_runs(db: sqlite_utils.Database, limit: int) -> list[dict[str, object]]:
    """The latest runs, newest first; `timings` decoded (None for runs that have none)."""
    runs = list(db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))
    for run in runs:
        run["timings"] = json.loads(str(run["timings"])) if run.get("timings") else None
    return runs


def failed_emails(db: sqlite_utils.Database, run_ids: Iterable[int]) -> list[dict[str, object]]:
    """The emails of these runs that the mail server refused, with its reply."""
    ids = list(run_ids)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return list(
        db.query(
            "SELECT run_id, subscriber, created_at, error FROM emails "
            f"WHERE status = 'failed' AND run_id IN ({marks}) ORDER BY run_id DESC, created_at",
            ids,
        )
    )


def owed_emails(db: sqlite_utils.Database) -> list[dict[str, object]]:
    """Each subscriber whose latest email is pending or was refused: its papers are still owed
    (not to an address that unsubscribed).
    `papers` counts the ones of that email not delivered to them since."""
    return list(
        db.query(
            "SELECT e.subscriber, e.status, e.created_at, e.error, e.run_id, "
            "(SELECT count(*) FROM email_papers ep WHERE ep.message_id = e.message_id "
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber = e.subscriber "
            "  AND d.paper_id = ep.paper_id)) AS papers "
            "FROM emails e WHERE e.status IN ('pending', 'failed', 'deferred') "
            "AND NOT EXISTS (SELECT 1 FROM emails later WHERE later.subscriber = e.subscriber "
            " AND later.rowid > e.rowid) "
            "AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.subscriber = e.subscriber) "
            "ORDER BY e.status DESC, e.created_at"
        )
    )


# Bounces and complaints (`digest bounces`) ---------------------------------------------------


@dataclass(frozen=True)
class Bounce:
    """One report read from the bounce mailbox, as it is recorded."""

    id: str
    kind: str
    subscriber: str | None
    message_id: str | None
    attributed_by: str | None
    recipient: str
    status: str
    detail: str
    source: str


def email_subscriber(
    db: sqlite_utils.Database, message_ids: Iterable[str]
) -> tuple[str, str] | None:
    """(subscriber, Message-ID) of the first of these Message-IDs our outbox sent or tried."""
    for message_id in message_ids:
        row = db.execute(
            "SELECT subscriber, message_id FROM emails WHERE message_id = ?", [message_id]
        ).fetchone()
        if row is not None:
            return row[0], row[1]
    return None


def latest_email_to(db: sqlite_utils.Database, subscriber_key: str) -> str | None:
    """The Message-ID of the latest email the outbox made for this subscriber, if any."""
    row = db.execute(
        "SELECT message_id FROM emails WHERE subscriber = ? ORDER BY rowid DESC LIMIT 1",
        [subscriber_key],
    ).fetchone()
    return row[0] if row else None


def bounce_known(db: sqlite_utils.Database, bounce_id: str) -> bool:
    return db.execute("SELECT 1 FROM bounces WHERE id = ?", [bounce_id]).fetchone() is not None


def record_bounce(
    db: sqlite_utils.Database, bounce: Bounce, suspend_reason: str | None
) -> str | None:
    """Record a report once (None: it was recorded before, nothing changes) and apply it: with
    `suspend_reason` the address is suspended at once, as `mark_failed` does after enough 5xx
    (a hard bounce also counts as a permanent failure). Returns the action recorded."""
    when = now_iso()
    with immediate(db):
        if bounce_known(db, bounce.id):
            return None
        if bounce.subscriber is None:
            action = "not attributed" if bounce.kind != "other" else "ignored"
        elif bounce.kind == "soft":
            action = "counted"
        elif bounce.kind == "other" or suspend_reason is None:
            action = "ignored"
        else:
            action = _suspend_now(db, bounce, suspend_reason, when)
        db["bounces"].insert(
            {
                "id": bounce.id,
                "read_at": when,
                "kind": bounce.kind,
                "subscriber": bounce.subscriber,
                "message_id": bounce.message_id,
                "attributed_by": bounce.attributed_by,
                "recipient": bounce.recipient,
                "status": bounce.status,
                "detail": bounce.detail,
                "action": action,
                "source": bounce.source,
            }
        )
    return action


def _suspend_now(db: sqlite_utils.Database, bounce: Bounce, reason: str, when: str) -> str:
    failures = 1 if bounce.kind == "hard" else 0
    db.execute(
        "INSERT INTO mailboxes (subscriber, permanent_failures, last_error, last_failure_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (subscriber) DO UPDATE SET "
        "permanent_failures = permanent_failures + excluded.permanent_failures, "
        "last_error = excluded.last_error, last_failure_at = excluded.last_failure_at",
        [bounce.subscriber, failures, reason, when],
    )
    cursor = db.execute(
        "UPDATE mailboxes SET suspended_since = ?, suspended_reason = ? "
        "WHERE subscriber = ? AND suspended_since IS NULL",
        [when, reason, bounce.subscriber],
    )
    return "suspended" if cursor.rowcount else "already suspended"


def soft_bounces(db: sqlite_utils.Database, subscriber_key: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM bounces WHERE subscriber = ? AND kind = 'soft'", [subscriber_key]
    ).fetchone()
    return int(row[0])


def record_bounce_check(
    db: sqlite_utils.Database,
    started_at: str,
    mailbox: str,
    messages: int,
    error: str | None = None,
) -> None:
    """One read of the bounce mailbox: how many reports it found, or why it failed."""
    with immediate(db):
        db["bounce_checks"].insert(
            {
                "started_at": started_at,
                "finished_at": now_iso(),
                "mailbox": mailbox,
                "messages": messages,
                "status": "failed" if error else "ok",
                "error": error,
            }
        )


def bounce_overview(db: sqlite_utils.Database, limit: int = 10) -> dict[str, object]:
    """For `digest status`: counts per kind, soft bounces per address, the latest reports and
    the latest read of the mailbox."""
    counts = {kind: 0 for kind in ("hard", "soft", "complaint", "other", "not_attributed")}
    for kind, attributed, count in db.execute(
        "SELECT kind, subscriber IS NOT NULL, count(*) FROM bounces GROUP BY 1, 2"
    ).fetchall():
        if attributed or kind == "other":
            counts[kind] += count
        else:
            counts["not_attributed"] += count
    soft = dict(
        db.execute(
            "SELECT subscriber, count(*) FROM bounces WHERE kind = 'soft' "
            "AND subscriber IS NOT NULL GROUP BY subscriber ORDER BY subscriber"
        ).fetchall()
    )
    recent = list(
        db.query(
            "SELECT read_at, kind, subscriber, recipient, status, detail, action, source "
            "FROM bounces WHERE kind != 'other' ORDER BY read_at DESC, rowid DESC LIMIT ?",
            [limit],
        )
    )
    checks = list(
        db.query(
            "SELECT started_at, finished_at, mailbox, messages, status, error FROM bounce_checks "
            "ORDER BY id DESC LIMIT 1"
        )
    )
    return {
        "counts": counts,
        "soft_by_address": soft,
        "recent": recent,
        "last_check": checks[0] if checks else None,
    }
