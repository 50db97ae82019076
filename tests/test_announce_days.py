"""An empty fetch is suspicious only on a day arXiv announced: the pipeline run in-process at
chosen dates (the clock is the one thing a subprocess cannot be given), against the real
arXiv and SMTP stand-ins and a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import SENDER
from standins import ArxivStandin, SmtpStandin, load_papers, recent

from digest.config import Settings
from digest.pipeline import run_send

MONDAY_MORNING = datetime(2026, 11, 23, 7, tzinfo=UTC)  # Sunday 20:00 EST was 6 hours ago
SATURDAY_MORNING = datetime(2026, 11, 28, 7, tzinfo=UTC)  # the last was Thursday evening


@pytest.fixture
def settings(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Settings:
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,keywords\nada@example.org,reward model\n", encoding="utf-8")
    return Settings(
        db_path=tmp_path / "digest.db",
        subscribers_path=subscribers,
        arxiv_url=arxiv.url,
        arxiv_delay=0,
        arxiv_timeout=5,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        smtp_timeout=5,
        from_addr=SENDER,
        retry_backoff=0,
    )


def runs(settings: Settings) -> list[tuple[str, str | None]]:
    import sqlite3

    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute("SELECT status, warning FROM runs ORDER BY id").fetchall()


def test_no_new_papers_after_an_announcement_is_a_warning_not_a_failure(
    settings: Settings, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    arxiv.papers = []  # a well-formed answer with no results at all

    report = run_send(settings, now=MONDAY_MORNING)

    assert report.ok and report.sent == 0 and smtp.messages == []
    [warning] = report.warnings
    assert warning.startswith(
        "arXiv returned no new papers although it announced new ones (Sunday 22 November 20:00 "
        "US Eastern)"
    )
    assert runs(settings) == [("ok", warning)]


def test_no_new_papers_on_a_day_without_announcement_is_normal(
    settings: Settings, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    arxiv.papers = []

    report = run_send(settings, now=SATURDAY_MORNING)

    assert report.ok and report.warnings == [] and smtp.messages == []
    assert runs(settings) == [("ok", None)]


def test_only_papers_newer_than_the_last_fetch_count_as_new(
    settings: Settings, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    # Friday's run finds Thursday's announcement; on Monday arXiv answers the same papers again
    # although it announced on Sunday: suspicious. On Saturday the same answer is normal.
    friday = MONDAY_MORNING - timedelta(days=3)
    arxiv.papers = recent(load_papers()[:30], now=friday - timedelta(hours=12))
    first = run_send(settings, now=friday)
    assert first.warnings == [] and first.sent == 1

    saturday = friday + timedelta(days=1)
    assert run_send(settings, now=saturday).warnings == []
    monday = run_send(settings, now=MONDAY_MORNING)
    assert len(monday.warnings) == 1 and monday.ok
    assert len(smtp.messages) == 1
