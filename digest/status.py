"""`digest status`: what the last runs did, what is owed, whether the daemon is alive and when
the next run is due; `--check` turns that into an exit status for a container's HEALTHCHECK.

Unhealthy (`problems`): the daemon never ran, stopped, went silent or missed a day's run; the
subscribers file is missing, unreadable or has no valid row; the database cannot be written
(its folder, the file or its -wal/-shm files, a read-only mount, a full disk)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from digest import bounce_log, outbox, runlog, store, subscribers, volume
from digest.config import Settings
from digest.errors import DigestError
from digest.timetable import REASONS, local_day, missed_day, plan_from_db

# The daemon says it is alive every TICK_SECONDS and after each email; fetching from a slow
# arXiv can keep it busy for minutes, so only a long silence counts as dead.
STALE_AFTER = timedelta(minutes=10)
DEFAULT_GRACE = timedelta(minutes=60)


@dataclass
class Status:
    """Times are ISO 8601 in UTC (as stored); `render_text` shows them in DIGEST_TIMEZONE."""

    now: str
    timezone: str
    send_at: str
    daemon: dict[str, Any] | None
    next_run: dict[str, str]
    runs: list[dict[str, Any]]
    failed_emails: list[dict[str, Any]]
    owed: list[dict[str, Any]]
    suspended: list[dict[str, Any]]
    missed: str | None
    problems: list[str] = field(default_factory=list)  # what `--check` fails on
    bounces: dict[str, Any] = field(default_factory=dict)  # see bounce_log.bounce_overview

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "healthy": self.healthy}, indent=2)


def gather(
    settings: Settings,
    *,
    now: datetime | None = None,
    runs: int = 5,
    grace: timedelta = DEFAULT_GRACE,
) -> Status:
    """Read the database (never creating it) and work out the status."""
    if not settings.db_path.exists():
        raise DigestError(
            f"{settings.db_path}: no database yet; `digest run` or `digest send` creates it "
            f"(or point DIGEST_DB at yours)"
        )
    now = now or datetime.now(UTC)
    zone = settings.tz
    db = store.open_db(settings.db_path)
    recent = runlog.recent_runs(db, runs)
    daemon = runlog.daemon_row(db)
    next_plan = plan_from_db(db, settings, now)
    last_ok = runlog.last_ok_send(db)
    last_ok_day = local_day(last_ok, zone) if last_ok else None

    problems: list[str] = []
    missed = None
    if daemon is None:
        problems.append("the daemon (`digest run`) has never run on this database")
    else:
        started = datetime.fromisoformat(str(daemon["started_at"]))
        seen = datetime.fromisoformat(str(daemon["heartbeat_at"]))
        daemon["running"] = not daemon["stopped_at"] and now - seen <= STALE_AFTER
        if daemon["stopped_at"]:
            problems.append(f"the daemon stopped at {_local(daemon['stopped_at'], settings)}")
        elif now - seen > STALE_AFTER:
            problems.append(f"the daemon has not been seen since {_local(seen, settings)}")
        missed_on = missed_day(now, zone, settings.send_at, last_ok_day, started, grace)
        if missed_on is not None:
            missed = missed_on.isoformat()
            last = f"last successful run {_local(last_ok, settings)}" if last_ok else "none yet"
            problems.append(
                f"the daemon missed the run for {missed} (due {settings.send_at} "
                f"{settings.timezone}; {last}); see `digest status`"
            )
    problems.extend(file_problems(settings))
    return Status(
        now=store.now_iso(now),
        timezone=settings.timezone,
        send_at=settings.send_at,
        daemon=daemon,
        next_run={
            "due": next_plan.due.isoformat(),
            "day": next_plan.day.isoformat(),
            "reason": next_plan.reason,
            "now": "yes" if next_plan.is_due(now) else "no",
        },
        runs=recent,
        failed_emails=outbox.failed_emails(db, [int(r["id"]) for r in recent]),
        owed=outbox.owed_emails(db),
        suspended=[
            {"subscriber": s.subscriber, "since": s.since, "reason": s.reason}
            for s in store.suspensions(db).values()
        ],
        missed=missed,
        problems=problems,
        bounces=bounce_log.bounce_overview(db),
    )


def file_problems(settings: Settings) -> list[str]:
    """What keeps the next run from working that the daemon cannot see while it waits: the
    database cannot be written, the subscribers file is unusable or lists nobody valid."""
    found = []
    if problem := volume.database_problem(settings.db_path):
        found.append(f"{settings.db_path}: the database cannot be written: {problem}")
    path = settings.subscribers_path
    try:
        people, bad = subscribers.load(path)
    except DigestError as exc:
        found.append(str(exc))
    except OSError as exc:
        found.append(str(volume.os_error(exc) or f"{path}: {exc}"))
    else:
        if not people:
            rows = f"{len(bad)} row{'s' * (len(bad) != 1)}, none valid" if bad else "no rows"
            found.append(
                f"{path}: no valid subscriber ({rows}), so nothing would be sent; "
                f"`digest subscribers check` shows what to fix"
            )
    return found


def _local(moment: datetime | object, settings: Settings) -> str:
    if moment is None or moment == "":
        return "-"
    when = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    return when.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_text(status: Status, settings: Settings) -> str:
    when = _local(status.now, settings)
    out = [f"digest status at {when} (send time {status.send_at} {status.timezone})"]
    d = status.daemon
    if d is None:
        out.append("Daemon: never started on this database")
    elif d.get("running"):
        out.append(
            f"Daemon: running since {_local(d['started_at'], settings)} (pid {d['pid']}), "
            f"last seen {_local(d['heartbeat_at'], settings)}"
        )
    elif d["stopped_at"]:
        out.append(f"Daemon: stopped at {_local(d['stopped_at'], settings)}")
    else:
        out.append(f"Daemon: not seen since {_local(d['heartbeat_at'], settings)}")
    reason = REASONS[status.next_run["reason"]]
    due = "now" if status.next_run["now"] == "yes" else _local(status.next_run["due"], settings)
    out.append(f"Next run: {due} ({reason})")
    if status.missed:
        out.append(f"MISSED: the run for {status.missed} has not happened")

    out.append("")
    out.append("Last runs:" if status.runs else "Last runs: none yet")
    for r in status.runs:
        out.append(
            f"  #{r['id']} {r['kind']} {r['status']}, started {_local(r['started_at'], settings)}: "
            f"{r['papers_fetched'] or 0} papers fetched in {r['arxiv_requests'] or 0} arXiv "
            f"requests, {r['emails_sent'] or 0} emails sent, {r['emails_failed'] or 0} failed"
        )
        if r["message"]:
            out.append(f"      {r['message']}")
    if status.failed_emails:
        out.append("")
        out.append("Failed emails (the mail server's reply):")
        for e in status.failed_emails:
            out.append(f"  run #{e['run_id']} {e['subscriber']}: {e['error']}")
    out.append("")
    out.append("Owed (latest email not accepted yet):" if status.owed else "Owed: nothing")
    for e in status.owed:
        why = f": {e['error']}" if e["error"] else ""
        out.append(
            f"  {e['subscriber']}: {e['papers']} papers, {e['status']} since "
            f"{_local(e['created_at'], settings)}{why}"
        )
    if status.suspended:
        out.append("")
        out.append("Suspended (nothing is sent to them):")
        for s in status.suspended:
            out.append(
                f"  {s['subscriber']}: since {_local(s['since'], settings)}: {s['reason']}; "
                f"`digest subscribers enable {s['subscriber']}` sends to it again"
            )
    out += _bounce_lines(status.bounces, settings)
    return "\n".join(out)


def _bounce_lines(found: dict[str, Any], settings: Settings) -> list[str]:
    """The bounces section: nothing when the bounce mailbox was never read."""
    check = found.get("last_check")
    if not check:
        return []
    c = found["counts"]
    when = _local(check["finished_at"], settings)
    if check["status"] == "failed":
        head = f"Bounces: the last read of {check['mailbox']} ({when}) failed: {check['error']}"
    else:
        head = f"Bounces (last read {when}, {check['mailbox']}):"
    out = ["", head]
    out.append(
        f"  {c['hard']} hard, {c['soft']} soft, {c['complaint']} complaints, "
        f"{c['not_attributed']} not attributed"
    )
    for r in found["recent"]:
        who = r["subscriber"] or f"not attributed ({r['recipient'] or 'no address'})"
        status = f" {r['status']}" if r["status"] else ""
        detail = f": {r['detail']}" if r["detail"] else ""
        out.append(
            f"  {_local(r['read_at'], settings)} {who}: {r['kind']}{status}{detail} [{r['action']}]"
        )
    soft = found["soft_by_address"]
    if soft:
        out.append("  Soft bounces per address: " + ", ".join(f"{a} {n}" for a, n in soft.items()))
    return out
