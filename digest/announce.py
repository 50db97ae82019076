"""arXiv's announcement calendar, as pure functions.

arXiv announces new papers Sunday to Thursday at 20:00 US Eastern time, none on Friday and
Saturday. Holidays shift announcements; they are not modelled here, so an empty fetch after a
holiday is only ever reported as suspicious, never treated as a failure.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")
ANNOUNCE_AT = time(20, 0)
ANNOUNCE_WEEKDAYS = frozenset({6, 0, 1, 2, 3})  # Sunday .. Thursday (Monday is 0)


def last_announcement(now: datetime) -> datetime:
    """The latest arXiv announcement at or before `now` (an aware datetime), in US Eastern."""
    local = now.astimezone(EASTERN)
    day = local.date()
    for back in range(8):
        candidate_day = day - timedelta(days=back)
        if candidate_day.weekday() not in ANNOUNCE_WEEKDAYS:
            continue
        candidate = datetime.combine(candidate_day, ANNOUNCE_AT, tzinfo=EASTERN)
        if candidate <= local:
            return candidate
    raise AssertionError("an announcement happens every week")  # pragma: no cover


def announced_between(start: datetime, end: datetime) -> bool:
    """Whether arXiv announced new papers after `start` and at or before `end`."""
    return last_announcement(end) > start


def new_papers_expected(now: datetime, last_fetch: datetime | None) -> bool:
    """Whether a fetch at `now` should find papers newer than the last successful fetch (or,
    without one, newer than a day ago): true when arXiv announced in between."""
    since = last_fetch if last_fetch is not None else now - timedelta(days=1)
    return announced_between(since, now)
