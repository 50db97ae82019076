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
