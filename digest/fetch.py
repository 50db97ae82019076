"""Fetch: one search of arXiv for the union of every subscriber's keywords.

The real `arxiv` client does the paging and parsing. Its HTTP session is ours, so that every
request has a timeout and our User-Agent, and every answer is checked before the client sees it:
the client takes an error page or an empty first page for "no results", and we must not.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import arxiv
import requests
from lxml import etree

from digest import __version__
from digest.errors import FetchError
from digest.match import author_key, keyword_terms
from digest.models import Paper, split_version
from digest.subscribers import ARXIV_ID

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted arXiv email digest; arxiv.py {arxiv.__version__})"
PAGE_SIZE = 200
MAX_RESULTS = 10_000  # per query: a runaway result set must end (the API stops at 30,000)
MAX_QUERY_CHARS = 1500  # keeps each request URL far below what servers accept
CATEGORY = re.compile(r"^[a-z-]+(\.[A-Za-z-]+)?$")  # no wildcard, no query syntax
_ATOM = "{http://www.w3.org/2005/Atom}"
_OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class FetchResult:
    papers: list[Paper]
    requests: int
    queries: int


def build_queries(
    keywords: Iterable[str],
    max_chars: int = MAX_QUERY_CHARS,
    authors: Iterable[str] = (),
    categories: Iterable[str] = (),
) -> list[str]:
    """arXiv search queries covering every keyword, author and category, as few as fit in
    `max_chars` each.

    Each keyword is searched as a quoted phrase of its plain words in title and abstract, each
    author as a quoted name of plain words (no accents) in the author field, so neither can
    ever become query syntax (no quotes, fields, operators or parentheses pass). Categories and
    exclude phrases need nothing from arXiv: they only narrow what the keywords found.
    `categories` (those of readers' liked papers, for recommendations) are `cat:` clauses;
    one that is not a plain arXiv category (`cs.CL`, `hep-th`) is left out.
    """
    clauses: list[str] = []
    seen: set[str] = set()
    for keyword in keywords:
        phrase = " ".join(keyword_terms(keyword))
        if phrase and phrase not in seen:
            seen.add(phrase)
            clauses.append(f'ti:"{phrase}" OR abs:"{phrase}"')
    for author in authors:
        name = author_key(author)
        if name and f"au:{name}" not in seen:
            seen.add(f"au:{name}")
            clauses.append(f'au:"{name}"')
    for category in categories:
        if CATEGORY.match(category) and f"cat:{category}" not in seen:
            seen.add(f"cat:{category}")
            clauses.append(f"cat:{category}")
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
            raise TransientFetchError(f"arXiv did not answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise TransientFetchError(f"cannot reach arXiv at {_origin(str(url))}: {exc}") from None
        if response.status_code == 200:
            check_page(response.content)
        elif response.status_code == 429 or response.status_code >= 500:
            raise TransientFetchError(
                f"arXiv answered HTTP {response.status_code} to {_origin(str(url))}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        elif response.status_code == 400:
            check_page(response.content)  # arXiv's error feed says what it rejected
            raise FetchError(f"arXiv answered HTTP 400 to {_origin(str(url))}")
        return response


class TransientFetchError(FetchError):
    """A failure worth retrying (busy, unreachable, slow, glitched); `retry_after` is the wait
    arXiv asked for, in seconds, when it asked."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


MAX_RETRY_AFTER = 300.0  # seconds: a longer wait asked by arXiv fails the fetch instead


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent/bad."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): `backoff` doubled each time,
    or longer when the server asked for longer with Retry-After."""
    delay = backoff * 2 ** (attempt - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def check_page(content: bytes) -> None:
    """Raise FetchError unless `content` is a real page of arXiv results (possibly empty)."""
    try:
        root = etree.fromstring(content, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise TransientFetchError(
            f"arXiv answered something that is not an Atom feed ({exc})"
        ) from None
    if root is None or root.tag != f"{_ATOM}feed":
        raise TransientFetchError("arXiv answered something that is not an Atom feed")
    entries = root.findall(f"{_ATOM}entry")
    for entry in entries:
        if (entry.findtext(f"{_ATOM}title") or "").strip() == "Error":
            summary = " ".join((entry.findtext(f"{_ATOM}summary") or "").split())
            raise FetchError(f"arXiv rejected the query: {summary or 'no reason given'}")
    total = _int(root.findtext(f"{_OPENSEARCH}totalResults"))
    start = _int(root.findtext(f"{_OPENSEARCH}startIndex"))
    # A later page (start > 0) is only asked for when the first announced more results, and a
    # first page claiming results must carry them: either way an empty page is a glitch.
    if not entries and ((start or 0) > 0 or (total or 0) > 0):
        of_total = f" of {total}" if total is not None and (start or 0) < total else ""
        raise TransientFetchError(
            f"arXiv answered an empty page at result {start or 0}{of_total}; "
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
    keywords: Iterable[str],
    *,
    url: str,
    since: datetime,
    delay: float,
    timeout: float,
    retries: int = 0,
    backoff: float = 0.0,
    page_size: int = PAGE_SIZE,
    sleep: Callable[[float], None] = time.sleep,
    authors: Iterable[str] = (),
    categories: Iterable[str] = (),
) -> FetchResult:
    """Every paper matching any keyword, or by any author, or in any of `categories` (the
    newest papers of the categories readers' liked papers are in), first published at or after
    `since`.

    Newest first, one query per chunk of keywords; paging stops at the first older paper.
    A busy, slow or glitching arXiv is asked again up to `retries` times, waiting `backoff`
    seconds (doubling) or what its Retry-After says; paging resumes where it failed.
    Raises FetchError when that is not enough: a partial fetch must never look complete.
    """
    session = ArxivSession(timeout)
    client = _client(url, delay, page_size, session)
    queries = build_queries(keywords, authors=authors, categories=categories)
    papers: dict[str, Paper] = {}
    for query in queries:
        search = arxiv.Search(
            query=query,
            max_results=MAX_RESULTS,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        _collect(client, search, papers, since, retries, backoff, sleep)
    log.info("fetched %d papers from arXiv in %d requests", len(papers), session.count)
    return FetchResult(papers=list(papers.values()), requests=session.count, queries=len(queries))


def _client(url: str, delay: float, page_size: int, session: ArxivSession) -> arxiv.Client:
    client = arxiv.Client(page_size=page_size, delay_seconds=delay, num_retries=0)
    client.query_url_format = url + "?{}"
    client._session = session  # the documented knobs have no timeout or User-Agent
    return client


def _collect(
    client: arxiv.Client,
    search: arxiv.Search,
    papers: dict[str, Paper],
    since: datetime | None,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> None:
    """Page through one search into `papers` (newest version wins), stopping at the first
    paper older than `since` (None: take all); asks again on transient failures."""
    offset, attempt = 0, 0
    while True:
        try:
            for result in client.results(search, offset=offset):
                offset += 1
                if since is not None and result.published < since:
                    break
                paper = to_paper(result)
                known = papers.get(paper.id)
                if known is None or known.version < paper.version:
                    papers[paper.id] = paper
            return
        except (TransientFetchError, arxiv.UnexpectedEmptyPageError) as exc:
            if isinstance(exc, arxiv.UnexpectedEmptyPageError):
                exc = TransientFetchError(
                    f"arXiv answered an empty page at result {offset}; "
                    f"that is an arXiv glitch, not 'no new papers'"
                )
            attempt += 1
            wait = retry_delay(attempt, backoff, exc.retry_after)
            if wait > MAX_RETRY_AFTER:
                raise FetchError(
                    f"{exc}; it asks to wait {wait:g} s, longer than a run waits "
                    f"({MAX_RETRY_AFTER:g} s)"
                ) from None
            if attempt > retries:
                tries = f"{attempt} tries" if attempt > 1 else "1 try"
                raise FetchError(f"{exc} (gave up after {tries})") from None
            asked = " as asked by Retry-After" if exc.retry_after is not None else ""
            log.warning(
                "%s; asking again in %g s%s (retry %d of %d)", exc, wait, asked, attempt, retries
            )
            sleep(wait)
        except arxiv.HTTPError as exc:  # another status (403, 404...): asking again won't help
            status, origin = exc.status, _origin(exc.url)
            raise FetchError(f"arXiv answered HTTP {status} to {origin}") from None


ID_BATCH = 100  # ids per id_list request


def fetch_ids(
    ids: Iterable[str],
    *,
    url: str,
    delay: float,
    timeout: float,
    retries: int = 0,
    backoff: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """The papers with these arXiv ids (e.g. every reader's liked papers the database does
    not know), ID_BATCH ids per request whoever liked them. Ids that arXiv does not know are
    simply not in the result; an id that is not an arXiv id is never sent."""
    wanted = sorted({i for i in ids if ARXIV_ID.match(i)})
    session = ArxivSession(timeout)
    client = _client(url, delay, ID_BATCH, session)
    papers: dict[str, Paper] = {}
    batches = [wanted[n : n + ID_BATCH] for n in range(0, len(wanted), ID_BATCH)]
    for batch in batches:
        search = arxiv.Search(id_list=batch, max_results=len(batch))
        _collect(client, search, papers, None, retries, backoff, sleep)
    log.info("fetched %d liked papers from arXiv in %d requests", len(papers), session.count)
    return FetchResult(papers=list(papers.values()), requests=session.count, queries=len(batches))


def lookback_start(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
