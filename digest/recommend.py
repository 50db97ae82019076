"""Recommendations learned from each reader's feedback: a linear model on tf-idf features.

As arxiv-sanity-lite does it: one tf-idf vocabulary (words and word pairs of title + abstract,
sublinear term frequency, English stop words dropped), and per reader a linear classifier
(logistic regression) with their liked papers as positives and, as negatives, their "not for
me" papers (each weighing as much as a like) and a fixed, deterministic sample of other papers
(the *background*, weighing as much as all the likes together).

A paper is recommended only when it stands out for the reader: its score is above the
CONTROL_PERCENTILE-th percentile of the scores of the *control* papers, a second fixed sample
of ordinary papers the model was not trained on. (The raw probability is no guide: with a
handful of likes against hundreds of others, regularisation keeps every new paper below one
half.) A paper of another field shares no words with the likes and never passes.

What is expensive is kept between runs:

- The `Vocabulary` (terms, idf weights and the background ids) is fitted from the papers in the
  database and stored (see `recommend_cache`); it is refitted only when it is old or the database
  has grown a lot. Its `version` is a hash of what it holds.
- A reader's fitted weights are stored keyed by a hash of (vocabulary version, likes, dislikes):
  a reader whose feedback did not change since the last run is not fitted again.

Each run vectorizes its papers once (`Recommender`); scoring a reader is one sparse
matrix-vector product over the run's papers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from digest.models import Paper

if TYPE_CHECKING:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

MODEL_VERSION = "lr-balanced-c1-v2"  # part of every cache key: change it when the fit changes
SAMPLE_SIZE = 300  # papers sampled from the database: 2/3 background, 1/3 control
CONTROL_PERCENTILE = 75.0  # recommended only above this percentile of the control papers
MAX_FEATURES = 50_000
KEEP_WEIGHTS = 1_000  # largest weights kept per reader (stored as float16: 6 KB a reader)
TOP_WORDS = 3
DEFAULT_TOP = 5
DEFAULT_MIN_LIKES = 3


def paper_text(paper: Paper) -> str:
    return f"{paper.title}. {paper.abstract}"


def _vectorizer(min_df: int = 1, vocabulary: Mapping[str, int] | None = None) -> TfidfVectorizer:
    from sklearn.feature_extraction.text import TfidfVectorizer  # slow to import: when needed

    return TfidfVectorizer(
        strip_accents="unicode",
        lowercase=True,
        stop_words="english",
        token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
        ngram_range=(1, 2),
        max_features=MAX_FEATURES,
        sublinear_tf=True,
        min_df=min_df,
        vocabulary=vocabulary,
        dtype=np.float32,
    )


def background_order(paper_id: str) -> str:
    """The deterministic order the background sample is drawn in (a hash, not the date)."""
    return hashlib.sha256(paper_id.encode()).hexdigest()


@dataclass(frozen=True)
class Vocabulary:
    """A fitted tf-idf vocabulary, frozen: the same text always gives the same vector."""

    terms: tuple[str, ...]
    idf: np.ndarray
    background: tuple[str, ...]  # paper ids: the "other papers" negatives
    control: tuple[str, ...]  # paper ids never trained on: what "stands out" is measured by
    fitted_on: int  # how many papers it was fitted from
    created_at: str  # ISO UTC

    @classmethod
    def fit(cls, papers: Sequence[Paper], created_at: str) -> Vocabulary:
        """Fit from `papers` (e.g. the newest papers in the database and every liked paper)."""
        texts = [paper_text(p) for p in papers]
        vectorizer = _vectorizer(min_df=2 if len(texts) >= 1000 else 1)
        vectorizer.fit(texts)
        terms = tuple(str(t) for t in vectorizer.get_feature_names_out())
        idf = np.asarray(vectorizer.idf_, dtype=np.float32)
        ids = sorted({p.id for p in papers}, key=background_order)[:SAMPLE_SIZE]
        background = tuple(i for n, i in enumerate(ids) if n % 3 != 2)
        control = tuple(i for n, i in enumerate(ids) if n % 3 == 2)
        return cls(terms, idf, background, control, len(texts), created_at)

    @cached_property  # frozen: worked out once
    def version(self) -> str:
        digest = hashlib.sha256()
        digest.update("\n".join(self.terms).encode())
        digest.update(self.idf.tobytes())
        digest.update("\n".join((*self.background, "", *self.control)).encode())
        return digest.hexdigest()[:16]

    def vectorizer(self) -> TfidfVectorizer:
        vectorizer = _vectorizer(vocabulary={t: i for i, t in enumerate(self.terms)})
        vectorizer.idf_ = self.idf
        return vectorizer

    def to_json(self) -> str:
        return json.dumps(
            {"terms": self.terms, "background": self.background, "control": self.control}
        )

    @classmethod
    def from_stored(cls, data: str, idf: bytes, fitted_on: int, created_at: str) -> Vocabulary:
        decoded = json.loads(data)
        return cls(
            tuple(decoded["terms"]),
            np.frombuffer(idf, dtype=np.float32).copy(),
            tuple(decoded["background"]),
            tuple(decoded["control"]),
            fitted_on,
            created_at,
        )


def feedback_key(vocabulary_version: str, liked: Iterable[str], disliked: Iterable[str]) -> str:
    """What a reader's fitted weights depend on: when it is unchanged, they are too."""
    text = "|".join(
        [
            MODEL_VERSION,
            vocabulary_version,
            ",".join(sorted(set(liked))),
            ",".join(sorted(set(disliked))),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Weights:
    """A reader's fitted linear model, sparse: only the largest weights are kept."""

    key: str  # feedback_key it was fitted for
    intercept: float
    threshold: float  # the margin a paper must beat: CONTROL_PERCENTILE of the control papers
    indices: np.ndarray  # int32 feature indices
    values: np.ndarray  # float32 weights (float16 precision: what is stored)


Vector = tuple[np.ndarray, np.ndarray]
"""One paper's tf-idf vector, sparse: (int32 term indices, float32 values)."""


def _stack(rows: Sequence[Vector], width: int) -> sparse.csr_matrix:
    from scipy import sparse  # slow to import: only a run with a reader's likes gets here

    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(indices) for indices, _ in rows])
    indices = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int32)
    data = np.concatenate([d for _, d in rows]) if rows else np.zeros(0, np.float32)
    return sparse.csr_matrix(
        (data.astype(np.float32), indices.astype(np.int32), indptr), shape=(len(rows), width)
    )


@dataclass(frozen=True)
class Recommendation:
    paper_id: str
    score: float  # the model's margin (log-odds) for the reader; above their threshold
    closest_liked_id: str | None  # the liked paper most like it (cosine on tf-idf)
    top_words: tuple[str, ...]  # the terms of the paper that weighed most for it

    def why(self, titles: Mapping[str, str]) -> str:
        """One line: 'Like "<closest liked title>"; words: a, b, c'."""
        parts = []
        if self.closest_liked_id:
            title = titles.get(self.closest_liked_id, self.closest_liked_id)
            parts.append(f'Close to "{title}", which you liked')
        if self.top_words:
            parts.append("words: " + ", ".join(self.top_words))
        return "; ".join(parts)


class Recommender:
    """One run's recommender: the run's papers vectorized once, readers' models fitted (or taken
    from `cache`) on demand.

    `papers` are every paper the run may rank or recommend plus the liked and disliked papers of
    the readers and the vocabulary's background papers (those missing are simply left out).
    `cache` maps a reader's key to their stored `Weights` (see `recommend_cache.load_weights`);
    newly fitted weights are collected in `fitted` for the caller to store.
    """

    def __init__(
        self,
        papers: Iterable[Paper],
        vocabulary: Vocabulary,
        cache: Mapping[str, Weights] | None = None,
        vectors: Mapping[str, Vector] | None = None,
    ) -> None:
        from scipy import sparse  # slow to import: only a run with a reader's likes gets here

        self.vocabulary = vocabulary
        self.papers: dict[str, Paper] = {p.id: p for p in papers}
        self.ids: list[str] = list(self.papers)
        self.row: dict[str, int] = {pid: i for i, pid in enumerate(self.ids)}
        stored = vectors or {}
        missing = [pid for pid in self.ids if pid not in stored]
        self.new_vectors: dict[str, Vector] = {}  # vectorized now: the caller may store them
        if missing:
            texts = [paper_text(self.papers[pid]) for pid in missing]
            made = sparse.csr_matrix(vocabulary.vectorizer().transform(texts), dtype=np.float32)
            for n, pid in enumerate(missing):
                start, end = made.indptr[n], made.indptr[n + 1]
                self.new_vectors[pid] = (made.indices[start:end], made.data[start:end])
        rows = [stored[pid] if pid in stored else self.new_vectors[pid] for pid in self.ids]
        self.matrix: sparse.csr_matrix = _stack(rows, len(vocabulary.terms))
        self._when = {pid: p.published.timestamp() for pid, p in self.papers.items()}
        self.background = [b for b in vocabulary.background if b in self.row]
        self.control = [c for c in vocabulary.control if c in self.row]
        self.cache: Mapping[str, Weights] = cache or {}
        self._scratch = np.zeros(self.matrix.shape[1], dtype=np.float32)
        self._rows_cache: dict[tuple[str, ...], sparse.csr_matrix] = {}
        self.fitted: dict[str, Weights] = {}  # reader key -> weights fitted in this run

    # Fitting -------------------------------------------------------------------------------

    def weights(
        self, reader: str, liked: Iterable[str], disliked: Iterable[str] = ()
    ) -> Weights | None:
        """The reader's model: cached when their feedback is unchanged, else fitted now.
        None when none of their liked papers is known."""
        liked = [i for i in dict.fromkeys(liked)]
        disliked = [i for i in dict.fromkeys(disliked) if i not in set(liked)]
        key = feedback_key(self.vocabulary.version, liked, disliked)
        for known in (self.fitted.get(reader), self.cache.get(reader)):
            if known is not None and known.key == key:
                return known
        positives = [self.row[i] for i in liked if i in self.row]
        if not positives:
            return None
        taken = set(liked) | set(disliked)
        explicit = [self.row[i] for i in disliked if i in self.row]
        others = [i for i in self.background if i not in taken]
        if not explicit and not others:
            return None
        from scipy import sparse  # slow to import: only a run with a reader's likes gets here

        x = sparse.vstack([self.matrix[positives + explicit], self._rows(others)], format="csr")
        y = np.array([1] * len(positives) + [0] * (len(explicit) + len(others)))
        # Balanced: the likes weigh as much together as the other papers together; and each
        # "not for me" weighs as much as a like (it is the reader's word, not a sample).
        total = len(y)
        like = total / (2 * len(positives))
        other = total / (2 * len(others)) if others else 0.0
        weight = np.array(
            [like] * (len(positives) + len(explicit)) + [other] * len(others), dtype=np.float64
        )
        from sklearn.linear_model import LogisticRegression  # slow to import: when needed

        model = LogisticRegression(C=1.0, solver="liblinear", dual=True, random_state=0)
        model.fit(x, y, sample_weight=weight)
        coef = model.coef_[0]
        keep = np.flatnonzero(coef)
        if len(keep) > KEEP_WEIGHTS:
            keep = keep[np.argsort(-np.abs(coef[keep]))[:KEEP_WEIGHTS]]
        keep.sort()
        weights = Weights(
            key,
            float(model.intercept_[0]),
            0.0,
            keep.astype(np.int32),
            coef[keep].astype(np.float16).astype(np.float32),  # as stored: same scores after
        )
        control = [i for i in self.control if i not in taken]
        if control:
            margins = self.margins(weights, control)
            threshold = float(np.percentile(list(margins.values()), CONTROL_PERCENTILE))
            weights = replace(weights, threshold=threshold)
        self.fitted[reader] = weights
        return weights

    # Scoring -------------------------------------------------------------------------------

    def _rows(self, paper_ids: Sequence[str]) -> sparse.csr_matrix:
        """The rows of these (known) papers; the last few sets asked for are kept (every
        reader asks for the same candidates)."""
        key = tuple(paper_ids)
        found = self._rows_cache.get(key)
        if found is None:
            found = self.matrix[[self.row[i] for i in paper_ids]]
            if len(self._rows_cache) >= 4:
                self._rows_cache.pop(next(iter(self._rows_cache)))
            self._rows_cache[key] = found
        return found

    def _margin_array(self, weights: Weights, rows: sparse.csr_matrix) -> np.ndarray:
        scratch = self._scratch  # a dense copy of the weights, cleared again after use
        scratch[weights.indices] = weights.values
        try:
            return np.asarray(rows @ scratch + weights.intercept)
        finally:
            scratch[weights.indices] = 0.0

    def margins(self, weights: Weights, paper_ids: Iterable[str]) -> dict[str, float]:
        """The model's margin (log-odds) for each known paper of `paper_ids`."""
        known = [i for i in paper_ids if i in self.row]
        if not known:
            return {}
        margin = self._margin_array(weights, self._rows(known))
        return dict(zip(known, margin.tolist(), strict=True))

    def for_reader(
        self,
        reader: str,
        liked: Iterable[str],
        disliked: Iterable[str] = (),
        exclude: Iterable[str] = (),
        top: int = DEFAULT_TOP,
        min_likes: int = DEFAULT_MIN_LIKES,
        candidates: Iterable[str] | None = None,
    ) -> list[Recommendation]:
        """Up to `top` papers the model says `reader` likely likes, best first (newer first on
        a tie). Never a liked, disliked or `exclude`d paper (sent before, or in the email's
        keyword sections). Empty below `min_likes` likes. `candidates`: the papers to choose
        from (default: every paper the recommender was given)."""
        liked = list(dict.fromkeys(liked))
        disliked = list(dict.fromkeys(disliked))
        if len(liked) < min_likes or top <= 0:
            return []
        weights = self.weights(reader, liked, disliked)
        if weights is None:
            return []
        skip = set(liked) | set(disliked) | set(exclude)
        pool = [i for i in (self.ids if candidates is None else candidates) if i in self.row]
        if not pool:
            return []
        margin = self._margin_array(weights, self._rows(pool))  # the same rows for everyone
        passing = np.flatnonzero(margin > weights.threshold)
        ranked = sorted(
            ((float(margin[n]), pool[n]) for n in passing if pool[n] not in skip),
            key=lambda item: (-item[0], -self._when[item[1]], item[1]),
        )[:top]
        return self._explain(weights, ranked, liked)

    def order(
        self, reader: str, liked: Iterable[str], disliked: Iterable[str], paper_ids: Sequence[str]
    ) -> list[str]:
        """`paper_ids` best first by the reader's model (newer first on a tie); as given when
        the reader has no model. Every id comes back: nothing is dropped, only moved."""
        liked = list(liked)
        weights = self.weights(reader, liked, disliked) if liked else None
        if weights is None:
            return list(paper_ids)
        scored = self.margins(weights, paper_ids)
        position = {pid: n for n, pid in enumerate(paper_ids)}

        def rank(pid: str) -> tuple[float, float, int]:
            when = self._when.get(pid, -math.inf)
            return (-scored.get(pid, -math.inf), -when, position[pid])

        return sorted(paper_ids, key=rank)

    def _explain(
        self, weights: Weights, ranked: Sequence[tuple[float, str]], liked: Sequence[str]
    ) -> list[Recommendation]:
        """Why each paper: the liked paper closest to it, the terms that weighed most."""
        if not ranked:
            return []
        rows = self.matrix[[self.row[pid] for _, pid in ranked]]
        known = [i for i in liked if i in self.row]
        similarity = (self.matrix[[self.row[i] for i in known]] @ rows.T).toarray()
        scratch = self._scratch
        scratch[weights.indices] = weights.values
        try:
            out = []
            for n, (margin, pid) in enumerate(ranked):
                column = similarity[:, n]
                closest = known[int(np.argmax(column))] if column.max() > 0 else None
                start, end = rows.indptr[n], rows.indptr[n + 1]
                terms = rows.indices[start:end]
                weight = rows.data[start:end] * scratch[terms]
                best = np.argsort(-weight)[:TOP_WORDS]
                words = tuple(self.vocabulary.terms[terms[j]] for j in best if weight[j] > 0)
                out.append(Recommendation(pid, margin, closest, words))
        finally:
            scratch[weights.indices] = 0.0
        return out
