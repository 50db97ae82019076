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


class Matches:
    """One run's matches (`hits`, `papers`, `by_author`, as `plan_digest` takes them), planned
    for many subscribers: each keyword's papers sorted newest first once, and the entries that
    subscribers have in common made once (`memo`). `plan` gives exactly what `plan_digest`
    gives; the common case (keywords only) without re-checking every paper per subscriber."""

    def __init__(
        self,
        hits: Mapping[str, Mapping[str, Hit]],
        papers: Mapping[str, Paper],
        by_author: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.hits, self.papers, self.by_author = hits, papers, by_author or {}
        self.memo: dict[tuple[object, ...], Entry] = {}
        self._alone: dict[str, dict[str, Entry]] = {}  # keyword -> paper -> entry tagged so
        self._oldest_first: dict[str, tuple[list[str], list[datetime]]] = {}
        self._spans: dict[tuple[str, frozenset[str]], tuple[tuple[Span, ...], ...]] = {}

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
        placed = set(delivered)
        chosen: list[list[str]] = []  # per keyword: the papers it is the first to match
        for keyword in folded:
            ids, published = self._ordered(keyword)
            start = bisect_left(published, since) if since is not None else 0
            newest = ids[: start - 1 if start else None : -1]
            mine = [p for p in newest if p not in placed] if placed else newest
            placed.update(mine)
            chosen.append(mine)
        found = [self.hits.get(keyword) or {} for keyword in folded]
        sections = []
        memo, papers = self.memo, self.papers
        for n, ids in enumerate(chosen):
            if not ids:
                continue
            heading = keywords[n]
            later = [(keywords[m], found[m]) for m in range(n + 1, len(keywords)) if found[m]]
            # Papers no later keyword matched are tagged with the heading alone.
            alone = self._alone.get(heading)
            if alone is None:
                alone = self._alone[heading] = {}
            tagged = set().union(*(in_k for _, in_k in later)) if later else ()
            entries = []
            for paper_id in ids:
                if paper_id not in tagged:
                    entry = alone.get(paper_id)
                    if entry is None:
                        entry = alone[paper_id] = self._entry(papers[paper_id], (heading,))
                    entries.append(entry)
                    continue
                tags = (heading, *[k for k, in_k in later if paper_id in in_k])
                entry = memo.get((paper_id, tags, ()))
                if entry is None:
                    entry = memo[paper_id, tags, ()] = self._entry(papers[paper_id], tags)
                entries.append(entry)
            sections.append(Section(heading, tuple(entries)))
        return Digest(subscriber=subscriber, sections=tuple(sections), day=day)

    def forget(self) -> None:
        """Let go of the entries made so far (they are made again when needed)."""
        self.memo, self._alone = {}, {}

    def _entry(self, paper: Paper, tags: tuple[str, ...]) -> Entry:
        """`_entry(paper, tags, (), hits)`, its highlights merged once per set of keywords
        (readers who follow them in another order share them)."""
        if len(tags) == 1:
            title, abstract = self.hits[tags[0].casefold()][paper.id]
            return Entry(paper, tags, title, abstract)
        key = (paper.id, frozenset(tag.casefold() for tag in tags))
        spans = self._spans.get(key)
        if spans is None:
            found = [self.hits[tag.casefold()][paper.id] for tag in tags]
            spans = merge_spans(*(t for t, _ in found)), merge_spans(*(a for _, a in found))
            if len(self._spans) >= SPANS_KEPT:
                self._spans.clear()
            self._spans[key] = spans
        return Entry(paper, tags, *spans)

    def _ordered(self, keyword: str) -> tuple[list[str], list[datetime]]:
        """The papers `keyword` (casefolded) matched, oldest first, and when each appeared."""
        known = self._oldest_first.get(keyword)
        if known is None:
            papers = self.papers
            ids = [pid for pid in self.hits.get(keyword) or () if pid in papers]
            ids.sort(key=lambda pid: (papers[pid].published, pid))
            known = self._oldest_first[keyword] = (ids, [papers[p].published for p in ids])
        return known
