"""The outbox: every email built for sending, its state, and every change of state.

An email enters the outbox as PENDING before it is handed to the mail server, with its
Message-ID, day and papers in the email's order (not its bytes), and the why line of each paper
it recommends (issue 13). From there:

    PENDING --250-------------------------> SENT       its papers become deliveries (same commit)
    PENDING --5xx---------------------------> FAILED     counts towards suspending the address
    PENDING --4xx or cut off, every retry---> DEFERRED   (4xx) its papers go in the next email
                                              PENDING    (cut off) sent again as it is
    PENDING --address gone / no match-------> CANCELLED
    PENDING --never handed out (stopped)----> forgotten  (`withdraw`): its papers stay owed

A PENDING email left by an earlier run (it died, or was stopped) is sent again first, as it
was: same Message-ID, same papers in the same order, same recommendations, same day, so a
reader's mail program can drop a second copy. An accepted email is marked SENT as soon as the
server says 250, before the next email goes out on that connection: a killed run re-sends at
most the emails in flight, one per connection. Only SENT emails count as delivered; papers of
DEFERRED and FAILED ones stay owed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlite_utils

from digest.store import immediate, now_iso

PENDING = "pending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
CANCELLED = "cancelled"
OWED = (PENDING, FAILED, DEFERRED)  # the latest email in one of these: its papers are owed
REFUSED = (DEFERRED, FAILED)


@dataclass(frozen=True)
class PendingEmail:
    """An email committed to the outbox whose fate is unknown: never tried, or in flight when
    the run died. It is sent again as it was, with the same Message-ID."""

    message_id: str
    subscriber: str
    day: str
    paper_ids: tuple[str, ...]  # in the email's order
    attempts: int
    recommended: Mapping[str, str] = field(default_factory=dict)  # paper id -> why (issue 13)


def pending_emails(db: sqlite_utils.Database) -> list[PendingEmail]:
    """Every pending email, oldest first."""
    rows = db.execute(
        "SELECT message_id, subscriber, day, attempts, papers, recommended FROM emails "
        "WHERE status = ? ORDER BY created_at, rowid",
        [PENDING],
    ).fetchall()
    return [
        PendingEmail(
            message_id,
            subscriber,
            day or "",
            tuple(json.loads(papers)),
            tries,
            json.loads(recommended) if recommended else {},
        )
        for message_id, subscriber, day, tries, papers, recommended in rows
    ]


def set_email_papers(db: sqlite_utils.Database, message_id: str, paper_ids: Iterable[str]) -> None:
    """Make a pending email carry exactly `paper_ids` (what its rebuilt body shows)."""
    ids = list(paper_ids)
    with immediate(db):
        row = db.execute("SELECT recommended FROM emails WHERE message_id = ?", [message_id])
        found = row.fetchone()
        why = json.loads(found[0]) if found and found[0] else {}
        db.execute(
            "UPDATE emails SET papers = ?, recommended = ? WHERE message_id = ?",
            [json.dumps(ids), _recommended_json(why, ids), message_id],
        )


def _recommended_json(why: Mapping[str, str], paper_ids: Iterable[str]) -> str | None:
    """The why lines of the recommended papers among `paper_ids` (JSON; None when none)."""
    kept = {pid: why[pid] for pid in paper_ids if pid in why}
    return json.dumps(kept) if kept else None


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def last_sent_many(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, datetime]:
    """When the mail server last accepted an email for each of these subscribers (those never
    sent to are left out). One query per 500 subscribers."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(keys)):
        rows = db.execute(
            f"SELECT subscriber, max(sent_at) FROM emails WHERE status = '{SENT}' "
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
            "SELECT emails.subscriber, paper.value FROM emails, json_each(emails.papers) AS paper "
            f"WHERE emails.subscriber IN ({','.join('?' * len(chunk))}) "
            f"AND emails.status = '{PENDING}'",
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
            "SELECT DISTINCT emails.subscriber, paper.value "
            "FROM emails, json_each(emails.papers) AS paper "
            f"WHERE emails.subscriber IN ({','.join('?' * len(chunk))}) "
            f"AND emails.status IN ('{DEFERRED}', '{FAILED}') AND NOT EXISTS (SELECT 1 FROM "
            "deliveries WHERE deliveries.subscriber = emails.subscriber "
            "AND deliveries.paper_id = paper.value)",
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


def mark_sent(db: sqlite_utils.Database, message_ids: Iterable[str]) -> None:
    """The server accepted these emails (250): they are SENT and their papers delivered, in
    one commit. Called for each accepted email before its connection carries the next."""
    ids = list(message_ids)
    if not ids:
        return
    when = now_iso()
    with immediate(db):
        conn = db.conn
        conn.executemany(
            f"UPDATE emails SET status = '{SENT}', sent_at = ?, attempts = attempts + 1, "
            "last_attempt_at = ?, last_code = 250, error = NULL WHERE message_id = ?",
            [(when, when, message_id) for message_id in ids],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (subscriber, paper_id, message_id, delivered_at) "
            "SELECT emails.subscriber, paper.value, emails.message_id, ? "
            "FROM emails, json_each(emails.papers) AS paper WHERE emails.message_id = ?",
            [(when, message_id) for message_id in ids],
        )
        conn.executemany(
            "UPDATE mailboxes SET permanent_failures = 0 WHERE subscriber = "
            "(SELECT subscriber FROM emails WHERE message_id = ?)",
            [(message_id,) for message_id in ids],
        )


@dataclass(frozen=True)
class NewEmail:
    """An email for the outbox: committed as pending before it is handed to a sender."""

    subscriber: str
    message_id: str
    paper_ids: tuple[str, ...]  # exactly what the email shows, in its order
    day: str
    recommended: Mapping[str, str] = field(default_factory=dict)  # paper id -> why (issue 13)


def add_pending(db: sqlite_utils.Database, run_id: int, new: Iterable[NewEmail]) -> None:
    """These emails enter the outbox as PENDING, in one commit, before any is handed out."""
    new = list(new)
    if not new:
        return
    when = now_iso()
    with immediate(db):
        db.conn.executemany(
            "INSERT INTO emails (message_id, run_id, subscriber, created_at, status, day, "
            f"attempts, papers, recommended) VALUES (?, ?, ?, ?, '{PENDING}', ?, 0, ?, ?)",
            [
                (
                    e.message_id,
                    run_id,
                    e.subscriber,
                    when,
                    e.day,
                    json.dumps(list(e.paper_ids)),
                    _recommended_json(e.recommended, e.paper_ids) if e.recommended else None,
                )
                for e in new
            ],
        )


def withdraw(db: sqlite_utils.Database, message_ids: Iterable[str]) -> None:
    """Forget pending emails that were never handed to the mail server (a stopped run): their
    papers are simply still owed."""
    ids = list(message_ids)
    if not ids:
        return
    with immediate(db):
        for message_id in ids:
            db.execute(
                f"DELETE FROM emails WHERE message_id = ? AND status = '{PENDING}' "
                "AND attempts = 0",
                [message_id],
            )


def mark_deferred(db: sqlite_utils.Database, message_id: str, error: str) -> None:
    """Refused for now (4xx) through every retry: not delivered; its papers stay owed and go
    in the subscriber's next email."""
    with immediate(db):
        db["emails"].update(message_id, {"status": DEFERRED, "error": error})


def mark_cancelled(db: sqlite_utils.Database, message_id: str, why: str) -> None:
    with immediate(db):
        db["emails"].update(message_id, {"status": CANCELLED, "error": why})


def mark_failed(
    db: sqlite_utils.Database, message_id: str, error: str, suspend_after: int = 0
) -> bool:
    """Refused for good (5xx): recorded with the server's reply. Counts towards suspending the
    address; returns True when this failure suspended it."""
    when = now_iso()
    with immediate(db):
        db["emails"].update(message_id, {"status": FAILED, "error": error})
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


def failed_emails(db: sqlite_utils.Database, run_ids: Iterable[int]) -> list[dict[str, object]]:
    """The emails of these runs that the mail server refused, with its reply."""
    ids = list(run_ids)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return list(
        db.query(
            "SELECT run_id, subscriber, created_at, error FROM emails "
            f"WHERE status = '{FAILED}' AND run_id IN ({marks}) ORDER BY run_id DESC, created_at",
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
            "(SELECT count(*) FROM json_each(e.papers) AS ep "
            " WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber = e.subscriber "
            "  AND d.paper_id = ep.value)) AS papers "
            f"FROM emails e WHERE e.status IN ('{PENDING}', '{FAILED}', '{DEFERRED}') "
            "AND NOT EXISTS (SELECT 1 FROM emails later WHERE later.subscriber = e.subscriber "
            " AND later.rowid > e.rowid) "
            "AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.subscriber = e.subscriber) "
            "ORDER BY e.status DESC, e.created_at"
        )
    )
