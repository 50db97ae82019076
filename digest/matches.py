"""Planning many subscribers from one run's matches: `plan_digest`'s rule, fast.

`match.plan_digest` is the rule as written, for one subscriber. A run plans thousands from the
same matches, so `Matches` works out once what they have in common (each keyword's papers
newest first, the entries readers share) and plans each subscriber from that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime

from digest.match import Hit, author_key, merge_spans, plan_digest
from digest.models import Digest, Entry, Paper, Section, Span, Subscriber

SPANS_KEPT = 200_000  # merged highlights kept (then forgotten and merged again)

Row = tuple[str, int, Entry]
"""A paper of one keyword, newest first: its id, the phrases that matched it (bits of
`Matches._bits`) and its entry when that keyword is the only one that tags it."""


class Matches:
    """One run's matches (`hits`, `papers`, `by_author`, as `plan_digest` takes them), planned
    for many subscribers. `plan` gives exactly what `plan_digest` gives; the common case
    (keywords only) from what is worked out once per run, not again per subscriber:

    - each phrase of `hits` is a bit, each paper the bits of the phrases that matched it, so
      whether an earlier keyword of a reader took a paper, and which later keywords also tag
      it, is one `&` each (most papers are tagged with their section's keyword alone);
    - each keyword's papers newest first, with their bits and their entry tagged with that
      keyword alone;
    - every entry made once (`memo`, which `plan_digest` shares for the readers it plans), so
      readers share the same `Entry` for the same (paper, tags, authors): building finds each
      reader's version of a block by the entry itself.
    """

    def __init__(
        self,
        hits: Mapping[str, Mapping[str, Hit]],
        papers: Mapping[str, Paper],
        by_author: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.hits, self.papers, self.by_author = hits, papers, by_author or {}
        self.memo: dict[tuple[object, ...], Entry] = {}
        self._rows: dict[str, list[Row]] = {}  # keyword as written -> its papers newest first
        self._tagged: dict[tuple[str, ...], dict[str, Entry]] = {}  # tags -> memo's entries
        self._oldest_first: dict[str, tuple[list[str], list[datetime]]] = {}
        self._spans: dict[tuple[str, int], tuple[tuple[Span, ...], ...]] = {}
        self._bits = {phrase: 1 << n for n, phrase in enumerate(hits)}
        self._member: dict[str, int] = {}  # paper id -> the phrases that matched it (bits)
        for phrase, found in hits.items():
            for paper_id in found:
                self._member[paper_id] = self._member.get(paper_id, 0) | self._bits[phrase]

    def plan(
        self,
        subscriber: Subscriber,
        delivered: set[str],
        day: str,
        since: datetime | None = None,
    ) -> Digest:
        """`plan_digest(subscriber, hits, papers, delivered, day, ...)` for this run."""
        keywords = subscriber.keywords
        folded = [k.casefold() for k in keywords]
        if (
            subscriber.exclude
            or subscriber.categories
            or len(set(folded)) != len(folded)
            or any(author_key(a) in self.by_author for a in subscriber.authors)
        ):
            return plan_digest(
                subscriber,
                self.hits,
                self.papers,
                delivered,
                day,
                by_author=self.by_author,
                since=since,
                memo=self.memo,
            )
        bits = [self._bits.get(keyword, 0) for keyword in folded]
        later = [0] * len(bits)  # per keyword: the reader's keywords after it (bits)
        for n in range(len(bits) - 1, 0, -1):
            later[n - 1] = later[n] | bits[n]
        named = list(zip(bits, keywords, strict=True))
        sections = []
        earlier = 0  # the reader's keywords before this one: they took their papers
        for n, heading in enumerate(keywords):
            rows = self._newest(heading, since)
            if delivered:
                rows = [row for row in rows if row[0] not in delivered]
            after = later[n]
            tagsets: dict[int, tuple[tuple[str, ...], dict[str, Entry]]] = {}  # by later bits
            entries: list[Entry] = []
            add = entries.append
            for paper_id, mask, entry in rows:
                if mask & earlier:
                    continue
                also = mask & after
                if also:  # later keywords tag it too (the common case: the heading alone)
                    known = tagsets.get(also)
                    if known is None:
                        known = tagsets[also] = self._tags(heading, named[n + 1 :], also)
                    tags, shared = known
                    entry = shared.get(paper_id)
                    if entry is None:
                        entry = shared[paper_id] = self._shared(paper_id, tags, also | bits[n])
                add(entry)
            if entries:
                sections.append(Section(heading, tuple(entries)))
            earlier |= bits[n]
        return Digest(subscriber=subscriber, sections=tuple(sections), day=day)

    def forget(self) -> None:
        """Let go of the entries made so far (they are made again when needed)."""
        self.memo, self._rows, self._tagged = {}, {}, {}

    def _tags(
        self, heading: str, later: list[tuple[int, str]], also: int
    ) -> tuple[tuple[str, ...], dict[str, Entry]]:
        """The tags of a paper in the section of `heading` that the reader's keywords `later`
        (their bits and as written) of `also` match too, and the entries so tagged."""
        tags = (heading, *[keyword for bit, keyword in later if also & bit])
        shared = self._tagged.get(tags)
        if shared is None:
            shared = self._tagged[tags] = {}
        return tags, shared

    def _shared(self, paper_id: str, tags: tuple[str, ...], tag_bits: int) -> Entry:
        """The entry of `memo` for this paper with these keywords, made if it is not there."""
        entry = self.memo.get((paper_id, tags, ()))
        if entry is None:
            entry = self.memo[paper_id, tags, ()] = self._entry(paper_id, tags, tag_bits)
        return entry

    def _entry(self, paper_id: str, tags: tuple[str, ...], tag_bits: int) -> Entry:
        """`_entry(paper, tags, (), hits)`; `tag_bits` are the tags' phrases (`_bits`), so
        the highlights are merged once per set of keywords (readers who follow them in
        another order share them)."""
        paper = self.papers[paper_id]
        if len(tags) == 1:
            title, abstract = self.hits[tags[0].casefold()][paper_id]
            return Entry(paper, tags, title, abstract)
        spans = self._spans.get((paper_id, tag_bits))
        if spans is None:
            found = [self.hits[tag.casefold()][paper_id] for tag in tags]
            spans = merge_spans(*(t for t, _ in found)), merge_spans(*(a for _, a in found))
            if len(self._spans) >= SPANS_KEPT:
                self._spans.clear()
            self._spans[paper_id, tag_bits] = spans
        return Entry(paper, tags, *spans)

    def _newest(self, keyword: str, since: datetime | None) -> list[Row]:
        """The papers `keyword` (as the reader wrote it) matched, first published at or after
        `since` (None: all), newest first."""
        rows = self._rows.get(keyword)
        folded = keyword.casefold()
        ids, published = self._ordered(folded)
        if rows is None:
            bit, member, tags = self._bits.get(folded, 0), self._member, (keyword,)
            rows = self._rows[keyword] = [
                (p, member[p], self._shared(p, tags, bit)) for p in reversed(ids)
            ]
        if since is None or not published or published[0] >= since:
            return rows
        return rows[: len(ids) - bisect_left(published, since)]

    def _ordered(self, keyword: str) -> tuple[list[str], list[datetime]]:
        """The papers `keyword` (casefolded) matched, oldest first, and when each appeared."""
        known = self._oldest_first.get(keyword)
        if known is None:
            papers = self.papers
            ids = [pid for pid in self.hits.get(keyword) or () if pid in papers]
            ids.sort(key=lambda pid: (papers[pid].published, pid))
            known = self._oldest_first[keyword] = (ids, [papers[p].published for p in ids])
        return known
