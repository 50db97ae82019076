"""When `digest run` runs: one `digest send` per local day at DIGEST_SEND_AT in DIGEST_TIMEZONE.

The decisions are pure functions of (now, zone, send time, the last local day with a successful
run, today's failed attempts); `plan_from_db` only reads those facts from the database. The
daemon (digest/scheduler.py) asks `plan` when to wake up, `digest status` (digest/status.py)
what is next and whether a day was missed. Nothing about past runs is kept in memory, so a
restart never sends twice and never forgets a missed day.

How runs count, per local day of DIGEST_TIMEZONE (the day a run *started*):
- a `send` run with status `ok` is that day's run; any later wake-up that day does nothing;
- a `failed` run (arXiv down, mail server unreachable, a refused address, a bad subscriber row)
  does not count: it is retried later that day, RETRY_FIRST after the failure, doubling up to
  RETRY_MAX, at most MAX_ATTEMPTS times a day; a retry that would fall on the next day is
  dropped, the next day's run takes over (it delivers everything still owed);
- a `stopped` run (SIGTERM/SIGINT) does not count and is not a failure: the next start runs
  again at once for the subscribers still owed;
- a send time that does not exist that day (skipped by a spring DST change) is taken as the same
  instant expressed after the change (02:30 -> 03:30); one that happens twice (autumn) is the
  first. Either way: exactly one run per local day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from digest import runlog
from digest.config import Settings

RETRY_FIRST = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=2)
MAX_ATTEMPTS = 8  # failed attempts a day before waiting for the next day


# Pure decisions ------------------------------------------------------------------------------


def parse_clock(send_at: str) -> time:
    """'07:00' or '07:00:30' (as validated by config) -> a time."""
    return time.fromisoformat(send_at)


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def send_time(day: date, zone: ZoneInfo, send_at: str) -> datetime:
    """The instant (in UTC) of `day`'s run: skipped wall times move past the gap, repeated ones
    are the first (fold=0). UTC, because Python never finds a repeated wall time `==` to any
    datetime of another zone."""
    wall = datetime.combine(day, parse_clock(send_at)).replace(tzinfo=zone)
    return wall.astimezone(UTC)


def retry_delay(failures: int) -> timedelta:
    """How long to wait after the `failures`-th failed attempt of a day (1-based)."""
    return min(RETRY_FIRST * 2 ** max(failures - 1, 0), RETRY_MAX)


@dataclass(frozen=True)
class Plan:
    due: datetime  # UTC; at or before `now` means: run now
    day: date  # the local day the run is for
    reason: str  # send-time | catch-up | retry | done-today | gave-up

    def is_due(self, now: datetime) -> bool:
        return self.due <= now


def plan(
    now: datetime,
    zone: ZoneInfo,
    send_at: str,
    last_ok_day: date | None,
    failures_today: Sequence[datetime] = (),
) -> Plan:
    """When the next run is due. `failures_today`: when today's failed attempts ended."""
    today = local_day(now, zone)
    at = send_time(today, zone, send_at)
    tomorrow = today + timedelta(days=1)
    next_day = send_time(tomorrow, zone, send_at)
    if last_ok_day is not None and last_ok_day >= today:
        return Plan(next_day, tomorrow, "done-today")
    if failures_today:
        if len(failures_today) >= MAX_ATTEMPTS:
            return Plan(next_day, tomorrow, "gave-up")
        retry = max(max(failures_today) + retry_delay(len(failures_today)), at)
        if local_day(retry, zone) != today:
            return Plan(next_day, tomorrow, "gave-up")
        return Plan(retry.astimezone(UTC), today, "retry")
    if now < at:
        return Plan(at, today, "send-time")
    return Plan(now.astimezone(UTC), today, "catch-up")


def missed_day(
    now: datetime,
    zone: ZoneInfo,
    send_at: str,
    last_ok_day: date | None,
    running_since: datetime,
    grace: timedelta,
) -> date | None:
    """The latest local day whose run should be done by now (send time, or the daemon's start
    when it started later that day, plus `grace`) and is not; None when none is missed.
    Days that ended before the daemon started are not its fault."""
    today = local_day(now, zone)
    for day in (today, today - timedelta(days=1)):
        expected_from = max(send_time(day, zone, send_at), running_since)
        if local_day(expected_from, zone) != day or expected_from + grace > now:
            continue
        return None if last_ok_day is not None and last_ok_day >= day else day
    return None


def describe_plan(p: Plan, now: datetime, zone: ZoneInfo) -> str:
    when = p.due.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    if p.is_due(now):
        return f"now ({REASONS[p.reason]})"
    return f"{when} ({REASONS[p.reason]})"


REASONS = {
    "send-time": "today's send time",
    "catch-up": "today's run has not happened yet",
    "retry": "retrying today's failed run",
    "done-today": "today's run is done",
    "gave-up": f"today's run failed {MAX_ATTEMPTS} times or too late to retry; next day",
}


# Facts from the database ----------------------------------------------------------------------


def plan_from_db(
    db: sqlite_utils.Database,
    settings: Settings,
    now: datetime,
    extra_failures: Sequence[datetime] = (),
) -> Plan:
    zone = settings.tz
    last_ok = runlog.last_ok_send(db)
    midnight = datetime.combine(local_day(now, zone), time()).replace(tzinfo=zone)
    failures = [*runlog.failed_sends_since(db, midnight), *extra_failures]
    failures = sorted(f for f in failures if local_day(f, zone) == local_day(now, zone))
    last_ok_day = local_day(last_ok, zone) if last_ok else None
    return plan(now, zone, settings.send_at, last_ok_day, failures)
