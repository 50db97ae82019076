"""The database schema, as migrations: plain functions applied in order by `store.migrate` and
recorded in `_migrations`; never edited once released (a change is a new function at the end).

The tables today:
- papers (+ papers_fts, an external-content FTS5 index with the porter stemmer): one row per
  arXiv id without version, the newest version seen.
- emails: the outbox, one row per email built for sending (see digest/outbox.py for its states),
  with the papers it carries (`papers`, a JSON list in the email's order) and the why line of
  each recommended one (`recommended`, a JSON object, NULL when none); deliveries:
  (subscriber, paper) pairs the mail server accepted, with the email that carried them.
- runs: one row per `digest send` (kind send | dry-run; status running | ok | failed |
  stopped), with counts, the fetch's outcome, trending and timings (JSON).
- mailboxes: consecutive permanent failures per address and its suspension.
- suppressions: unsubscribes. trending: Hugging Face upvotes per day. daemon: `digest run`'s
  heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


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
            "status": str,  # running | ok | failed | stopped
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
            "status": str,  # see digest/outbox.py
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
    """How long each stage of a `digest send` took (JSON, see `report.Timings`)."""
    db["runs"].add_column("timings", str)


def _m_feedback(db: sqlite_utils.Database) -> None:
    """Readers' feedback (issue 13): one opinion per (subscriber, paper), the latest.

    feedback: `kind` like | dislike, `source` csv (the likes column) | cli | web.
    recommend_vocabulary: the stored tf-idf vocabulary (one row, replaced when refitted).
    reader_models: each reader's fitted weights, keyed by a hash of what they were fitted on.
    paper_vectors: tf-idf vectors of the papers read every run (liked, disliked, the samples).
    """
    db["feedback"].create(
        {"subscriber": str, "paper_id": str, "kind": str, "created_at": str, "source": str},
        pk=("subscriber", "paper_id"),
    )
    db["feedback"].create_index(["paper_id"])
    db["recommend_vocabulary"].create(
        {
            "id": int,
            "version": str,
            "created_at": str,
            "fitted_on": int,
            "data": str,  # JSON: terms, background and control paper ids
            "idf": bytes,  # float32 array
        },
        pk="id",
    )
    db["reader_models"].create(
        {
            "subscriber": str,
            "key": str,  # recommend.feedback_key: vocabulary version + likes + dislikes
            "intercept": float,
            "threshold": float,
            "indices": bytes,  # int32 array
            "weights": bytes,  # float16 array
            "fitted_at": str,
        },
        pk="subscriber",
    )
    db["paper_vectors"].create(
        {"paper_id": str, "version": str, "indices": bytes, "data": bytes},  # int32, float32
        pk="paper_id",
    )


def _m_compact_outbox(db: sqlite_utils.Database) -> None:
    """An email's papers as one JSON list in `emails.papers` (one row written per email, not
    one per paper: email_papers is gone), and deliveries WITHOUT ROWID (one b-tree to write
    per delivered paper, not two). A run records thousands of emails a minute."""
    db["emails"].add_column("papers", str)
    db.execute(
        "UPDATE emails SET papers = (SELECT json_group_array(paper_id) FROM (SELECT paper_id "
        "FROM email_papers WHERE email_papers.message_id = emails.message_id ORDER BY paper_id))"
    )
    db.execute("DROP TABLE email_papers")
    db.execute(
        "CREATE TABLE deliveries_new (subscriber TEXT, paper_id TEXT, message_id TEXT, "
        "delivered_at TEXT, PRIMARY KEY (subscriber, paper_id)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO deliveries_new SELECT subscriber, paper_id, message_id, delivered_at "
        "FROM deliveries"
    )
    db.execute("DROP TABLE deliveries")
    db.execute("ALTER TABLE deliveries_new RENAME TO deliveries")


def _m_signups(db: sqlite_utils.Database) -> None:
    """Sign-up requests of `digest serve` (DIGEST_SIGNUP=open): when a confirmation email was
    last sent to an address, and each request by client, for the abuse limits."""
    db["signup_emails"].create({"subscriber": str, "sent_at": str}, pk="subscriber")
    db["signup_requests"].create({"client": str, "at": str})
    db["signup_requests"].create_index(["client", "at"])


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


def _m_outbox_recommended(db: sqlite_utils.Database) -> None:
    """The "Recommended for you" papers of an email (issue 13), paper id -> the line saying why
    (JSON; NULL when none): a pending email is sent again as it was, and its recommendations
    are no keyword match that planning could find again."""
    db["emails"].add_column("recommended", str)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial,
    _m_delivery_faults,
    _m_daemon_heartbeat,
    _m_trending_upvotes,
    _m_suppressions,
    _m_run_timings,
    _m_feedback,
    _m_compact_outbox,
    _m_signups,
    _m_bounces,
    _m_outbox_recommended,
]
