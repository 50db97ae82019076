"""Shared fixtures: the papers.json fixture, per-test arXiv / SMTP stand-ins (standins.py) and a
`digest` installation using them (helpers.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ADA_ROW, GRACE_ROW, Digest
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


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    """An installation in ``tmp_path`` with two subscribers: Ada ("reward model") and Grace
    ("graph neural network; reward model"). Test modules with other needs define their own."""
    installation = Digest(tmp_path, arxiv, smtp, {})
    installation.write_subscribers([ADA_ROW, GRACE_ROW])
    return installation
