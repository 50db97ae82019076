"""The run log: one row per `digest send` (started, finished with a status, its counts, the
fetch's outcome, its timings) and the daemon's heartbeat: what `digest run` decides from and
`digest status` shows.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import sqlite_utils

from digest.store import immediate, now_iso


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


def record_forced_stop(
    path: Path, after_run: int | None, message: str, now: datetime | None = None
) -> None:
    """The daemon exits before its run could end (called from another thread, on a connection
    of its own that waits at most a second for a lock): the send runs after `after_run` still
    running (the daemon's own: it holds the run lock) become `stopped`; the daemon stopped."""
    conn = sqlite3.connect(path, timeout=1.0)
    try:
        with conn:
            if after_run is not None:
                conn.execute(
                    "UPDATE runs SET status = 'stopped', finished_at = ?, message = ? "
                    "WHERE status = 'running' AND kind = 'send' AND id > ?",
                    [now_iso(now), message, after_run],
                )
            conn.execute("UPDATE daemon SET stopped_at = ? WHERE id = 1", [now_iso(now)])
    finally:
        conn.close()


def daemon_row(db: sqlite_utils.Database) -> dict[str, object] | None:
    rows = list(db.query("SELECT pid, started_at, heartbeat_at, stopped_at FROM daemon"))
    return rows[0] if rows else None


def recent_runs(db: sqlite_utils.Database, limit: int) -> list[dict[str, object]]:
    """The latest runs, newest first; `timings` decoded (None for runs that have none)."""
    runs = list(db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))
    for run in runs:
        run["timings"] = json.loads(str(run["timings"])) if run.get("timings") else None
    return runs
