"""Shared fixtures: the papers.json fixture and per-test arXiv / SMTP stand-ins (standins.py)."""

from collections.abc import Iterator

import pytest
from standins import ArxivStandin, Paper, SmtpStandin, load_papers, recent


@pytest.fixture
def papers_fixture() -> list[Paper]:
    """tests/fixtures/papers.json as stored (seed dates only); a fresh copy for every test."""
    return load_papers()


@pytest.fixture
def arxiv(papers_fixture: list[Paper]) -> Iterator[ArxivStandin]:
    """A running arXiv stand-in serving every fixture paper re-dated by ``recent()`` (published
    within the last ~5 days, newest first). Replace ``arxiv.papers`` to serve something else."""
    with ArxivStandin(recent(papers_fixture)) as standin:
        yield standin


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    """A running SMTP stand-in without AUTH, rejections or faults (set them on it as needed)."""
    with SmtpStandin() as standin:
        yield standin
