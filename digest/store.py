"""The SQLite store: papers (with an FTS5 index), emails, deliveries and runs.

One function opens the database and brings its schema up to date; migrations are a list of plain
functions, applied in order and recorded in `_migrations`, never edited once released.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m001_initial]


def open_db(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, migrated to the current schema."""
    if path.parent and not path.parent.exists():
        raise DigestError(
            f"{path}: the folder {path.parent} does not exist; create it or "
            f"point DIGEST_DB elsewhere"
        )
    db = sqlite_utils.Database(path)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.enable_wal()
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db)
    return db


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


def keyword_hits(db: sqlite_utils.Database, keyword: str, since: datetime) -> dict[str, Hit]:
    """Papers first published at or after `since` whose title or abstract has `keyword`.

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
    marks = [HIGHLIGHT_START, HIGHLIGHT_END] * 2
    rows = db.execute(sql, [*marks, phrase, now_iso(since)]).fetchall()
    return {
        paper_id: (spans_from_highlight(title), spans_from_highlight(abstract))
        for paper_id, title, abstract in rows
    }


# Deliveries, emails, runs ---------------------------------------------------------------------


def delivered_ids(db: sqlite_utils.Database, subscriber_key: str, ids: Iterable[str]) -> set[str]:
    wanted = list(ids)
    delivered: set[str] = set()
    for chunk_start in range(0, len(wanted), 500):
        chunk = wanted[chunk_start : chunk_start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT paper_id FROM deliveries WHERE subscriber = ? AND paper_id IN ({marks})",
            [subscriber_key, *chunk],
        ).fetchall()
        delivered.update(row[0] for row in rows)
    return delivered


def start_run(db: sqlite_utils.Database, kind: str) -> int:
    with immediate(db):
        table = db["runs"].insert({"kind": kind, "started_at": now_iso(), "status": "running"})
        return int(table.last_pk)


def finish_run(db: sqlite_utils.Database, run_id: int, status: str, **counts: object) -> None:
    with immediate(db):
        db["runs"].update(run_id, {"status": status, "finished_at": now_iso(), **counts})


def add_pending_email(
    db: sqlite_utils.Database,
    run_id: int,
    subscriber_key: str,
    message_id: str,
    paper_ids: Iterable[str],
) -> None:
    """The outbox: the email and the papers it carries, committed before it is sent."""
    with immediate(db):
        db["emails"].insert(
            {
                "message_id": message_id,
                "run_id": run_id,
                "subscriber": subscriber_key,
                "created_at": now_iso(),
                "status": "pending",
            }
        )
        db["email_papers"].insert_all(
            {"message_id": message_id, "paper_id": paper_id} for paper_id in paper_ids
        )


def mark_sent(db: sqlite_utils.Database, message_id: str) -> None:
    """The server accepted the email: it and its papers are delivered, in one transaction."""
    when = now_iso()
    with immediate(db):
        db["emails"].update(message_id, {"status": "sent", "sent_at": when})
        db.execute(
            "INSERT OR IGNORE INTO deliveries (subscriber, paper_id, message_id, delivered_at) "
            "SELECT emails.subscriber, email_papers.paper_id, emails.message_id, ? "
            "FROM emails JOIN email_papers USING (message_id) WHERE emails.message_id = ?",
            [when, message_id],
        )


def mark_failed(db: sqlite_utils.Database, message_id: str, error: str) -> None:
    with immediate(db):
        db["emails"].update(message_id, {"status": "failed", "error": error})
