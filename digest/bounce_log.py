"""Bounces and complaints as the database keeps them (`digest bounces`): each report read
once (by the SHA-256 of the message), what it did (a hard bounce or a complaint suspends the
address, a soft bounce is counted), and each read of the mailbox, for `digest status`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from digest.store import immediate, now_iso


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
