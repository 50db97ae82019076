"""A run plans every subscriber with `matches.Matches` (each keyword's papers sorted once); it must
give exactly what `match.plan_digest`, the rule as written, gives, whatever the subscriber."""

from __future__ import annotations

import random

from test_render_equivalence import seed_papers

from digest.match import Hit, author_key, literal_pattern, literal_spans, plan_digest
from digest.matches import Matches
from digest.models import Paper, Subscriber

PHRASES = [
    "language model",
    "large language model",
    "reasoning",
    "benchmark",
    "agent",
    "reinforcement learning",
    "diffusion",
    "evaluation",
    "training",
    "no paper says this",
]


def _papers() -> list[Paper]:
    return seed_papers(lambda index: 7 * (index % 40))  # some papers appear together


def _hits(papers: list[Paper]) -> dict[str, dict[str, Hit]]:
    hits: dict[str, dict[str, Hit]] = {}
    for phrase in PHRASES:
        pattern = literal_pattern(phrase)
        found = {}
        for paper in papers:
            spans = literal_spans(pattern, paper.title), literal_spans(pattern, paper.abstract)
            if any(spans):
                found[paper.id] = spans
        hits[phrase] = found
    return hits


def test_planning_a_run_gives_what_the_rule_gives_for_any_subscriber() -> None:
    papers = _papers()
    by_id = {p.id: p for p in papers[:-3]}  # a few matched papers are not in the run's papers
    hits = _hits(papers)
    by_author: dict[str, list[str]] = {}
    for paper in papers[:30]:
        by_author.setdefault(author_key(paper.authors[0]), []).append(paper.id)
    matches = Matches(hits, by_id, by_author)
    rng = random.Random(11)
    times = sorted({p.published for p in papers})
    checked = fast = 0
    for n in range(600):
        keywords = rng.sample(PHRASES, rng.randint(1, 5))
        if n % 17 == 0:
            keywords.append(keywords[0].upper())  # the same keyword twice, spelled otherwise
        elif n % 5 == 0:
            keywords[0] = keywords[0].title()
        person = Subscriber(
            email=f"reader{n}@example.org",
            keywords=tuple(keywords),
            exclude=("agent",) if n % 11 == 0 else (),
            categories=("cs.CL",) if n % 13 == 0 else (),
            authors=(papers[n % 40].authors[0],) if n % 7 == 0 else (),
        )
        delivered = {p.id for p in rng.sample(papers, rng.randint(0, 20))} if n % 3 else set()
        since = rng.choice(times) if n % 4 == 0 else None
        expected = plan_digest(
            person, hits, by_id, delivered, "2026-11-22", by_author=by_author, since=since
        )
        got = matches.plan(person, delivered, "2026-11-22", since)
        assert got == expected, person
        checked += bool(expected.entries)
        fast += not (person.exclude or person.categories or person.authors or n % 17 == 0)
    assert checked > 500 and fast > 300
    # Subscribers who share a paper with the same tags share its entry (building keys on it).
    a = matches.plan(Subscriber("a@example.org", ("reasoning",)), set(), "2026-11-22")
    b = matches.plan(Subscriber("b@example.org", ("reasoning", "zzz")), set(), "2026-11-22")
    assert a.entries and all(x is y for x, y in zip(a.entries, b.entries, strict=True))


def test_readers_of_the_same_keywords_in_any_order_get_the_rule_and_share_entries() -> None:
    """Many readers follow the same few keyword lists, each in their own order and spelling,
    with daily or weekly windows and papers already delivered: each gets what the rule gives,
    and every (paper, tags, authors) is one `Entry` object across all of them (building finds
    a reader's version of a block by the entry), also for readers the rule plans itself."""
    papers = _papers()
    by_id = {p.id: p for p in papers[:-3]}
    hits = _hits(papers)
    by_author = {author_key(papers[0].authors[0]): [papers[0].id]}
    matches = Matches(hits, by_id, by_author)
    rng = random.Random(5)
    times = sorted({p.published for p in papers})
    lists = [rng.sample(PHRASES, rng.randint(2, 5)) for _ in range(12)]
    lists.append(["reasoning", "not a phrase of the run", "agent"])  # no hits at all
    seen: dict[tuple[object, ...], object] = {}
    planned = []
    for n in range(400):
        keywords = rng.sample(lists[n % len(lists)], len(lists[n % len(lists)]))  # shuffled
        if n % 3 == 0:  # their heading spelled otherwise, or (the rule's path) followed twice
            keywords[rng.randrange(len(keywords))] = keywords[0].title()
        person = Subscriber(
            email=f"reader{n}@example.org",
            keywords=tuple(keywords),
            exclude=("benchmark",) if n % 9 == 0 else (),  # planned by the rule, same memo
        )
        delivered = {p.id for p in rng.sample(papers, rng.randint(1, 30))} if n % 2 else set()
        since = rng.choice([*times[: len(times) // 2], None]) if n % 5 else None
        expected = plan_digest(
            person, hits, by_id, delivered, "2026-11-22", by_author=by_author, since=since
        )
        got = matches.plan(person, delivered, "2026-11-22", since)
        assert got == expected, person
        planned.append((person, delivered, since, got))
        for entry in got.entries:
            key = (entry.paper.id, entry.keywords, entry.authors)
            assert seen.setdefault(key, entry) is entry, key
    assert sum(len(d.entries) for *_, d in planned) > 4000
    assert sum(1 for e in seen if len(e[1]) > 1) > 200  # many papers with several tags
    matches.forget()  # what was made is let go of, and made again the same
    for person, delivered, since, digest in planned[:50]:
        assert matches.plan(person, delivered, "2026-11-22", since) == digest
