"""Fetching for recommendations (issue 13), against the loopback arXiv stand-in over HTTP with a
real SQLite database: liked papers the database lacks come by `id_list`, batched for all
readers; the newest papers of the liked papers' categories come with the keyword queries. The
number of requests depends on the ids and categories, never on the number of readers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standins import ArxivStandin, Paper, base_id, load_papers, recent

from digest import feedback_store, store
from digest.fetch import ID_BATCH, build_queries, fetch, fetch_ids
from digest.models import Paper as DigestPaper

HOUR = timedelta(hours=1)


def readers_likes(papers: list[Paper], readers: int) -> dict[str, list[str]]:
    """Each reader likes one paper of each primary category of the fixture (different
    readers, mostly different papers) and one more picked at random (deterministic)."""
    rng = random.Random(readers)
    by_category: dict[str, list[str]] = {}
    for paper in papers:
        by_category.setdefault(paper["primary_category"], []).append(base_id(paper["id"]))
    likes = {}
    for n in range(readers):
        chosen = [ids[(n * 7) % len(ids)] for _, ids in sorted(by_category.items())]
        chosen.append(base_id(rng.choice(papers)["id"]))
        likes[f"reader{n}@example.org"] = list(dict.fromkeys(chosen))
    return likes


def fetch_for(
    tmp_path: Path, arxiv: ArxivStandin, likes: dict[str, list[str]]
) -> tuple[int, int, set[str], list[str]]:
    """(id requests, category requests, ids fetched, categories) for these readers' likes."""
    db = store.open_db(tmp_path / f"{len(likes)}.db")
    feedback_store.sync_csv_likes(db, likes)
    missing = feedback_store.liked_ids_missing(db)
    by_id = fetch_ids(missing, url=arxiv.url, delay=0, timeout=5)
    store.save_papers(db, by_id.papers)
    categories = feedback_store.liked_categories(db)
    since = datetime.now(UTC) - 24 * HOUR
    before = len(arxiv.requests)
    newest = fetch(
        [], url=arxiv.url, delay=0, timeout=5, since=since, categories=categories, page_size=5
    )
    assert len(arxiv.requests) - before == newest.requests
    fetched = {p.id for p in by_id.papers}
    assert all(p.published >= since for p in newest.papers)
    in_categories = {p.id for p in newest.papers}
    expected = {
        base_id(p["id"])
        for p in arxiv.papers
        if p["published"] >= since and set(p["categories"]) & set(categories)
    }
    assert in_categories == expected
    return by_id.requests, newest.requests, fetched, categories


def test_requests_depend_on_ids_and_categories_not_readers(
    tmp_path: Path, arxiv: ArxivStandin
) -> None:
    few = readers_likes(arxiv.papers, 2)
    many = readers_likes(arxiv.papers, 40)
    few_ids, few_cats, few_fetched, few_categories = fetch_for(tmp_path, arxiv, few)
    assert len(few_fetched) <= 12
    many_ids, many_cats, many_fetched, many_categories = fetch_for(tmp_path, arxiv, many)

    assert few_fetched == {i for ids in few.values() for i in ids}
    assert many_fetched == {i for ids in many.values() for i in ids}
    assert few_ids == 1
    unique = len(many_fetched)
    assert unique > ID_BATCH // 2  # the 40 readers like many different papers...
    assert many_ids == -(-unique // ID_BATCH) <= 2  # ...asked for in one or two requests
    # The category query: as many requests (pages of 5) for 40 readers as for 2, who like
    # papers of the same categories.
    assert few_categories == many_categories == ["cs.AI", "cs.CL", "cs.CV", "cs.LG", "stat.ML"]
    day = sum(1 for p in arxiv.papers if p["published"] >= datetime.now(UTC) - 24 * HOUR)
    assert few_cats == many_cats == day // 5 + 1
    # Every id_list request named only well-formed ids, at most ID_BATCH of them.
    lists = [r.params["id_list"] for r in arxiv.requests if r.params.get("id_list")]
    assert len(lists) == few_ids + many_ids
    assert all(0 < len(ids.split(",")) <= ID_BATCH for ids in lists)


def test_unknown_ids_come_back_as_nothing_and_malformed_ones_are_never_sent(
    arxiv: ArxivStandin,
) -> None:
    real = base_id(arxiv.papers[0]["id"])
    result = fetch_ids(
        [real, "9912.99999", 'x") OR all:"y', real], url=arxiv.url, delay=0, timeout=5
    )
    assert [p.id for p in result.papers] == [real]
    assert result.requests == 1
    assert arxiv.requests[-1].params["id_list"] == ",".join(sorted([real, "9912.99999"]))
    assert fetch_ids([], url=arxiv.url, delay=0, timeout=5).requests == 0


def test_category_clauses_are_packed_and_never_query_syntax() -> None:
    queries = build_queries(
        ["reward model"], categories=["cs.CL", "cs.CL", "cs.*", "cs.LG) OR (ti:x", "hep-th"]
    )
    assert queries == ['ti:"reward model" OR abs:"reward model" OR cat:cs.CL OR cat:hep-th']
    many = build_queries([], max_chars=40, categories=[f"cs.A{c}" for c in "BCDEFGHIJK"])
    assert all(len(q) <= 40 for q in many) and len(many) == 4
    assert " OR ".join(many).count("cat:") == 10


@pytest.mark.parametrize("kind", ["like", "dislike"])
def test_feedback_papers_known_to_the_database_are_not_fetched(tmp_path: Path, kind: str) -> None:
    db = store.open_db(tmp_path / "digest.db")
    paper = as_paper(recent(load_papers())[0])
    store.save_papers(db, [paper])
    feedback_store.record(db, "ada@example.org", paper.id, kind, "web")
    feedback_store.record(db, "ada@example.org", "2401.00001", kind, "web")
    assert feedback_store.liked_ids_missing(db) == ["2401.00001"]
    assert feedback_store.liked_categories(db) == (
        [paper.primary_category] if kind == "like" else []
    )


def as_paper(d: Paper) -> DigestPaper:
    """A stand-in paper as the digest's Paper, through the real arxiv client's parsing."""
    with ArxivStandin([d]) as standin:
        [paper] = fetch_ids([base_id(d["id"])], url=standin.url, delay=0, timeout=5).papers
    return paper
