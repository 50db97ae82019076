"""What recommendations cost a run (issue 13): N readers, half of them with 5-20 likes.

On a real SQLite database in a temporary folder: --history papers already in the database (what
readers liked, what the vocabulary is fitted from) and --papers new papers, varied from the real
seed papers as bench/run.py makes them. Each reader with likes likes papers of one or two seed
topics (a seed paper's variations), and has a keyword section of ~20 of today's papers.

Three runs, each what the send path will do per run (`feedback_store.prepare`, per reader
`recommend` over today's papers and `order` of their section, `save`):

1. cold: first run with likes: the vocabulary is fitted and every reader's model too;
2. warm: the next day, nobody's feedback changed: every model comes from the cache;
3. churn: 10% of the readers with likes gave one more opinion: only they are refitted.

Timed in CPU seconds of this process (`time.process_time`): the work is single-threaded and
CPU-bound, so on an idle machine that is its wall time, and it is not inflated when other
processes share the 2 cores; the wall time of the whole script is printed too.

Printed: CPU seconds per stage, milliseconds per reader to fit and to score, and the run's extra
time against --baseline (the seconds of the same run without likes, from bench/RESULTS.md:
`bench/run.py --subscribers 10000 --papers 250`).

    .venv/bin/python bench/recommend_cost.py --readers 10000

This times the recommender's stages in this process only. The issue's target (the whole run
within 1.3x of the same run without likes) is measured on the real whole `digest send`, process
start to exit, with likes against without, first run and warm: bench/recommend_send.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data

from digest import feedback_store, store
from digest.models import Paper, split_version


def as_paper(d: dict) -> Paper:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=250, help="today's new papers")
    parser.add_argument("--history", type=int, default=5_000, help="papers already stored")
    parser.add_argument("--baseline", type=float, default=34.0, help="seconds without likes")
    parser.add_argument("--seeds", type=Path, default=None)
    args = parser.parse_args(argv)
    base, source = data.base_papers(data.find_seeds(args.seeds))
    rng = random.Random(13)
    now = datetime.now(UTC)
    # History: older papers (ids 2611.1xxxx from bench/data), today's: newer ids.
    history = [as_paper(p) for p in data.make_papers_list(base, args.history, 24 * 60)]
    shift = timedelta(days=61)
    history = [
        Paper(**{**p.__dict__, "published": p.published - shift, "updated": p.updated - shift})
        for p in history
    ]
    today_dicts = data.make_papers_list(base, args.papers, 24)
    today = [as_paper({**d, "id": f"2612.{20000 + n:05d}v1"}) for n, d in enumerate(today_dicts)]
    today_ids = [p.id for p in today]
    by_topic: dict[int, list[str]] = {}
    for n, paper in enumerate(history):
        by_topic.setdefault(n % len(base), []).append(paper.id)
    readers = [f"reader{n:06d}@example.org" for n in range(args.readers)]
    likes: dict[str, list[str]] = {}
    for key in readers[: args.readers // 2]:
        topics = rng.sample(sorted(by_topic), rng.randint(1, 2))
        pool = [pid for t in topics for pid in by_topic[t]]
        likes[key] = rng.sample(pool, min(len(pool), rng.randint(5, 20)))
    sections = {key: rng.sample(today_ids, 20) for key in readers}
    print(f"papers: {source}; {len(history)} stored + {len(today)} today")
    print(
        f"readers: {len(readers)}, {len(likes)} with 5-20 likes "
        f"({sum(len(v) for v in likes.values())} likes)"
    )

    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        db = store.open_db(Path(folder) / "digest.db")
        store.save_papers(db, history + today)
        results = []
        for name, day in (("cold", 0), ("warm", 1), ("churn", 2)):
            if name == "churn":
                for key in list(likes)[::10]:
                    feedback_store.record(db, key, rng.choice(today_ids), "dislike", "web")
            started = time.process_time()
            prepared = feedback_store.prepare(db, likes, readers, today, now + timedelta(days=day))
            prepare_s = time.process_time() - started
            started = time.process_time()
            shown = 0
            for key in readers:
                picks = prepared.recommend(key, today_ids, exclude=sections[key])
                prepared.order(key, sections[key])
                shown += len(picks)
            readers_s = time.process_time() - started
            started = time.process_time()
            fitted = prepared.save(db)
            save_s = time.process_time() - started
            total = prepare_s + readers_s + save_s
            results.append((name, prepare_s, readers_s, save_s, total, fitted, shown))
        size = db.execute("SELECT sum(length(indices) + length(weights)) FROM reader_models")
        stored = size.fetchone()[0] or 0

    print()
    print(
        "| run | prepare (s) | recommend + order, all readers (s) | save (s) | total (s) "
        "| models fitted | ms per reader with likes | recommendations | x the run without likes |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, prepare_s, readers_s, save_s, total, fitted, shown in results:
        per = 1000 * (prepare_s + readers_s + save_s) / max(1, len(likes))
        ratio = (args.baseline + total) / args.baseline
        print(
            f"| {name} | {prepare_s:.2f} | {readers_s:.2f} | {save_s:.2f} | {total:.2f} | "
            f"{fitted} | {per:.2f} | {shown} | {ratio:.2f} |"
        )
    cold, warm = results[0], results[1]
    fit_ms = 1000 * (cold[2] - warm[2]) / max(1, cold[5])
    score_ms = 1000 * warm[2] / max(1, len(likes))
    print()
    print(
        f"fit: {fit_ms:.2f} ms per reader (cold minus warm); score (recommend + order, "
        f"cached model): {score_ms:.2f} ms per reader with likes"
    )
    print(f"wall time of the three runs: {time.perf_counter() - wall:.1f} s")
    print(
        f"stored weights: {stored / 1e6:.1f} MB for {len(likes)} readers "
        f"({stored / max(1, len(likes)) / 1000:.1f} KB each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
