"""Readers' feedback in SQLite (table `feedback`: `migrations._m_feedback`), and a run's
recommender prepared from it (`prepare`).

- `feedback`: one row per (subscriber, paper): the reader's latest opinion, like or dislike,
  with when and where it came from (csv: the likes column of subscribers.csv; cli; web).
- The recommender's cache (the vocabulary, readers' weights, papers' vectors) is kept in
  digest/recommend_cache.py; `prepare` reads it and `RunRecommender.save` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils

from digest import recommend_cache, roster, store
from digest.models import Paper
from digest.recommend import DEFAULT_MIN_LIKES, DEFAULT_TOP, Recommendation, Recommender
from digest.subscribers import KEYWORD_SEPARATOR, parse_likes

KINDS = ("like", "dislike")
SOURCES = ("csv", "cli", "web")


@dataclass(frozen=True)
class Feedback:
    liked: tuple[str, ...] = ()  # paper ids without version, oldest opinion first
    disliked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Opinion:
    paper_id: str
    kind: str
    created_at: str
    source: str


def record(
    db: sqlite_utils.Database, subscriber: str, paper_id: str, kind: str, source: str
) -> bool:
    """Set the reader's opinion of a paper (replacing an earlier one); False when it was
    already exactly that."""
    if kind not in KINDS or source not in SOURCES:
        raise ValueError((kind, source))
    with store.immediate(db):
        row = db.execute(
            "SELECT kind FROM feedback WHERE subscriber = ? AND paper_id = ?",
            [subscriber, paper_id],
        ).fetchone()
        if row is not None and row[0] == kind:
            return False
        db.execute(
            "INSERT OR REPLACE INTO feedback (subscriber, paper_id, kind, created_at, source) "
            "VALUES (?, ?, ?, ?, ?)",
            [subscriber, paper_id, kind, store.now_iso(), source],
        )
    return True


def forget(
    db: sqlite_utils.Database, subscriber: str, paper_id: str, kind: str | None = None
) -> bool:
    """Remove the reader's opinion of a paper (only of that `kind`, if given)."""
    sql = "DELETE FROM feedback WHERE subscriber = ? AND paper_id = ?"
    params = [subscriber, paper_id]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    with store.immediate(db):
        return db.execute(sql, params).rowcount > 0


def opinion(db: sqlite_utils.Database, subscriber: str, paper_id: str) -> Opinion | None:
    row = db.execute(
        "SELECT paper_id, kind, created_at, source FROM feedback "
        "WHERE subscriber = ? AND paper_id = ?",
        [subscriber, paper_id],
    ).fetchone()
    return Opinion(*row) if row else None


def opinions(db: sqlite_utils.Database, subscriber: str, kind: str | None = None) -> list[Opinion]:
    """The reader's opinions, newest first."""
    sql = "SELECT paper_id, kind, created_at, source FROM feedback WHERE subscriber = ?"
    params = [subscriber]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    rows = db.execute(sql + " ORDER BY created_at DESC, rowid DESC", params).fetchall()
    return [Opinion(*row) for row in rows]


def edit_likes(
    path: Path, db: sqlite_utils.Database, email: str, action: str, ids: Iterable[str]
) -> list[str]:
    """`digest subscribers like/unlike`: edit the subscriber's likes column, and record the
    likes at once (source cli) or forget them (whichever way they were given)."""
    ids = list(ids)
    new = roster.change_likes(path, email, action, ids)
    key = roster.address_key(email)
    for paper_id in parse_likes(KEYWORD_SEPARATOR.join(ids))[0]:
        if action == "like":
            record(db, key, paper_id, "like", "cli")
        else:
            forget(db, key, paper_id, "like")
    return new


def sync_csv_likes(db: sqlite_utils.Database, likes: Mapping[str, Iterable[str]]) -> None:
    """Bring the table in line with the likes column (subscriber key -> its ids), in one
    transaction: a listed paper without an opinion becomes a like (source csv); a csv or cli
    like no longer listed is removed. An opinion given on the web stays as it is."""
    wanted = {key: set(ids) for key, ids in likes.items()}
    when = store.now_iso()
    with store.immediate(db):
        rows = db.execute(
            "SELECT subscriber, paper_id FROM feedback WHERE source IN ('csv', 'cli') "
            "AND kind = 'like'"
        ).fetchall()
        gone = [(s, p) for s, p in rows if p not in wanted.get(s, ())]
        db.conn.executemany("DELETE FROM feedback WHERE subscriber = ? AND paper_id = ?", gone)
        db.conn.executemany(
            "INSERT OR IGNORE INTO feedback (subscriber, paper_id, kind, created_at, source) "
            "VALUES (?, ?, 'like', ?, 'csv')",
            [(key, pid, when) for key, ids in wanted.items() for pid in sorted(ids)],
        )


def feedback_many(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, Feedback]:
    """Each subscriber's likes and dislikes (those without any are left out). One query per
    500 subscribers."""
    liked: dict[str, list[str]] = {}
    disliked: dict[str, list[str]] = {}
    rows = store.rows_in(
        db,
        "SELECT subscriber, paper_id, kind FROM feedback WHERE subscriber IN ({marks}) "
        "ORDER BY created_at, rowid",
        keys,
    )
    for key, paper_id, kind in rows:
        (liked if kind == "like" else disliked).setdefault(key, []).append(paper_id)
    return {
        key: Feedback(tuple(liked.get(key, ())), tuple(disliked.get(key, ())))
        for key in {*liked, *disliked}
    }


def liked_ids_missing(db: sqlite_utils.Database) -> list[str]:
    """Every paper someone likes or dislikes that the database does not have (to fetch by id,
    all readers at once)."""
    rows = db.execute(
        "SELECT DISTINCT paper_id FROM feedback WHERE paper_id NOT IN (SELECT id FROM papers) "
        "ORDER BY paper_id"
    ).fetchall()
    return [row[0] for row in rows]


def liked_categories(db: sqlite_utils.Database) -> list[str]:
    """The primary categories of every liked paper (the fetch takes their newest papers)."""
    rows = db.execute(
        "SELECT DISTINCT papers.primary_category FROM feedback JOIN papers "
        "ON papers.id = feedback.paper_id WHERE feedback.kind = 'like' "
        "ORDER BY papers.primary_category"
    ).fetchall()
    return [row[0] for row in rows if row[0]]


# One run -----------------------------------------------------------------------------------------


class RunRecommender:
    """What planning a run needs from the recommender, prepared once per run by `prepare`:
    every reader's feedback, the vocabulary, the run's papers vectorized once, stored weights.

    `recommend(key, ...)` and `order(key, ...)` for each reader; `save(db)` once at the end
    stores the weights fitted in this run (readers whose feedback changed)."""

    def __init__(
        self,
        recommender: Recommender | None,
        feedback: Mapping[str, Feedback],
        reused: Iterable[str] = (),
    ) -> None:
        self.recommender = recommender
        self.feedback = dict(feedback)
        self.reused = set(reused)  # papers read every run: their vectors are worth storing

    def has_model(self, key: str, min_likes: int = DEFAULT_MIN_LIKES) -> bool:
        return self.recommender is not None and len(self.of(key).liked) >= min_likes

    def of(self, key: str) -> Feedback:
        return self.feedback.get(key, Feedback())

    def recommend(
        self,
        key: str,
        candidates: Iterable[str],
        exclude: Iterable[str] = (),
        top: int = DEFAULT_TOP,
        min_likes: int = DEFAULT_MIN_LIKES,
    ) -> list[Recommendation]:
        mine = self.of(key)
        if self.recommender is None or len(mine.liked) < min_likes:
            return []
        return self.recommender.for_reader(
            key, mine.liked, mine.disliked, exclude, top, min_likes, candidates
        )

    def order(
        self, key: str, paper_ids: Sequence[str], min_likes: int = DEFAULT_MIN_LIKES
    ) -> list[str]:
        """The section's papers best first for a reader with a model (at least `min_likes`
        likes); as given for everyone else."""
        mine = self.of(key)
        if self.recommender is None or len(mine.liked) < min_likes:
            return list(paper_ids)
        return self.recommender.order(key, mine.liked, mine.disliked, paper_ids)

    def save(self, db: sqlite_utils.Database) -> int:
        """Store the weights fitted in this run (and the new vectors of papers read every run);
        returns how many readers' weights."""
        if self.recommender is None:
            return 0
        recommend_cache.save_weights(db, self.recommender.fitted)
        new = self.recommender.new_vectors
        version = self.recommender.vocabulary.version
        reused = {pid: v for pid, v in new.items() if pid in self.reused}
        recommend_cache.save_vectors(db, version, reused)
        return len(self.recommender.fitted)


def prepare(
    db: sqlite_utils.Database,
    csv_likes: Mapping[str, Iterable[str]],
    keys: Iterable[str],
    candidates: Iterable[Paper],
    now: datetime,
) -> RunRecommender:
    """Sync the likes column into the table, read the feedback of `keys` (the run's readers),
    and when any has a like: the vocabulary (refitted if due) and a Recommender over
    `candidates` (the run's papers) plus every feedback, background and control paper."""
    sync_csv_likes(db, csv_likes)
    feedback = feedback_many(db, keys)
    if not any(f.liked for f in feedback.values()):
        return RunRecommender(None, feedback)
    vocabulary = recommend_cache.current_vocabulary(db, now)
    if vocabulary is None:
        return RunRecommender(None, feedback)
    wanted = {pid for f in feedback.values() for pid in (*f.liked, *f.disliked)}
    wanted |= {*vocabulary.background, *vocabulary.control}
    papers = {p.id: p for p in candidates}
    papers.update(store.papers_by_id(db, sorted(wanted - set(papers))))
    readers = [key for key, f in feedback.items() if f.liked]
    vectors = recommend_cache.load_vectors(db, vocabulary.version, sorted(wanted & set(papers)))
    weights = recommend_cache.load_weights(db, readers)
    recommender = Recommender(papers.values(), vocabulary, weights, vectors)
    return RunRecommender(recommender, feedback, wanted)
