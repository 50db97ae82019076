"""The whole `digest send` with likes against the same run without (issue 13's cost target).

Issue 13: "10,000 readers of whom half have 5-20 likes: the whole run stays within 1.3x of the
same run without likes". Two installations start from the same database (--history papers
published two months ago, what readers liked, stored as earlier runs would have left them) and
the same subscribers.csv (bench/data.py's narrow profile: 3-5 keywords each); in one of them the
first half of the readers have a `likes` column of 5-20 history papers of one or two seed
topics (a seed paper's variations), in the other the column is empty. Each installation then
has two days, each a real `digest send` in a subprocess, timed from process start to exit, to
an aiosmtpd sink in its own process (bench/smtp_sink.py) with the real `arxiv` client against
the loopback arXiv stand-in (tests/standins.py), DIGEST_PUBLIC_URL and DIGEST_SECRET set (the
feedback links on every paper, in both):

1. first: --papers new papers (published 1-5 days ago). With likes this is the first run
   that has them: the likes column synced, the vocabulary fitted, every reader's model fitted;
2. warm: --papers more (published in the last day; the first day's are still in the look-back
   window). Nobody's feedback changed: every model comes from the cache (checked: the bench
   counts the models fitted during the run and says so if any was).

Per repeat the four runs go first day (both installations), then warm (both), the order of the
two installations alternating between repeats. Printed per run: wall seconds (process start to
exit) and CPU seconds (the child's user + system), emails, papers recommended, models fitted,
arXiv requests and `runs.timings.recommend_s`; then, per day, the with/without ratio of the wall
and CPU times (median over repeats). The mail server gets the last CPU to itself, as in
bench/run.py (`--shared-cpus`: it shares). Not a test: the figures depend on the machine's load.

    .venv/bin/python bench/recommend_send.py --readers 10000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import data  # noqa: E402
from recommend_cost import as_paper  # noqa: E402
from report import machine  # noqa: E402
from run import ROOT, TimedArxiv, digest_send, installation  # noqa: E402
from smtp_sink import SmtpSink  # noqa: E402
from standins import Paper, paper_from_fixture  # noqa: E402

from digest import store  # noqa: E402

HISTORY_AGE = timedelta(days=61)  # the stored papers: long out of the 7-day look-back window


@dataclass
class Send:
    """One timed `digest send` and what its database says it did."""

    installation: str  # "likes" | "none"
    day: str  # "first" | "warm"
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    emails: int
    recommended: int  # papers in "Recommended for you" sections
    fitted: int  # readers' models fitted during the run
    arxiv_requests: int
    recommend_s: float


def dated(
    base: Sequence[dict[str, Any]],
    first: int,
    count: int,
    prefix: str,
    newest: datetime,
    hours: float,
) -> list[Paper]:
    """`count` papers (variations `first`.. of the seed papers), newest first, published over
    the `hours` before `newest`, with ids `prefix`.NNNNN."""
    step = timedelta(hours=hours / max(1, count))
    out = []
    for n in range(count):
        i = first + n
        varied = data.vary(base[i % len(base)], i // len(base), f"{prefix}.{10000 + n:05d}")
        out.append(paper_from_fixture(varied, newest - step * (n + 1)))
    return out


def likes_column(
    history: Sequence[Paper], base_count: int, readers: int, seed: int = 13
) -> list[str]:
    """For the first half of the readers, 5-20 history papers of one or two seed topics (a
    seed paper's variations), `;`-separated; empty for the others."""
    rng = random.Random(seed)
    by_topic: dict[int, list[str]] = {}
    for n, paper in enumerate(history):
        by_topic.setdefault(n % base_count, []).append(paper["id"].rsplit("v", 1)[0])
    out = []
    for _ in range(readers // 2):
        topics = rng.sample(sorted(by_topic), rng.randint(1, 2))
        pool = [pid for t in topics for pid in by_topic[t]]
        out.append(";".join(rng.sample(pool, min(len(pool), rng.randint(5, 20)))))
    return out + [""] * (readers - readers // 2)


def prepare_database(path: Path, history: Sequence[Paper]) -> None:
    """The database as earlier runs left it: the history papers stored (not timed)."""
    db = store.open_db(path)
    store.save_papers(db, [as_paper(p) for p in history])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def measured(where: Any, label: str, day: str) -> Send:
    """One timed `digest send` of `where`, and its figures from its database."""
    before = datetime.now(UTC).isoformat()
    started, ended, usage, stdout = digest_send(where)
    if " 0 failed" not in stdout:
        raise SystemExit(f"`digest send` failed to send some emails:\n{stdout[-2000:]}")
    with sqlite3.connect(where.db_path) as conn:
        run_id, requests, timings, sent = conn.execute(
            "SELECT id, arxiv_requests, timings, emails_sent FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        (recommended,) = conn.execute(
            "SELECT count(*) FROM emails, json_each(emails.recommended) WHERE run_id = ?",
            [run_id],
        ).fetchone()
        (fitted,) = conn.execute(
            "SELECT count(*) FROM reader_models WHERE fitted_at >= ?", [before]
        ).fetchone()
    return Send(
        label,
        day,
        ended - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        int(sent or 0),
        int(recommended),
        int(fitted),
        int(requests or 0),
        float(json.loads(timings or "{}").get("recommend_s", 0.0)),
    )


def one_repeat(
    args: argparse.Namespace,
    work: Path,
    repeat: int,
    sink: SmtpSink,
    rows: Sequence[dict[str, str]],
    likes: Sequence[str],
    days: Sequence[list[Paper]],
    history: Sequence[Paper],
) -> list[Send]:
    labels = ["none", "likes"] if repeat % 2 == 0 else ["likes", "none"]
    homes = {}
    with TimedArxiv(days[0]) as arxiv:
        for label in labels:
            home = work / f"{label}{repeat}"
            where = installation(home, arxiv, sink, args.connections)
            with_likes = [
                {**row, "likes": liked if label == "likes" else ""}
                for row, liked in zip(rows, likes, strict=True)
            ]
            data.write_csv(where.csv_path, with_likes)
            prepare_database(where.db_path, history)
            homes[label] = where
        sends = []
        for day, served in (("first", days[0]), ("warm", [*days[1], *days[0]])):
            arxiv.papers = [dict(p) for p in served]
            for label in labels:
                arxiv.reset()
                sink.reset()
                send = measured(homes[label], label, day)
                got = sink.stats()["messages"]
                if got != send.emails:
                    raise SystemExit(f"the sink got {got} emails, digest says {send.emails}")
                sends.append(send)
                print(
                    f"  repeat {repeat + 1} {day:5} {label:5}: {send.emails} emails in "
                    f"{send.wall_s:.1f} s wall, {send.cpu_s:.1f} s CPU, "
                    f"{send.recommended} recommended, {send.fitted} models fitted, "
                    f"{send.arxiv_requests} arXiv requests, recommend_s {send.recommend_s:.2f}",
                    flush=True,
                )
                if day == "warm" and label == "likes" and send.fitted:
                    print(f"  WARNING: {send.fitted} models fitted in the warm run", flush=True)
    if not args.keep:
        for where in homes.values():
            shutil.rmtree(where.home, ignore_errors=True)
    return sends


def table(sends: Sequence[Send], repeats: int) -> list[str]:
    out = [
        "| day | without likes: wall s | CPU s | with likes: wall s | CPU s | x wall | x CPU "
        "| emails (without / with) | recommended | models fitted | arXiv requests "
        "(without / with) | recommend_s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for day in ("first", "warm"):
        pairs = []
        for r in range(repeats):
            of = {s.installation: s for s in sends[4 * r : 4 * r + 4] if s.day == day}
            pairs.append((of["none"], of["likes"]))
        none = [p[0] for p in pairs]
        like = [p[1] for p in pairs]

        def med(values: Sequence[float]) -> float:
            return statistics.median(values)

        def span(values: Sequence[float]) -> str:
            return f" ({min(values):.2f}..{max(values):.2f})" if len(values) > 1 else ""

        wall_x = [b.wall_s / a.wall_s for a, b in pairs]
        cpu_x = [b.cpu_s / a.cpu_s for a, b in pairs]
        out.append(
            f"| {day} | {med([s.wall_s for s in none]):.1f} | {med([s.cpu_s for s in none]):.1f} "
            f"| {med([s.wall_s for s in like]):.1f} | {med([s.cpu_s for s in like]):.1f} "
            f"| {med(wall_x):.2f}{span(wall_x)} | {med(cpu_x):.2f}{span(cpu_x)} "
            f"| {none[0].emails} / {like[0].emails} | {like[0].recommended} "
            f"| {like[0].fitted} | {none[0].arxiv_requests} / {like[0].arxiv_requests} "
            f"| {med([s.recommend_s for s in like]):.2f} |"
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=10_000, help="subscribers (half like)")
    parser.add_argument("--papers", type=int, default=250, help="new papers each day")
    parser.add_argument("--history", type=int, default=5_000, help="papers already stored")
    parser.add_argument("--repeat", type=int, default=1, help="repeats; medians are shown")
    parser.add_argument("--connections", type=int, default=2, help="DIGEST_SMTP_CONNECTIONS")
    parser.add_argument("--seeds", type=Path, default=None, help="default: ../shared/seeds")
    parser.add_argument("--shared-cpus", action="store_true", help="the sink shares the CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    for name in ("readers", "papers", "history", "repeat", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = sys.argv if argv is None else ["bench/recommend_send.py", *argv]
    print("command: python " + shlex.join(command))
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine(ROOT):
        print(line)
    server_cpus = None
    cpus = sorted(os.sched_getaffinity(0))
    if not args.shared_cpus and len(cpus) >= 2:
        server_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by `digest send`
        print(f"CPUs: mail server on {sorted(server_cpus)}, everything else on {cpus[:-1]}")
    base, source = data.base_papers(data.find_seeds(args.seeds))
    now = datetime.now(UTC) - timedelta(minutes=5)
    first = dated(base, 0, args.papers, "2611", now - timedelta(days=1), 24 * 4)
    warm = dated(base, args.papers, args.papers, "2612", now, 24)
    history = dated(base, 2 * args.papers, args.history, "2609", now - HISTORY_AGE, 24 * 60)
    keywords = data.profile_keywords("narrow", first)
    rows = data.subscriber_rows(args.readers, keywords)
    likes = likes_column(history, len(base), args.readers)
    count = sum(len(x.split(";")) for x in likes if x)
    print(f"papers from {source}: {args.history} stored, {args.papers} new each day")
    print(
        f"readers: {args.readers} (narrow profile, {len(keywords)} keywords), "
        f"{args.readers // 2} with 5-20 likes ({count} likes)",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="digest-recsend-"))
    sends: list[Send] = []
    try:
        with SmtpSink(server_cpus) as sink:
            for r in range(args.repeat):
                sends += one_repeat(args, work, r, sink, rows, likes, [first, warm], history)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwhole `digest send`, {args.readers} readers, median of {args.repeat} repeat(s):\n")
    print("\n".join(table(sends, args.repeat)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average (1/5/15 min) at end: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
