"""The pure parts of fault handling: arXiv's announcement calendar, retry waits, the send rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.announce import EASTERN, announced_between, last_announcement, new_papers_expected
from digest.config import Settings
from digest.errors import ConfigError
from digest.fetch import parse_retry_after, retry_delay
from digest.smtp import Spacer


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Monday 23 Nov 2026 07:00 UTC = 02:00 EST: Sunday's 20:00 announcement
        (utc(2026, 11, 23, 7), datetime(2026, 11, 22, 20, tzinfo=EASTERN)),
        # Friday 07:00 UTC: Thursday evening's
        (utc(2026, 11, 27, 7), datetime(2026, 11, 26, 20, tzinfo=EASTERN)),
        # Saturday and Sunday mornings: still Thursday's (none on Friday and Saturday)
        (utc(2026, 11, 28, 7), datetime(2026, 11, 26, 20, tzinfo=EASTERN)),
        (utc(2026, 11, 29, 7), datetime(2026, 11, 26, 20, tzinfo=EASTERN)),
        # exactly at 20:00 Eastern counts; a second before does not
        (datetime(2026, 11, 24, 20, tzinfo=EASTERN), datetime(2026, 11, 24, 20, tzinfo=EASTERN)),
        (
            datetime(2026, 11, 24, 19, 59, 59, tzinfo=EASTERN),
            datetime(2026, 11, 23, 20, tzinfo=EASTERN),
        ),
        # summer time: 20:00 EDT is 00:00 UTC
        (utc(2026, 7, 7, 0, 0), datetime(2026, 7, 6, 20, tzinfo=EASTERN)),
    ],
)
def test_last_announcement(now: datetime, expected: datetime) -> None:
    assert last_announcement(now) == expected


def test_new_papers_are_expected_only_when_arxiv_announced_since_the_last_fetch() -> None:
    monday = utc(2026, 11, 23, 7)
    saturday, sunday = utc(2026, 11, 28, 7), utc(2026, 11, 29, 7)
    assert new_papers_expected(monday, None)  # Sunday evening's announcement, hours ago
    assert new_papers_expected(monday, monday - timedelta(days=1))
    assert not new_papers_expected(monday, monday - timedelta(hours=1))  # fetched after it
    assert not new_papers_expected(saturday, None)
    assert not new_papers_expected(sunday, saturday)
    # the machine was off from Wednesday to Saturday: Wednesday's and Thursday's were missed
    assert new_papers_expected(saturday, utc(2026, 11, 25, 7))
    assert announced_between(utc(2026, 11, 27, 0), utc(2026, 11, 27, 2))  # 20:00 EST = 01:00
    assert not announced_between(utc(2026, 11, 27, 2), utc(2026, 11, 29, 23))


def test_retry_waits_double_and_honour_retry_after() -> None:
    assert [retry_delay(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay(1, 2.0, retry_after=30) == 30
    assert retry_delay(3, 2.0, retry_after=1) == 8.0
    assert retry_delay(1, 0.0) == 0.0


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = utc(2026, 11, 22, 12)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 5 ", now) == 5
    assert parse_retry_after("Sun, 22 Nov 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", now) == 0
    for bad in (None, "", "soon", "nan", "-"):
        assert parse_retry_after(bad, now) is None


def test_the_spacer_keeps_sends_apart() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    spacer = Spacer(4.0, clock=lambda: clock[0], sleep=sleep)
    spacer.wait()  # the first goes at once
    clock[0] += 0.05
    spacer.wait()
    clock[0] += 1.0  # long after: no wait
    spacer.wait()
    assert slept == [pytest.approx(0.2)]

    unlimited = Spacer(0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        unlimited.wait()
    assert len(slept) == 1


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DIGEST_ARXIV_RETRIES", "-1", "DIGEST_ARXIV_RETRIES='-1' is not valid: use 0 or a"),
        ("DIGEST_SMTP_RETRIES", "two", "DIGEST_SMTP_RETRIES='two' is not valid: use a whole"),
        ("DIGEST_RETRY_BACKOFF", "-3", "DIGEST_RETRY_BACKOFF='-3' is not valid: use 0 or a"),
        ("DIGEST_SUSPEND_AFTER", "0", "DIGEST_SUSPEND_AFTER='0' is not valid: use a number"),
        ("DIGEST_ARXIV_PAGE_SIZE", "5000", "use a whole number from 1 to 2000"),
        ("DIGEST_SMTP_RATE", "-1", "DIGEST_SMTP_RATE='-1' is not valid: use 0 or a"),
    ],
)
def test_fault_settings_name_the_variable_and_the_fix(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        Settings.from_env({name: value})
    assert says in str(caught.value)


def test_fault_settings_defaults_and_values() -> None:
    default = Settings.from_env({})
    assert (default.arxiv_retries, default.smtp_retries, default.suspend_after) == (3, 3, 3)
    assert (default.retry_backoff, default.arxiv_page_size, default.smtp_rate) == (5.0, 200, 0.0)
    custom = Settings.from_env(
        {"DIGEST_ARXIV_RETRIES": "0", "DIGEST_RETRY_BACKOFF": "0.5", "DIGEST_SMTP_RATE": "2"}
    )
    assert (custom.arxiv_retries, custom.retry_backoff, custom.smtp_rate) == (0, 0.5, 2.0)
