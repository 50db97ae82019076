"""The recommender (issue 13) on the real seed papers (tests/fixtures/papers.json) and a real
SQLite database: what it recommends, why, the order inside a section, and what is cached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standins import Paper as PaperDict
from standins import base_id, load_papers, recent

from digest import feedback_store, recommend_cache, store
from digest.models import Paper, split_version
from digest.recommend import Recommender, Vocabulary

NOW = datetime.now(UTC).replace(microsecond=0)
ADA = "ada@example.org"


def as_paper(d: PaperDict) -> Paper:
    paper_id, version = split_version(d["id"])
    return Paper(
        id=paper_id,
        version=version,
        title=d["title"],
        authors=tuple(d["authors"]),
        abstract=d["abstract"],
        comment=d.get("comment", ""),
        categories=tuple(d["categories"]),
        primary_category=d["primary_category"],
        published=d["published"],
        updated=d["updated"],
        abs_url=f"https://arxiv.org/abs/{paper_id}",
        pdf_url=f"https://arxiv.org/pdf/{paper_id}",
    )


# Papers of another field: nothing a reader of reward-model papers should be recommended.
BIOLOGY = [
    ("Protein folding kinetics of small domains", "We measure folding rates of proteins."),
    ("Gene expression in yeast under heat stress", "Transcription changes in yeast cells."),
    ("Coral reef biodiversity surveys", "Counting fish species on coral reefs over ten years."),
    ("Enzyme catalysis at low temperature", "Cold adapted enzymes and their kinetics."),
    ("Bird migration routes from GPS tags", "Tracking migratory birds across continents."),
]


def biology_papers() -> list[Paper]:
    return [
        Paper(
            id=f"2612.{90000 + n}",
            version=1,
            title=title,
            authors=("A. Biologist",),
            abstract=abstract,
            comment="",
            categories=("q-bio.BM",),
            primary_category="q-bio.BM",
            published=NOW - timedelta(hours=n + 1),
            updated=NOW - timedelta(hours=n + 1),
            abs_url="",
            pdf_url="",
        )
        for n, (title, abstract) in enumerate(BIOLOGY)
    ]


@pytest.fixture(scope="module")
def seeds() -> tuple[list[Paper], set[str], set[str]]:
    """(papers newest first, ids of reward-model-only papers, ids of reasoning-only papers)."""
    dicts = recent(load_papers(), now=NOW)
    papers = [as_paper(d) for d in dicts]
    reward = {base_id(d["id"]) for d in dicts if d["keywords"] == ["Reward Model"]}
    reasoning = {base_id(d["id"]) for d in dicts if d["keywords"] == ["Reasoning"]}
    return papers, reward, reasoning


def split(seeds: tuple[list[Paper], set[str], set[str]]) -> tuple[list[str], list[str]]:
    """Five older reward-model papers liked; the newer half of the papers are today's."""
    papers, reward, _ = seeds
    today = [p.id for p in papers[: len(papers) // 2]]
    liked = [p.id for p in papers[len(papers) // 2 :] if p.id in reward][:5]
    return liked, today


def test_recommends_papers_like_the_liked_ones_and_says_why(seeds) -> None:
    papers, reward, reasoning = seeds
    liked, today = split(seeds)
    vocabulary = Vocabulary.fit(papers + biology_papers(), store.now_iso(NOW))
    recommender = Recommender(papers + biology_papers(), vocabulary)
    excluded = today[:3]
    picks = recommender.for_reader(ADA, liked, exclude=excluded, candidates=today, top=5)
    assert len(picks) == 5
    assert not {r.paper_id for r in picks} & (set(liked) | set(excluded))
    hits = [r for r in picks if r.paper_id in reward]
    assert len(hits) >= 4, [r.paper_id for r in picks]
    assert [r.score for r in picks] == sorted((r.score for r in picks), reverse=True)
    titles = {p.id: p.title for p in papers}
    for pick in picks:
        assert pick.closest_liked_id in liked
        assert pick.top_words and all(isinstance(w, str) for w in pick.top_words)
        assert pick.why(titles).startswith(f'Close to "{titles[pick.closest_liked_id]}"')
    assert any("reward" in " ".join(r.top_words) for r in picks)
    # Fewer likes than min_likes: nothing. Only other-field papers to pick from: nothing.
    assert recommender.for_reader(ADA, liked[:2], candidates=today, min_likes=3) == []
    biology = [p.id for p in biology_papers()]
    assert recommender.for_reader(ADA, liked, candidates=biology) == []
    # Reward-model papers rank above reasoning-only papers for this reader, on average.
    ranked = recommender.order(ADA, liked, [], today)
    assert sorted(ranked) == sorted(today)  # nothing dropped
    rank = {pid: n for n, pid in enumerate(ranked)}
    mean_rank = [
        sum(rank[i] for i in group) / len(group)
        for group in ([i for i in today if i in reward], [i for i in today if i in reasoning])
    ]
    assert mean_rank[0] < mean_rank[1] - 5, mean_rank


def test_not_for_me_moves_papers_down_and_no_model_keeps_the_order(seeds) -> None:
    papers, reward, _ = seeds
    liked, today = split(seeds)
    vocabulary = Vocabulary.fit(papers, store.now_iso(NOW))
    recommender = Recommender(papers, vocabulary)
    section = [i for i in today if i in reward]
    before = recommender.order(ADA, liked, [], section)
    top = before[0]
    after = recommender.order("ada-2", liked, [top], section)
    assert after.index(top) > before.index(top)
    assert sorted(after) == sorted(section)
    assert recommender.order(ADA, [], [], section) == section


def test_models_are_cached_between_runs_and_refitted_when_feedback_changes(
    seeds,
    tmp_path: Path,
) -> None:
    papers, _, _ = seeds
    liked, today = split(seeds)
    db = store.open_db(tmp_path / "digest.db")
    store.save_papers(db, papers)
    grace = "grace@example.org"
    feedback_store.sync_csv_likes(db, {ADA: liked, grace: liked[:4]})
    candidates = [p for p in papers if p.id in today]

    def run(now: datetime) -> tuple[feedback_store.RunRecommender, list, list]:
        prepared = feedback_store.prepare(
            db, {ADA: liked, grace: liked[:4]}, [ADA, grace], candidates, now
        )
        picks = [prepared.recommend(key, today) for key in (ADA, grace)]
        return prepared, picks, prepared.order(ADA, today)

    first, picks, order = run(NOW)
    assert first.save(db) == 2
    assert picks[0] and picks[1]
    version = recommend_cache.load_vocabulary(db).version

    second, again, order_again = run(NOW + timedelta(days=1))
    assert second.recommender is not None and second.recommender.fitted == {}  # all cached
    assert set(second.recommender.new_vectors) <= set(today)  # liked papers' vectors stored
    assert (again, order_again) == (picks, order)

    feedback_store.record(db, ADA, today[0], "dislike", "web")
    third, _, _ = run(NOW + timedelta(days=2))
    assert set(third.recommender.fitted) == {ADA}  # only the reader whose feedback changed
    third.save(db)

    # After VOCABULARY_MAX_AGE the vocabulary is refitted and every model with it.
    store.save_papers(db, biology_papers())  # new papers, new words
    later = NOW + recommend_cache.VOCABULARY_MAX_AGE + timedelta(days=1)
    fourth, _, _ = run(later)
    assert recommend_cache.load_vocabulary(db).version != version
    assert recommend_cache.load_vocabulary(db).created_at == store.now_iso(later)
    assert set(fourth.recommender.fitted) == {ADA, grace}


def test_a_reader_without_likes_changes_nothing(seeds, tmp_path: Path) -> None:
    papers, _, _ = seeds
    _, today = split(seeds)
    db = store.open_db(tmp_path / "digest.db")
    store.save_papers(db, papers)
    prepared = feedback_store.prepare(db, {}, [ADA], papers, NOW)
    assert prepared.recommender is None  # nobody likes anything: no vocabulary, no vectors
    assert prepared.recommend(ADA, today) == []
    assert prepared.order(ADA, today) == today
    assert recommend_cache.load_vocabulary(db) is None
