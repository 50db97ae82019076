"""Matching rules, as pure functions.

A keyword is always data. It becomes one FTS5 phrase of its words (letters and digits only, so
no operator, quote or column filter can reach the query), which the porter tokenizer stems like
arXiv's own search. Keywords whose meaning lives in symbols (`C++`, `C#`) also have to appear
literally, so `C++` does not widen to every paper with a lone "C" in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from digest.models import Digest, Entry, Paper, Section, Span, Subscriber

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
    merged: list[list[int]] = []
    for start, end in sorted(span for group in groups for span in group):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


Hit = tuple[tuple[Span, ...], tuple[Span, ...]]
"""Where a keyword matched one paper: (title spans, abstract spans)."""


def plan_digest(
    subscriber: Subscriber,
    hits: Mapping[str, Mapping[str, Hit]],
    papers: Mapping[str, Paper],
    delivered: set[str],
    day: str,
) -> Digest:
    """What a subscriber is owed: each matching, undelivered paper once, under its first keyword.

    `hits` maps a keyword (casefolded) to the papers it matched; `delivered` holds the ids this
    subscriber already received. Within a section the newest papers come first.
    """
    entries: dict[str, Entry] = {}
    for keyword in subscriber.keywords:
        for paper_id, (title_spans, abstract_spans) in hits.get(keyword.casefold(), {}).items():
            if paper_id in delivered or paper_id not in papers:
                continue
            known = entries.get(paper_id)
            if known is None:
                entries[paper_id] = Entry(papers[paper_id], (keyword,), title_spans, abstract_spans)
            else:
                entries[paper_id] = Entry(
                    known.paper,
                    (*known.keywords, keyword),
                    merge_spans(known.title_spans, title_spans),
                    merge_spans(known.abstract_spans, abstract_spans),
                )
    sections = []
    for keyword in subscriber.keywords:
        in_section = [e for e in entries.values() if e.section == keyword]
        if in_section:
            in_section.sort(key=lambda e: (e.paper.published, e.paper.id), reverse=True)
            sections.append(Section(keyword, tuple(in_section)))
    return Digest(subscriber=subscriber, sections=tuple(sections), day=day)
