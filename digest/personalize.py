"""Personalizing the planned digests from what readers taught (issue 13).

For each reader with a model (at least DIGEST_RECOMMEND_MIN_LIKES likes): every keyword section
best first by the model (no keyword match dropped, they only move), and a last section,
"Recommended for you": up to DIGEST_RECOMMEND_TOP papers new in their window that are not in
their keyword sections, not matched by one of their exclude phrases, and never sent to them
before (delivered or waiting in a pending email), each with its one-line why. A reader without a
model gets their digest exactly as planned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import sqlite_utils

from digest import outbox
from digest.feedback_store import RunRecommender
from digest.latex import readable
from digest.match import Hit
from digest.models import (
    AUTHORS_SECTION,
    RECOMMENDED_SECTION,
    Digest,
    Entry,
    Paper,
    Section,
    Subscriber,
)
from digest.plan import Windows
from digest.recommend import Recommendation

ASK_FACTOR = 4  # recommendations asked for per one shown: some may have been sent before
ROUNDS = 3


class Personalizer:
    """Personalizes one run's digests, a chunk of readers at a time (`apply`)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        rec: RunRecommender,
        candidates: Sequence[Paper],
        win: Windows,
        hits: Mapping[str, Mapping[str, Hit]],
        *,
        top: int,
        min_likes: int,
    ) -> None:
        self.db, self.rec, self.win, self.hits = db, rec, win, hits
        self.top, self.min_likes = top, min_likes
        unique = {p.id: p for p in candidates}
        self.newest = sorted(unique.values(), key=lambda p: (p.published, p.id), reverse=True)
        self._pools: dict[datetime, list[str]] = {}
        self.recommended = 0  # papers put in "Recommended for you" this run

    def pool(self, since: datetime) -> list[str]:
        """The candidates first published at or after `since`, newest first (one list per
        window: every daily reader shares one)."""
        found = self._pools.get(since)
        if found is None:
            found = self._pools[since] = [p.id for p in self.newest if p.published >= since]
        return found

    def apply(self, planned: dict[str, Digest], people: Sequence[Subscriber]) -> dict[str, Digest]:
        """The digests of `people` (by key, as `Planner.plan` gives them), personalized."""
        readers = [
            p for p in people if p.key in planned and self.rec.has_model(p.key, self.min_likes)
        ]
        if not readers:
            return planned
        out = dict(planned)
        for person in readers:
            out[person.key] = self._reordered(out[person.key])
        found = self._recommendations(readers, out)
        for person in readers:
            recs = found.get(person.key)
            if recs:
                out[person.key] = self._with_section(out[person.key], recs)
        return out

    def _reordered(self, digest: Digest) -> Digest:
        key = digest.subscriber.key
        sections = []
        for section in digest.sections:
            if section.keyword == AUTHORS_SECTION or len(section.entries) < 2:
                sections.append(section)
                continue
            by_id = {e.paper.id: e for e in section.entries}
            order = self.rec.order(key, list(by_id), self.min_likes)
            sections.append(Section(section.keyword, tuple(by_id[i] for i in order)))
        return replace(digest, sections=tuple(sections))

    def _recommendations(
        self, readers: Sequence[Subscriber], digests: Mapping[str, Digest]
    ) -> dict[str, list[Recommendation]]:
        """Each reader's recommendations, none sent to them before: asked for a few more than
        shown, the ones delivered or pending looked up in one query for the chunk, and asked
        again (rarely) for those who lost too many."""
        exclude = {p.key: self._excluded(p, digests[p.key]) for p in readers}
        done: dict[str, list[Recommendation]] = {}
        todo = list(readers)
        for _ in range(ROUNDS):
            asked = {
                p.key: self.rec.recommend(
                    p.key,
                    self.pool(self.win.of(p)),
                    exclude[p.key],
                    top=self.top * ASK_FACTOR,
                    min_likes=self.min_likes,
                )
                for p in todo
            }
            wanted = {key: [r.paper_id for r in recs] for key, recs in asked.items() if recs}
            taken = outbox.taken_many(self.db, wanted) if wanted else {}
            again = []
            for person in todo:
                recs = asked[person.key]
                gone = taken.get(person.key, set())
                fresh = [r for r in recs if r.paper_id not in gone]
                if len(fresh) < self.top and len(recs) == self.top * ASK_FACTOR and gone:
                    exclude[person.key] |= gone  # all asked for were not enough: ask again
                    again.append(person)
                done[person.key] = fresh[: self.top]
            todo = again
            if not todo:
                break
        return done

    def _excluded(self, person: Subscriber, digest: Digest) -> set[str]:
        """What must not be recommended: the papers of their keyword sections, and papers one
        of their exclude phrases matches."""
        out = set(digest.paper_ids)
        for phrase in person.exclude:
            out.update(self.hits.get(phrase.casefold(), {}))
        return out

    def _with_section(self, digest: Digest, recs: Sequence[Recommendation]) -> Digest:
        recommender = self.rec.recommender
        assert recommender is not None  # readers with a model only
        papers = recommender.papers
        entries = []
        for r in recs:
            closest = papers.get(r.closest_liked_id or "")
            titles = {closest.id: readable(closest.title)} if closest is not None else {}
            why = r.why(titles) or "Recommended from the papers you liked"
            entries.append(Entry(papers[r.paper_id], (), why=why))
        self.recommended += len(entries)
        section = Section(RECOMMENDED_SECTION, tuple(entries))
        return replace(digest, sections=(*digest.sections, section))
