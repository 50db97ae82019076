"""Readers' feedback and the recommender's cache in SQLite (tables: `migrations._m_feedback`).

- `feedback`: one row per (subscriber, paper): the reader's latest opinion, like or dislike,
  with when and where it came from (csv: the likes column of subscribers.csv; cli; web).
- `recommend_vocabulary`: the tf-idf vocabulary, refitted only when old or outgrown.
- `reader_models`: each reader's fitted weights with the key they were fitted for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import sqlite_utils

from digest import roster, store
from digest.models import Paper
from digest.recommend import (
    DEFAULT_MIN_LIKES,
    DEFAULT_TOP,
    Recommendation,
    Recommender,
    Vector,
    Vocabulary,
    Weights,
)
from digest.subscribers import KEYWORD_SEPARATOR, parse_likes

KINDS = ("like", "dislike")
SOURCES = ("csv", "cli", "web")
VOCABULARY_MAX_AGE = timedelta(days=28)
VOCABULARY_CORPUS = 20_000  # newest papers of the database a vocabulary is fitted from


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
    wanted = list(keys)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            "SELECT subscriber, paper_id, kind FROM feedback "
            f"WHERE subscriber IN ({','.join('?' * len(chunk))}) ORDER BY created_at, rowid",
            chunk,
        ).fetchall()
        for key, paper_id, kind in rows:
            (liked if kind == "like" else disliked).setdefault(key, []).append(paper_id)
    return {
        key: Feedback(tuple(liked.get(key, ())), tuple(disliked.get(key, ())))
        for key in {*liked, *disliked}
    }


def feedback_paper_ids(db: sqlite_utils.Database) -> set[str]:
    """Every paper anyone has an opinion of (what must be in the database to fit models)."""
    return {row[0] for row in db.execute("SELECT DISTINCT paper_id FROM feedback").fetchall()}


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


# The vocabulary --------------------------------------------------------------------------------


def load_vocabulary(db: sqlite_utils.Database) -> Vocabulary | None:
    row = db.execute(
        "SELECT data, idf, fitted_on, created_at FROM recommend_vocabulary WHERE id = 1"
    ).fetchone()
    return Vocabulary.from_stored(row[0], row[1], row[2], row[3]) if row else None


def save_vocabulary(db: sqlite_utils.Database, vocabulary: Vocabulary) -> None:
    """Replace the stored vocabulary; every reader's stored weights go with it."""
    with store.immediate(db):
        db.execute("DELETE FROM reader_models")
        db.execute("DELETE FROM paper_vectors")
        db.execute(
            "INSERT OR REPLACE INTO recommend_vocabulary "
            "(id, version, created_at, fitted_on, data, idf) VALUES (1, ?, ?, ?, ?, ?)",
            [
                vocabulary.version,
                vocabulary.created_at,
                vocabulary.fitted_on,
                vocabulary.to_json(),
                vocabulary.idf.astype(np.float32).tobytes(),
            ],
        )


def paper_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM papers").fetchone()[0])


def current_vocabulary(
    db: sqlite_utils.Database,
    now: datetime,
    fit: Callable[[Sequence[Paper], str], Vocabulary] = Vocabulary.fit,
) -> Vocabulary | None:
    """The stored vocabulary, refitted first when there is none, it is older than
    VOCABULARY_MAX_AGE, or the database has twice the papers it was fitted on. Fitted from the
    newest VOCABULARY_CORPUS papers and every paper someone has an opinion of. None while the
    database has no paper."""
    stored = load_vocabulary(db)
    count = paper_count(db)
    if stored is not None:
        age = now - datetime.fromisoformat(stored.created_at)
        if age < VOCABULARY_MAX_AGE and count < 2 * max(1, stored.fitted_on):
            return stored
    if count == 0:
        return stored
    ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM papers ORDER BY published DESC, id LIMIT ?", [VOCABULARY_CORPUS]
        ).fetchall()
    ]
    corpus = store.papers_by_id(db, [*ids, *sorted(feedback_paper_ids(db))])
    vocabulary = fit(list(corpus.values()), store.now_iso(now))
    save_vocabulary(db, vocabulary)
    return vocabulary


# Readers' weights ------------------------------------------------------------------------------


def load_weights(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, Weights]:
    """The stored weights of these subscribers (those never fitted are left out)."""
    found: dict[str, Weights] = {}
    wanted = list(keys)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            "SELECT subscriber, key, intercept, threshold, indices, weights FROM reader_models "
            f"WHERE subscriber IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        for subscriber, key, intercept, threshold, indices, weights in rows:
            found[subscriber] = Weights(
                key,
                intercept,
                threshold,
                np.frombuffer(indices, dtype=np.int32),
                np.frombuffer(weights, dtype=np.float16).astype(np.float32),
            )
    return found


def save_weights(db: sqlite_utils.Database, fitted: Mapping[str, Weights]) -> None:
    """Store newly fitted weights (one transaction)."""
    if not fitted:
        return
    when = store.now_iso()
    with store.immediate(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO reader_models "
            "(subscriber, key, intercept, threshold, indices, weights, fitted_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    key,
                    w.key,
                    w.intercept,
                    w.threshold,
                    w.indices.astype(np.int32).tobytes(),
                    w.values.astype(np.float16).tobytes(),
                    when,
                )
                for key, w in fitted.items()
            ],
        )


def load_vectors(db: sqlite_utils.Database, version: str, ids: Iterable[str]) -> dict[str, Vector]:
    """The stored tf-idf vectors of these papers under vocabulary `version`."""
    found: dict[str, Vector] = {}
    wanted = list(ids)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            "SELECT paper_id, indices, data FROM paper_vectors WHERE version = ? "
            f"AND paper_id IN ({','.join('?' * len(chunk))})",
            [version, *chunk],
        ).fetchall()
        for paper_id, indices, data in rows:
            found[paper_id] = (
                np.frombuffer(indices, dtype=np.int32),
                np.frombuffer(data, dtype=np.float32),
            )
    return found


def save_vectors(db: sqlite_utils.Database, version: str, vectors: Mapping[str, Vector]) -> None:
    if not vectors:
        return
    with store.immediate(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO paper_vectors (paper_id, version, indices, data) "
            "VALUES (?, ?, ?, ?)",
            [
                (pid, version, i.astype(np.int32).tobytes(), d.astype(np.float32).tobytes())
                for pid, (i, d) in vectors.items()
            ],
        )


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
        save_weights(db, self.recommender.fitted)
        new = self.recommender.new_vectors
        version = self.recommender.vocabulary.version
        save_vectors(db, version, {pid: v for pid, v in new.items() if pid in self.reused})
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
    vocabulary = current_vocabulary(db, now)
    if vocabulary is None:
        return RunRecommender(None, feedback)
    wanted = {pid for f in feedback.values() for pid in (*f.liked, *f.disliked)}
    wanted |= {*vocabulary.background, *vocabulary.control}
    papers = {p.id: p for p in candidates}
    papers.update(store.papers_by_id(db, sorted(wanted - set(papers))))
    readers = [key for key, f in feedback.items() if f.liked]
    vectors = load_vectors(db, vocabulary.version, sorted(wanted & set(papers)))
    recommender = Recommender(papers.values(), vocabulary, load_weights(db, readers), vectors)
    return RunRecommender(recommender, feedback, wanted)
