"""The recommender's cache in SQLite (tables: `migrations._m_feedback`), what digest/recommend.py
fits kept between runs so that a run refits only what changed.

- `recommend_vocabulary`: the tf-idf vocabulary, refitted only when old or outgrown
  (`current_vocabulary`).
- `reader_models`: each reader's fitted weights with the key they were fitted for.
- `paper_vectors`: the tf-idf vectors of the papers read every run, under one vocabulary version.

Readers' opinions themselves, and preparing a run's recommender from all this, are in
digest/feedback_store.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import sqlite_utils

from digest import store
from digest.models import Paper
from digest.recommend import Vector, Vocabulary, Weights

VOCABULARY_MAX_AGE = timedelta(days=28)
VOCABULARY_CORPUS = 20_000  # newest papers of the database a vocabulary is fitted from


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


def feedback_paper_ids(db: sqlite_utils.Database) -> set[str]:
    """Every paper anyone has an opinion of (what must be in the database to fit models)."""
    return {row[0] for row in db.execute("SELECT DISTINCT paper_id FROM feedback").fetchall()}


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


# Readers' weights and papers' vectors ----------------------------------------------------------


def load_weights(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, Weights]:
    """The stored weights of these subscribers (those never fitted are left out)."""
    rows = store.rows_in(
        db,
        "SELECT subscriber, key, intercept, threshold, indices, weights FROM reader_models "
        "WHERE subscriber IN ({marks})",
        keys,
    )
    return {
        subscriber: Weights(
            key,
            intercept,
            threshold,
            np.frombuffer(indices, dtype=np.int32),
            np.frombuffer(weights, dtype=np.float16).astype(np.float32),
        )
        for subscriber, key, intercept, threshold, indices, weights in rows
    }


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
    rows = store.rows_in(
        db,
        "SELECT paper_id, indices, data FROM paper_vectors WHERE version = ? "
        "AND paper_id IN ({marks})",
        ids,
        [version],
    )
    return {
        paper_id: (np.frombuffer(indices, dtype=np.int32), np.frombuffer(data, dtype=np.float32))
        for paper_id, indices, data in rows
    }


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
