"""The daemon's decisions as plain functions of (now, zone, send time, last successful day,
today's failures): ordinary days, a start after the send time, retries, and both DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.timetable import (
    MAX_ATTEMPTS,
    RETRY_MAX,
    local_day,
    missed_day,
    plan,
    retry_delay,
    send_time,
)

BERLIN = ZoneInfo("Europe/Berlin")  # 2026: CET->CEST on 29 March, CEST->CET on 25 October
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # half-hour DST: +10:30 <-> +11
KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45, no DST


def at(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_before_the_send_time_it_waits_for_it_in_the_local_zone() -> None:
    now = utc(2026, 11, 22, 0, 0)  # 05:45 in Kathmandu
    p = plan(now, KATHMANDU, "07:00", last_ok_day=date(2026, 11, 21))
    assert (p.reason, p.day) == ("send-time", date(2026, 11, 22))
    assert p.due == utc(2026, 11, 22, 1, 15) and not p.is_due(now)


def test_started_after_the_send_time_without_todays_run_it_runs_now() -> None:
    now = at(BERLIN, 2026, 11, 22, 9, 41)
    for last_ok in (None, date(2026, 11, 21), date(2026, 11, 1)):
        p = plan(now, BERLIN, "07:00", last_ok_day=last_ok)
        assert (p.reason, p.day, p.is_due(now)) == ("catch-up", date(2026, 11, 22), True)


def test_once_todays_run_happened_the_next_is_tomorrow_at_the_send_time() -> None:
    for now in (at(BERLIN, 2026, 11, 22, 7, 0, 1), at(BERLIN, 2026, 11, 22, 23, 59)):
        p = plan(now, BERLIN, "07:00", last_ok_day=date(2026, 11, 22))
        assert (p.reason, p.day) == ("done-today", date(2026, 11, 23))
        assert p.due == at(BERLIN, 2026, 11, 23, 7, 0)


def test_the_day_is_the_local_day_not_utcs() -> None:
    # 23:30 UTC on the 21st is 05:15 on the 22nd in Kathmandu; a run at 20:00 UTC on the 21st
    # (01:45 local) was already the 22nd's run, so nothing more is due until the 23rd.
    now = utc(2026, 11, 21, 23, 30)
    assert local_day(now, KATHMANDU) == date(2026, 11, 22)
    p = plan(now, KATHMANDU, "05:00", last_ok_day=local_day(utc(2026, 11, 21, 20, 0), KATHMANDU))
    assert p.reason == "done-today" and p.day == date(2026, 11, 23)


def test_a_send_time_skipped_by_spring_dst_runs_an_hour_later_that_day() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026 (02:00 CET -> 03:00 CEST).
    assert send_time(date(2026, 3, 29), BERLIN, "02:30") == at(BERLIN, 2026, 3, 29, 3, 30)
    p = plan(at(BERLIN, 2026, 3, 29, 1, 0), BERLIN, "02:30", last_ok_day=date(2026, 3, 28))
    assert p.due == utc(2026, 3, 29, 1, 30) and p.day == date(2026, 3, 29)


def test_a_send_time_repeated_by_autumn_dst_runs_once_at_its_first_occurrence() -> None:
    # 02:30 happens twice in Berlin on 25 October 2026: 00:30 UTC (CEST) and 01:30 UTC (CET).
    first, second = utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)
    assert send_time(date(2026, 10, 25), BERLIN, "02:30") == first
    p = plan(utc(2026, 10, 24, 23, 0), BERLIN, "02:30", last_ok_day=date(2026, 10, 24))
    assert p.due == first
    assert at(BERLIN, 2026, 10, 25, 2, 30).utcoffset() == timedelta(hours=2)  # fold=0: CEST
    after = plan(second, BERLIN, "02:30", last_ok_day=local_day(first, BERLIN))
    assert after.reason == "done-today" and after.due == at(BERLIN, 2026, 10, 26, 2, 30)
    assert local_day(second, BERLIN) == local_day(first, BERLIN)


@pytest.mark.parametrize(
    ("zone", "start", "send_at"),
    [
        (BERLIN, date(2026, 3, 25), "07:00"),
        (BERLIN, date(2026, 3, 25), "02:30"),  # skipped on the change day
        (BERLIN, date(2026, 10, 21), "07:00"),
        (BERLIN, date(2026, 10, 21), "02:30"),  # repeated on the change day
        (LORD_HOWE, date(2026, 4, 1), "01:45"),  # repeated (half-hour fall back on 5 April)
        (LORD_HOWE, date(2026, 10, 1), "02:15"),  # skipped (half-hour spring on 4 October)
    ],
)
def test_a_daemon_following_the_plan_runs_exactly_once_per_local_day_across_dst(
    zone: ZoneInfo, start: date, send_at: str
) -> None:
    """Follow the plan for ten days, waking up only when it says, and also every 10 minutes
    (as the daemon re-reads the database): every local day gets exactly one run, at its send
    time."""
    now = send_time(start, zone, "00:00") + timedelta(minutes=1)
    end = now + timedelta(days=10)
    last_ok: date | None = None
    runs: list[datetime] = []
    while now < end:
        p = plan(now, zone, send_at, last_ok)
        if p.is_due(now):
            runs.append(now)
            last_ok = local_day(now, zone)
        now = min(max(p.due, now + timedelta(seconds=1)), now + timedelta(minutes=10))
    days = [local_day(r, zone) for r in runs]
    assert days == [start + timedelta(days=n) for n in range(10)]
    for run in runs:
        assert run == send_time(local_day(run, zone), zone, send_at)
        wall = run.astimezone(zone).strftime("%H:%M")
        assert wall == send_at or run.astimezone(zone).date() in {
            date(2026, 3, 29),
            date(2026, 10, 4),
        }
    gaps = {r2 - r1 for r1, r2 in itertools.pairwise(runs)}
    assert gaps <= {
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=25),
        timedelta(hours=23, minutes=30),
        timedelta(hours=24, minutes=30),
        timedelta(hours=25),
    }


def test_a_failed_run_is_retried_later_that_day_with_growing_delays() -> None:
    day = date(2026, 11, 22)
    first_failure = at(BERLIN, 2026, 11, 22, 7, 1)
    failures = [first_failure]
    due_times = []
    while True:
        now = failures[-1] + timedelta(seconds=1)
        p = plan(now, BERLIN, "07:00", last_ok_day=date(2026, 11, 21), failures_today=failures)
        if p.reason != "retry":
            break
        assert p.day == day and not p.is_due(now)  # never a tight loop
        due_times.append(p.due)
        failures.append(p.due + timedelta(seconds=20))  # that attempt failed too
    delays = [b - (a + timedelta(seconds=20)) for a, b in itertools.pairwise(due_times)]
    assert due_times[0] - first_failure == timedelta(minutes=5)
    assert delays == sorted(delays) and max(delays) <= RETRY_MAX
    assert len(failures) == MAX_ATTEMPTS
    assert p.reason == "gave-up" and p.due == at(BERLIN, 2026, 11, 23, 7, 0)


def test_a_retry_that_would_fall_on_the_next_day_waits_for_the_next_days_run() -> None:
    failures = [at(BERLIN, 2026, 11, 22, 23, 58)]
    p = plan(failures[0], BERLIN, "07:00", last_ok_day=None, failures_today=failures)
    assert (p.reason, p.due) == ("gave-up", at(BERLIN, 2026, 11, 23, 7, 0))


def test_a_failure_before_the_send_time_does_not_move_the_run_earlier() -> None:
    failed_by_hand = [at(BERLIN, 2026, 11, 22, 6, 0)]
    p = plan(at(BERLIN, 2026, 11, 22, 6, 1), BERLIN, "07:00", None, failed_by_hand)
    assert p.due == at(BERLIN, 2026, 11, 22, 7, 0)


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [retry_delay(n).total_seconds() / 60 for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay(30) == RETRY_MAX


def test_missed_day_is_the_last_due_run_that_did_not_happen() -> None:
    grace = timedelta(hours=1)
    since = at(BERLIN, 2026, 11, 20, 12, 0)
    # 07:30 on the 22nd: today's run is not late yet; yesterday's happened.
    now = at(BERLIN, 2026, 11, 22, 7, 30)
    assert missed_day(now, BERLIN, "07:00", date(2026, 11, 21), since, grace) is None
    # ... and yesterday's did not.
    assert missed_day(now, BERLIN, "07:00", date(2026, 11, 20), since, grace) == date(2026, 11, 21)
    # 08:01: today's is late.
    late = at(BERLIN, 2026, 11, 22, 8, 1)
    assert missed_day(late, BERLIN, "07:00", date(2026, 11, 21), since, grace) == date(2026, 11, 22)
    assert missed_day(late, BERLIN, "07:00", date(2026, 11, 22), since, grace) is None


def test_missed_day_does_not_blame_the_daemon_for_days_before_it_started() -> None:
    grace = timedelta(hours=1)
    # A fresh install started at 06:00 with no run ever: nothing is missed before 08:00 ...
    started = at(BERLIN, 2026, 11, 22, 6, 0)
    assert (
        missed_day(at(BERLIN, 2026, 11, 22, 7, 59), BERLIN, "07:00", None, started, grace) is None
    )
    assert missed_day(
        at(BERLIN, 2026, 11, 22, 8, 0), BERLIN, "07:00", None, started, grace
    ) == date(2026, 11, 22)
    # Started at 10:00 (after the send time): it catches up, so it is late only from 11:00.
    started = at(BERLIN, 2026, 11, 22, 10, 0)
    assert (
        missed_day(at(BERLIN, 2026, 11, 22, 10, 59), BERLIN, "07:00", None, started, grace) is None
    )
    assert missed_day(at(BERLIN, 2026, 11, 22, 11, 0), BERLIN, "07:00", None, started, grace)
