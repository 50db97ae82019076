"""Planning: who gets which papers today.

For the subscribers due today: each one's window (daily, or weekly since their last email), the
run's keyword and author matches (one FTS query per distinct phrase), the papers of their
refused emails (still owed however old), minus what was delivered to them or waits in a pending
email, decorated with the day's trending board. The rules of what matches are match.py's; this
module only gathers the facts from the store and the outbox and asks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlite_utils

from digest import outbox, store
from digest import trending as trending_stage
from digest.match import (
    Hit,
    author_key,
    distinct_keywords,
    literal_filter,
    owed_since,
    plan_digest,
)
from digest.matches import Matches
from digest.models import RECOMMENDED_SECTION, Digest, Entry, Paper, Section, Subscriber

CHUNK = 200  # subscribers planned together: one bulk query for their deliveries and refusals
MEMO_LIMIT = 200_000  # shared entries kept at most


@dataclass(frozen=True)
class Windows:
    """How far back papers are new for each due subscriber."""

    daily: datetime  # the look-back of daily subscribers
    weekly: Mapping[str, datetime]  # subscriber key -> their weekly window

    @property
    def earliest(self) -> datetime:
        return min([self.daily, *self.weekly.values()])

    def of(self, person: Subscriber) -> datetime:
        return self.weekly.get(person.key, self.daily)


def windows(
    db: sqlite_utils.Database, due: Sequence[Subscriber], now: datetime, lookback_days: int
) -> Windows:
    weekly_people = [p for p in due if p.weekday is not None]
    last = outbox.last_sent_many(db, (p.key for p in weekly_people))
    return Windows(
        daily=now - timedelta(days=lookback_days),
        weekly={p.key: owed_since(p, now, lookback_days, last.get(p.key)) for p in weekly_people},
    )


def followed_authors(due: Iterable[Subscriber]) -> list[str]:
    """Every author any due subscriber follows, once (by `author_key`)."""
    return list({author_key(a): a for p in due for a in p.authors}.values())


def match_keywords(
    db: sqlite_utils.Database,
    phrases: Iterable[str],
    since: datetime | None,
    ids: Iterable[str] | None = None,
) -> tuple[dict[str, dict[str, Hit]], dict[str, Paper]]:
    """One FTS query per phrase: phrase (casefolded) -> paper id -> where it matched; and the
    papers they matched."""
    phrases = list(phrases)
    wanted = None if ids is None else list(ids)
    hits = {p.casefold(): store.keyword_hits(db, p, since, wanted) for p in phrases}
    papers = store.papers_by_id(db, (pid for found in hits.values() for pid in found))
    literal_filter(phrases, hits, papers)
    return hits, papers


class Planner:
    """Plans the due subscribers of one run, a chunk at a time, from one set of matches."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        due: Sequence[Subscriber],
        win: Windows,
        day: str,
        board: trending_stage.Board,
        trending_top: int,
    ) -> None:
        self.db, self.win, self.day = db, win, day
        self.board, self.trending_top = board, trending_top
        since = win.earliest
        self.since = since
        excludes = [phrase for p in due for phrase in p.exclude]
        self.hits, self.papers = match_keywords(db, distinct_keywords(due, excludes), since)
        followed = {author_key(a) for p in due for a in p.authors}
        self.by_author = {
            k: ids for k, ids in store.author_index(db, since, author_key).items() if k in followed
        }
        self.papers.update(
            store.papers_by_id(db, (i for ids in self.by_author.values() for i in ids))
        )
        # Entries readers have in common (same paper, keywords, authors) are made once and
        # shared, so building finds each reader's version of a block by the entry itself.
        self.matches = Matches(self.hits, self.papers, self.by_author)

    def plan(self, people: Sequence[Subscriber]) -> dict[str, Digest]:
        """What each of `people` is owed now, by subscriber key (in their order)."""
        if len(self.matches.memo) > MEMO_LIMIT:  # memory stays flat at any number of subscribers
            self.matches.forget()
        refused = outbox.refused_many(self.db, [p.key for p in people])
        drafts = {p.key: self._draft(p, refused.get(p.key), set()) for p in people}
        # One look-up of exactly the (subscriber, paper) pairs planned: delivered or pending.
        taken = outbox.taken_many(self.db, {k: d.paper_ids for k, d in drafts.items()})
        for person in people:
            own = taken.get(person.key)
            if own and not own.isdisjoint(drafts[person.key].paper_ids):  # plan again without
                drafts[person.key] = self._draft(person, refused.get(person.key), own)
        return {
            key: trending_stage.decorate(draft, self.board, self.trending_top)
            for key, draft in drafts.items()
        }

    def _draft(self, person: Subscriber, refused: set[str] | None, delivered: set[str]) -> Digest:
        window = self.win.of(person)
        if not refused:
            since = window if window > self.since else None  # else: all of them are new
            return self.matches.plan(person, delivered, self.day, since)
        # Rare: papers of a refused email, owed past the window.
        hits, papers = self._with_refused(person, window, refused)
        own_authors = {
            author_key(a): [
                i for i in self.by_author.get(author_key(a), ()) if _new(papers, i, window)
            ]
            for a in person.authors
        }
        return plan_digest(person, hits, papers, delivered, self.day, by_author=own_authors)

    def _with_refused(
        self, person: Subscriber, since: datetime, refused: set[str]
    ) -> tuple[dict[str, dict[str, Hit]], dict[str, Paper]]:
        """The run's hits for this subscriber's phrases first published in their window, plus
        the papers of their refused emails that still match."""
        phrases = [*person.keywords, *person.exclude]
        own = {
            k.casefold(): {
                pid: hit
                for pid, hit in self.hits.get(k.casefold(), {}).items()
                if _new(self.papers, pid, since)
            }
            for k in phrases
        }
        extra = refused - {pid for found in own.values() for pid in found}
        if not extra:
            return own, self.papers
        extra_hits, extra_papers = match_keywords(self.db, phrases, None, extra)
        merged = {k: {**extra_hits.get(k, {}), **found} for k, found in own.items()}
        return merged, {**self.papers, **extra_papers}


def _new(papers: Mapping[str, Paper], paper_id: str, since: datetime) -> bool:
    return paper_id in papers and papers[paper_id].published >= since


def replan_pending(
    db: sqlite_utils.Database,
    person: Subscriber,
    pending: outbox.PendingEmail,
    today: str,
    with_trending: bool,
    trending_top: int,
) -> Digest:
    """The digest of a pending email of an earlier run, as it was: its papers in its order (a
    reader's model may have ordered its sections), matched against the subscriber's keywords
    now (papers that no longer match drop out), on its day; its recommended papers (no keyword
    match: `pending.recommended`) last, with their why lines, as personalize.py made them."""
    phrases = [*person.keywords, *person.exclude]
    hits, papers = match_keywords(db, phrases, None, pending.paper_ids)
    papers.update(store.papers_by_id(db, set(pending.paper_ids) - set(papers)))
    by_author: dict[str, list[str]] = {}
    for paper_id, paper in papers.items():
        for author in paper.authors:
            by_author.setdefault(author_key(author), []).append(paper_id)
    day = pending.day or today
    recommended = set(pending.recommended)  # they stay where they were: recommended
    digest = plan_digest(person, hits, papers, recommended, day, by_author=by_author)
    place = {pid: n for n, pid in enumerate(pending.paper_ids)}
    sections = [
        Section(s.keyword, tuple(sorted(s.entries, key=lambda e: place.get(e.paper.id, 0))))
        for s in digest.sections
    ]
    digest = replace(digest, sections=tuple(sections))
    if with_trending:  # with the trending list stored for its day
        digest = trending_stage.decorate(digest, trending_stage.load(db, day), trending_top)
    entries = tuple(
        Entry(papers[pid], (), why=pending.recommended[pid])
        for pid in pending.paper_ids
        if pid in recommended and pid in papers
    )
    if entries:  # after the upvote badges, as in the first attempt
        digest = replace(digest, sections=(*digest.sections, Section(RECOMMENDED_SECTION, entries)))
    return digest
