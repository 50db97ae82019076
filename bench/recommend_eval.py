"""Offline evaluation of the recommender on the real seed papers (issue 13).

The seeds are "Daily Papers" READMEs: for each keyword ("Reward Model", "Reasoning") the newest
papers arXiv's search found, with their dates. One setup per (keyword K, day D) where K has at
least --min-likes papers on D:

- likes: K's papers of day D (what a reader who follows that topic liked);
- pool: every README paper of the next --days days (both keywords), plus the papers of the
  trending-papers page (003_*.txt, other days' papers: the rest of a day's arXiv);
- truth: the pool papers a K reader wants: those in K's section of the READMEs, and trending
  papers whose title or abstract has K's phrase (what arXiv's search for K finds).

Printed: precision of the recommender's top 5 against the truth, and the expected precision of
a random pick of 5 from the same pool, per setup and on average. The recommender is the real
one (`digest.recommend`): a vocabulary fitted on the papers up to day D plus the trending page,
its background sample as negatives.

    .venv/bin/python bench/recommend_eval.py
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data

from digest.models import Paper, split_version
from digest.recommend import Recommender, Vocabulary


def to_paper(d: dict, when: datetime) -> Paper:
    paper_id, version = split_version(d["id"])
    return Paper(
        id=paper_id,
        version=version,
        title=d["title"],
        authors=tuple(d.get("authors", ())),
        abstract=d["abstract"],
        comment=d.get("comment", ""),
        categories=tuple(d.get("categories", ())),
        primary_category=d.get("primary_category", ""),
        published=when,
        updated=when,
        abs_url=f"https://arxiv.org/abs/{paper_id}",
        pdf_url=f"https://arxiv.org/pdf/{paper_id}",
    )


def phrase_pattern(keyword: str) -> re.Pattern[str]:
    """K's phrase with English endings, as arXiv's (stemmed) search finds it."""
    words = [re.escape(w) for w in keyword.lower().split()]
    return re.compile(r"\b" + r"\W+".join(w + r"\w*" for w in words) + r"\b", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, help="default: ../shared/seeds")
    parser.add_argument("--days", type=int, default=3, help="days after D in the pool")
    parser.add_argument("--min-likes", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    seeds = data.find_seeds(args.seeds)
    if seeds is None:
        raise SystemExit("no seeds folder (../shared/seeds) found")
    readme = data.make_papers.build(seeds)
    trending_rows = []
    for path in seeds.glob("003_*.txt"):
        trending_rows += data.trending_seed(path.read_text(encoding="utf-8"))
    titles = {p["title"].casefold() for p in readme}
    trending_rows = [r for r in trending_rows if r["title"].casefold() not in titles]
    old = datetime(2025, 1, 1, tzinfo=UTC)
    trending = [
        to_paper({"id": f"2511.{90000 + i:05d}v1", **row}, old)
        for i, row in enumerate(trending_rows)
    ]
    papers = {
        p["id"]: to_paper(p, datetime.fromisoformat(p["date"] + "T12:00:00+00:00")) for p in readme
    }
    by_id = {split_version(i)[0]: p for i, p in papers.items()}
    days = sorted({p["date"] for p in readme})
    keywords = sorted({k for p in readme for k in p["keywords"]})

    print(f"seeds: {seeds} ({len(readme)} README papers, {len(trending)} trending-page papers)")
    print(f"pool: README papers of the {args.days} days after D + the trending-page papers")
    print(
        f"{'keyword':<14} {'day D':<11} {'likes':>5} {'pool':>5} {'truth':>5} "
        f"{'p@' + str(args.top):>6} {'random':>7}"
    )
    results: list[tuple[str, float, float]] = []
    for keyword in keywords:
        pattern = phrase_pattern(keyword)
        for day in days:
            liked = [
                split_version(p["id"])[0]
                for p in readme
                if p["date"] == day and keyword in p["keywords"]
            ]
            if len(liked) < args.min_likes:
                continue
            start = date.fromisoformat(day)
            window = {(start + timedelta(days=n)).isoformat() for n in range(1, args.days + 1)}
            pool_rows = [p for p in readme if p["date"] in window]
            pool = [by_id[split_version(p["id"])[0]] for p in pool_rows] + trending
            truth = {split_version(p["id"])[0] for p in pool_rows if keyword in p["keywords"]}
            truth |= {p.id for p in trending if pattern.search(f"{p.title} {p.abstract}")}
            if len(truth) < args.top:
                continue
            # The vocabulary a run on day D+1 would have: papers up to D and the other papers.
            known = [by_id[split_version(p["id"])[0]] for p in readme if p["date"] <= day]
            vocabulary = Vocabulary.fit(known + trending, created_at=day)
            recommender = Recommender([*known, *pool], vocabulary)
            picks = recommender.for_reader(
                "reader",
                liked,
                top=args.top,
                min_likes=args.min_likes,
                candidates=[p.id for p in pool],
            )
            hits = sum(1 for r in picks if r.paper_id in truth)
            precision = hits / args.top
            random_pick = len(truth) / len(pool)
            results.append((keyword, precision, random_pick))
            print(
                f"{keyword:<14} {day:<11} {len(liked):>5} {len(pool):>5} {len(truth):>5} "
                f"{precision:>6.2f} {random_pick:>7.2f}"
            )
    if not results:
        print("no setup: too few papers")
        return 1
    for keyword in [*keywords, None]:
        mine = [r for r in results if keyword is None or r[0] == keyword]
        if mine:
            print(
                f"mean over {len(mine)} setups{' of ' + keyword if keyword else ''}: "
                f"precision@{args.top} {mean(r[1] for r in mine):.2f}, "
                f"random pick {mean(r[2] for r in mine):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
