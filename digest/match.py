"""Matching rules, as pure functions.

A keyword is always data. It becomes one FTS5 phrase of its words (letters and digits only, so
no operator, quote or column filter can reach the query), which the porter tokenizer stems like
arXiv's own search. Keywords whose meaning lives in symbols (`C++`, `C#`) also have to appear
literally, so `C++` does not widen to every paper with a lone "C" in it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, tzinfo
from itertools import chain

from digest.models import AUTHORS_SECTION, Digest, Entry, Paper, Section, Span, Subscriber

HIGHLIGHT_START = "\x02"
HIGHLIGHT_END = "\x03"

# Tokens as FTS5's unicode61 tokenizer sees them: runs of letters and digits.
_TERM = re.compile(r"[^\W_]+")
# Characters that carry meaning the tokenizer would drop: the keyword must then occur literally.
_SIGNIFICANT_SYMBOL = re.compile(r"[^\w\s\-'\u2019.,/:;()\"]")


def keyword_terms(keyword: str) -> list[str]:
    return _TERM.findall(keyword.lower())


def fts_phrase(keyword: str) -> str | None:
    """The FTS5 query for a keyword: one quoted phrase of its words, or None if it has none."""
    terms = keyword_terms(keyword)
    return '"' + " ".join(terms) + '"' if terms else None


def author_terms(name: str) -> list[str]:
    """A person's name as plain lowercase words without accents: 'Kartašev, M.' -> kartasev, m."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _TERM.findall(plain.casefold())


def author_key(name: str) -> str:
    """What two spellings of a name must share to be the same author: its plain words."""
    return " ".join(author_terms(name))


def in_categories(paper: Paper, categories: Iterable[str]) -> bool:
    """Whether any of the paper's categories is one of `categories` (`cs.*`: any of cs)."""
    wanted = [c.casefold() for c in categories]
    for category in (c.casefold() for c in paper.categories):
        for want in wanted:
            if want.endswith(".*") and category.startswith(want[:-1]):
                return True
            if category == want or category.partition(".")[0] == want:
                return True
    return False


def needs_literal(keyword: str) -> bool:
    return bool(_SIGNIFICANT_SYMBOL.search(keyword))


def literal_pattern(keyword: str) -> re.Pattern[str]:
    """The keyword as written, case-insensitive, not glued to a word before or after it."""
    return re.compile(r"(?<!\w)" + re.escape(keyword.strip()) + r"(?!\w)", re.IGNORECASE)


def literal_spans(pattern: re.Pattern[str], text: str) -> tuple[Span, ...]:
    return tuple(m.span() for m in pattern.finditer(text))


def spans_from_highlight(marked: str) -> tuple[Span, ...]:
    """Spans of the text between highlight markers, in the coordinates of the unmarked text."""
    spans: list[Span] = []
    offset = 0
    start = None
    for i, char in enumerate(marked):
        if char == HIGHLIGHT_START:
            start = i - offset
            offset += 1
        elif char == HIGHLIGHT_END:
            offset += 1
            if start is not None:
                spans.append((start, i - offset + 1))
                start = None
    return tuple(spans)


def merge_spans(*groups: Iterable[Span]) -> tuple[Span, ...]:
    """One sorted list of non-overlapping spans covering all of `groups`."""
    spans = sorted(chain.from_iterable(groups))
    if not spans:
        return ()
    merged = []
    start, end = spans[0]
    for next_start, next_end in spans:
        if next_start <= end:
            if next_end > end:
                end = next_end
        else:
            merged.append((start, end))
            start, end = next_start, next_end
    merged.append((start, end))
    return tuple(merged)


Hit = tuple[tuple[Span, ...], tuple[Span, ...]]
"""Where a keyword matched one paper: (title spans, abstract spans)."""


def literal_filter(
    keywords: Iterable[str], hits: dict[str, dict[str, Hit]], papers: Mapping[str, Paper]
) -> None:
    """Keep, of the FTS hits of keywords whose meaning is in symbols (C++), only the papers
    where the keyword also appears literally, with those spans (in place)."""
    for keyword in keywords:
        if needs_literal(keyword):
            pattern = literal_pattern(keyword)
            found = {}
            for pid in hits[keyword.casefold()]:
                title_spans = literal_spans(pattern, papers[pid].title)
                abstract_spans = literal_spans(pattern, papers[pid].abstract)
                if title_spans or abstract_spans:
                    found[pid] = (title_spans, abstract_spans)
            hits[keyword.casefold()] = found


def distinct_keywords(people: Iterable[Subscriber], extra: Iterable[str] = ()) -> list[str]:
    """Every keyword any subscriber follows (then `extra`), once case-insensitively, in order."""
    seen: dict[str, str] = {}
    for person in people:
        for keyword in person.keywords:
            seen.setdefault(keyword.casefold(), keyword)
    for keyword in extra:
        seen.setdefault(keyword.casefold(), keyword)
    return list(seen.values())


def plan_digest(
    subscriber: Subscriber,
    hits: Mapping[str, Mapping[str, Hit]],
    papers: Mapping[str, Paper],
    delivered: set[str],
    day: str,
    *,
    by_author: Mapping[str, Iterable[str]] | None = None,
    since: datetime | None = None,
    memo: dict[tuple[object, ...], Entry] | None = None,
) -> Digest:
    """What a subscriber is owed: each matching, undelivered paper once, under its first keyword.

    `hits` maps a keyword or exclude phrase (casefolded) to the papers it matched; `delivered`
    holds the ids this subscriber already received; `by_author` maps an `author_key` to the
    papers that author wrote; `since` drops papers first published before it. A keyword match
    must be in one of the subscriber's categories (if they chose any) and must not match one
    of their exclude phrases; a paper by a followed author is included whatever the keywords,
    categories and exclude phrases, and marked with the author. Within a section the newest
    papers come first; papers found only through an author come last, in their own section.
    `memo` (one per run, for the same `hits`) shares the entries subscribers have in common.
    """
    excluded = {pid for phrase in subscriber.exclude for pid in hits.get(phrase.casefold(), {})}
    categories = subscriber.categories
    # This runs once per subscriber per run: plain loops and dict look-ups.
    matched: dict[str, list[str]] = {}  # paper id -> the keywords it matched, in their order
    for keyword in subscriber.keywords:
        found = hits.get(keyword.casefold())
        if not found:
            continue
        for paper_id in found:
            known = matched.get(paper_id)
            if known is not None:
                known.append(keyword)
                continue
            if paper_id in excluded or paper_id in delivered:
                continue
            paper = papers.get(paper_id)
            if paper is None or (since is not None and paper.published < since):
                continue
            if categories and not in_categories(paper, categories):
                continue
            matched[paper_id] = [keyword]
    written: dict[str, list[str]] = {}  # paper id -> the followed authors who wrote it
    for author in subscriber.authors:
        for paper_id in (by_author or {}).get(author_key(author), ()):
            if paper_id in delivered or paper_id not in papers:
                continue
            if since is not None and papers[paper_id].published < since:
                continue
            names = written.setdefault(paper_id, [])
            if author not in names:
                names.append(author)
    by_heading: dict[str, list[Entry]] = {}
    for paper_id in (*matched, *(pid for pid in written if pid not in matched)):
        keywords = tuple(matched.get(paper_id, ()))
        authors = tuple(written.get(paper_id, ()))
        key = (paper_id, keywords, authors)
        entry = memo.get(key) if memo is not None else None
        if entry is None:
            entry = _entry(papers[paper_id], keywords, authors, hits)
            if memo is not None:
                memo[key] = entry
        heading = keywords[0] if keywords else AUTHORS_SECTION
        by_heading.setdefault(heading, []).append(entry)
    sections = []
    for heading in (*subscriber.keywords, AUTHORS_SECTION):
        in_section = by_heading.get(heading)
        if in_section:
            in_section.sort(key=_newest_first, reverse=True)
            sections.append(Section(heading, tuple(in_section)))
    return Digest(subscriber=subscriber, sections=tuple(sections), day=day)


def _entry(
    paper: Paper,
    keywords: tuple[str, ...],
    authors: tuple[str, ...],
    hits: Mapping[str, Mapping[str, Hit]],
) -> Entry:
    """A paper as tagged with these keywords and authors, every keyword's matches highlighted."""
    found = [hits[k.casefold()][paper.id] for k in keywords]
    if len(found) == 1:
        title_spans, abstract_spans = found[0]
    else:
        title_spans = merge_spans(*(t for t, _ in found))
        abstract_spans = merge_spans(*(a for _, a in found))
    return Entry(paper, keywords, title_spans, abstract_spans, authors)


def _newest_first(entry: Entry) -> tuple[datetime, str]:
    return entry.paper.published, entry.paper.id


WEEK = timedelta(days=7)
MAX_CATCH_UP = timedelta(days=35)
"""How far past the look-back a weekly subscriber's window may reach (see `owed_since`)."""


def is_due(subscriber: Subscriber, now: datetime, tz: tzinfo) -> bool:
    """Daily subscribers are due every run; weekly ones on their weekday, in `tz`."""
    return subscriber.weekday is None or now.astimezone(tz).weekday() == subscriber.weekday


def owed_since(
    subscriber: Subscriber, now: datetime, lookback_days: int, last_sent: datetime | None
) -> datetime:
    """The earliest first-publication date of a paper still new for this subscriber.

    Daily: `lookback_days` before now. Weekly: everything owed since the last email, with the
    same look-back as slack for papers that arXiv announces days after their submission date:
    `lookback_days` before the last email, at least a week more than daily subscribers get
    (a first email reaches back lookback + 7 days), and at most `MAX_CATCH_UP` more (after
    weeks without an email, the oldest papers are no longer news).
    """
    lookback = timedelta(days=lookback_days)
    if subscriber.weekday is None:
        return now - lookback
    since = now - lookback - WEEK
    if last_sent is not None:
        since = min(since, last_sent - lookback)
    return max(since, now - lookback - MAX_CATCH_UP)
