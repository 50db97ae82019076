"""Trending papers (optional, `DIGEST_TRENDING=huggingface`): once per run, the Hugging Face daily
papers list with upvotes, stored per arXiv id, shown as a "Trending today" section and as upvote
badges on matched papers.

It is a garnish: when the list cannot be had (no answer in time, HTTP 429 after the retries,
something that is not the expected JSON) the run logs one line, records it on the run and sends
the digests without it (or with the list fetched earlier the same day, if there is one).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import requests
import sqlite_utils
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from digest import __version__, store
from digest.config import Settings
from digest.errors import DigestError
from digest.models import Digest, TrendingPaper, split_version

log = logging.getLogger(__name__)

LIMIT = 100  # papers asked for in one request
MAX_RETRY_AFTER = 30.0  # seconds: longest Retry-After we honour before giving up on a retry
BACKOFF = 0.5  # seconds, doubled on each retry
USER_AGENT = f"digest/{__version__} (self-hosted arXiv digest; trending section)"
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})(v\d+)?$", re.IGNORECASE)


class TrendingError(DigestError):
    """The trending list could not be fetched or read (never stops a run)."""


@dataclass(frozen=True)
class Board:
    """One day's trending papers, most upvoted first."""

    papers: tuple[TrendingPaper, ...] = ()

    def top(self, n: int) -> tuple[TrendingPaper, ...]:
        return self.papers[:n]

    @property
    def upvotes(self) -> dict[str, int]:
        return {paper.id: paper.upvotes for paper in self.papers}


class _Retry(Retry):
    """urllib3's retries, with a server's Retry-After capped so one run cannot stall for hours."""

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, MAX_RETRY_AFTER)


# Pure parts ------------------------------------------------------------------------------------


def parse(payload: object) -> list[TrendingPaper]:
    """The API's JSON (a list of objects with a `paper` object) as papers, most upvoted first.

    Every field is optional: an entry without a usable arXiv id is skipped, missing or odd
    upvotes count as 0, a missing title falls back to the outer title, then to the id.
    """
    if not isinstance(payload, list):
        raise TrendingError("the answer is not a JSON list of papers")
    found: dict[str, TrendingPaper] = {}
    for item in payload:
        if not isinstance(item, Mapping):
            continue
        paper = item.get("paper") if isinstance(item.get("paper"), Mapping) else {}
        raw_id = paper.get("id") or item.get("id")
        if not isinstance(raw_id, str) or not _ARXIV_ID.match(raw_id.strip()):
            continue
        arxiv_id = split_version(raw_id)[0]
        upvotes = paper.get("upvotes", item.get("upvotes"))
        if isinstance(upvotes, bool) or not isinstance(upvotes, int) or upvotes < 0:
            upvotes = 0
        title = paper.get("title") or item.get("title") or arxiv_id
        title = " ".join(str(title).split())
        known = found.get(arxiv_id)
        if known is None or upvotes > known.upvotes:
            found[arxiv_id] = TrendingPaper(arxiv_id, title, upvotes)
    return sorted(found.values(), key=lambda p: (-p.upvotes, p.id))


def decorate(digest: Digest, board: Board, top: int) -> Digest:
    """`digest` with upvote badges for its trending papers and, unless the subscriber opted
    out, the top `top` papers of the day."""
    if not board.papers:
        return digest
    upvotes = board.upvotes
    badges = {pid: upvotes[pid] for pid in digest.paper_ids if upvotes.get(pid)}
    section = board.top(top) if digest.subscriber.trending else ()
    return replace(digest, trending=section, upvotes=badges)


# Edges -----------------------------------------------------------------------------------------


def fetch(url: str, *, timeout: float, retries: int) -> list[TrendingPaper]:
    """One GET of the daily papers list (with retries on timeouts, 429 and 5xx)."""
    retry = _Retry(
        total=retries,
        backoff_factor=BACKOFF,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    attempts = f"{retries + 1} attempt{'s' if retries else ''}"
    # urllib3 logs a warning per retry; the run logs one line for the whole outcome instead.
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            response = session.get(
                url,
                params={"limit": LIMIT},
                timeout=timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
            raise TrendingError(f"{url}: no answer within {timeout:g} s ({attempts})") from None
        raise TrendingError(f"{url}: could not connect ({attempts})") from None
    finally:
        pool_log.setLevel(level)
    if response.status_code != 200:
        raise TrendingError(
            f"{url} answered HTTP {response.status_code} {response.reason} ({attempts})"
        )
    try:
        payload = response.json()
    except ValueError:
        raise TrendingError(f"{url} answered something that is not JSON") from None
    try:
        return parse(payload)
    except TrendingError as exc:
        raise TrendingError(f"{url}: {exc}") from None


def refresh(db: sqlite_utils.Database, settings: Settings, day: str, run_id: int) -> Board:
    """Once per run: fetch, store and return the day's board; on failure log one line, record
    it on the run and go on with what is stored for the day (usually nothing)."""
    if settings.trending is None:
        return Board()
    try:
        papers = fetch(
            settings.trending_url,
            timeout=settings.trending_timeout,
            retries=settings.trending_retries,
        )
    except TrendingError as exc:
        log.warning("trending papers left out of this run: %s", exc)
        store.record_trending(db, run_id, f"failed: {exc}")
        return Board(store.trending_papers(db, day))
    store.save_trending(db, day, papers)
    store.record_trending(db, run_id, f"{len(papers)} papers")
    return Board(store.trending_papers(db, day))


def load(db: sqlite_utils.Database, day: str) -> Board:
    """The board stored for `day` (empty when none was fetched)."""
    return Board(store.trending_papers(db, day))
