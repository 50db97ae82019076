"""Fetch: one search of arXiv for the union of every subscriber's keywords.

The real `arxiv` client does the paging and parsing. Its HTTP session is ours, so that every
request has a timeout and our User-Agent, and every answer is checked before the client sees it:
the client takes an error page or an empty first page for "no results", and we must not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import arxiv
import requests
from lxml import etree

from digest import __version__
from digest.errors import FetchError
from digest.match import keyword_terms
from digest.models import Paper, split_version

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted arXiv email digest; arxiv.py {arxiv.__version__})"
PAGE_SIZE = 200
MAX_RESULTS = 10_000  # per query: a runaway result set must end (the API stops at 30,000)
MAX_QUERY_CHARS = 1500  # keeps each request URL far below what servers accept
_ATOM = "{http://www.w3.org/2005/Atom}"
_OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class FetchResult:
    papers: list[Paper]
    requests: int
    queries: int


def build_queries(keywords: Iterable[str], max_chars: int = MAX_QUERY_CHARS) -> list[str]:
    """arXiv search queries covering every keyword, as few as fit in `max_chars` each.

    Each keyword is searched as a quoted phrase of its plain words in title and abstract, so a
    keyword can never become query syntax (no quotes, fields, operators or parentheses pass).
    """
    clauses: list[str] = []
    seen: set[str] = set()
    for keyword in keywords:
        phrase = " ".join(keyword_terms(keyword))
        if phrase and phrase not in seen:
            seen.add(phrase)
            clauses.append(f'ti:"{phrase}" OR abs:"{phrase}"')
    queries: list[str] = []
    current: list[str] = []
    for clause in clauses:
        if current and len(" OR ".join([*current, clause])) > max_chars:
            queries.append(" OR ".join(current))
            current = []
        current.append(clause)
    if current:
        queries.append(" OR ".join(current))
    return queries


class ArxivSession(requests.Session):
    """A requests session with a timeout, our User-Agent and a check of every answer."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.count = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "user-agent": USER_AGENT}
        self.count += 1
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.Timeout:
            raise FetchError(f"arXiv did not answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise FetchError(f"cannot reach arXiv at {_origin(str(url))}: {exc}") from None
        if response.status_code == 200:
            check_page(response.content)
        return response


def check_page(content: bytes) -> None:
    """Raise FetchError unless `content` is a real page of arXiv results (possibly empty)."""
    try:
        root = etree.fromstring(content, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise FetchError(f"arXiv answered something that is not an Atom feed ({exc})") from None
    if root is None or root.tag != f"{_ATOM}feed":
        raise FetchError("arXiv answered something that is not an Atom feed")
    entries = root.findall(f"{_ATOM}entry")
    for entry in entries:
        if (entry.findtext(f"{_ATOM}title") or "").strip() == "Error":
            summary = " ".join((entry.findtext(f"{_ATOM}summary") or "").split())
            raise FetchError(f"arXiv rejected the query: {summary or 'no reason given'}")
    total = _int(root.findtext(f"{_OPENSEARCH}totalResults"))
    start = _int(root.findtext(f"{_OPENSEARCH}startIndex"))
    if not entries and total is not None and start is not None and start < total:
        raise FetchError(
            f"arXiv answered an empty page at result {start} of {total}; "
            f"that is an arXiv glitch, not 'no new papers'"
        )


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _origin(url: str) -> str:
    match = re.match(r"^[a-z]+://[^/?#]+", url)
    return match[0] if match else url


def to_paper(result: arxiv.Result) -> Paper:
    """An arXiv result as a Paper keyed by its id without version; text tidied of line breaks."""
    paper_id, version = split_version(result.get_short_id())
    return Paper(
        id=paper_id,
        version=version,
        title=" ".join(result.title.split()),
        authors=tuple(" ".join(author.name.split()) for author in result.authors),
        abstract=" ".join(result.summary.split()),
        comment=" ".join((result.comment or "").split()),
        categories=tuple(result.categories),
        primary_category=result.primary_category,
        published=result.published,
        updated=result.updated,
        abs_url=f"https://arxiv.org/abs/{paper_id}",
        pdf_url=f"https://arxiv.org/pdf/{paper_id}",
    )


def fetch(
    keywords: Iterable[str], *, url: str, since: datetime, delay: float, timeout: float
) -> FetchResult:
    """Every paper matching any keyword whose first version is at or after `since`.

    Newest first, one query per chunk of keywords; paging stops at the first older paper.
    Raises FetchError on any failure: a partial fetch must never look like a complete one.
    """
    session = ArxivSession(timeout)
    client = arxiv.Client(page_size=PAGE_SIZE, delay_seconds=delay, num_retries=0)
    client.query_url_format = url + "?{}"
    client._session = session  # the documented knobs have no timeout or User-Agent
    queries = build_queries(keywords)
    papers: dict[str, Paper] = {}
    for query in queries:
        search = arxiv.Search(
            query=query,
            max_results=MAX_RESULTS,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        try:
            for result in client.results(search):
                if result.published < since:
                    break
                paper = to_paper(result)
                known = papers.get(paper.id)
                if known is None or known.version < paper.version:
                    papers[paper.id] = paper
        except arxiv.HTTPError as exc:
            raise FetchError(f"arXiv answered HTTP {exc.status} to {_origin(exc.url)}") from None
        except arxiv.UnexpectedEmptyPageError:
            raise FetchError("arXiv answered an empty page in the middle of the results") from None
    log.info("fetched %d papers from arXiv in %d requests", len(papers), session.count)
    return FetchResult(papers=list(papers.values()), requests=session.count, queries=len(queries))


def lookback_start(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
