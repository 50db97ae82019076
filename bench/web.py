"""Benchmark `digest serve` at many subscribers: python bench/web.py --subscribers 100000.

Writes a subscribers.csv of N rows (3 keywords each), starts the real `digest serve` (subprocess,
127.0.0.1) and times, over real HTTP with a kept-alive connection:

- a page view (GET /unsubscribe/<token>) of random subscribers;
- an edit (POST .../keywords/remove): one locked read-check-write of the 100,000-row file;
- the preferences page (GET /preferences/<token>) with its preview of last week's papers;
- the first page view after another process changed the file (the one request that parses
  the file again), and a CLI edit (`digest subscribers keywords add`, a whole process).

Prints one table (milliseconds: median, 95th percentile, max). Not a test: the figures depend on
the machine and its load (2 shared cores here).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))

import data  # noqa: E402
from standins import ArxivStandin  # noqa: E402

from digest.tokens import PREFERENCES_SALT, make_token  # noqa: E402  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"


def write_csv(path: Path, count: int, keywords: list[str]) -> None:
    """`count` subscribers with two research phrases of the papers and one of their own."""
    k = len(keywords)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,keywords,frequency\n")
        for i in range(count):
            first, second = keywords[i % k], keywords[(i * 7 + 1) % k]
            out.write(f"reader{i}@example.org,Reader {i},{first}; {second}; extra {i},daily\n")


def timed(conn: http.client.HTTPConnection, method: str, path: str, form: dict | None = None):
    body = urlencode(form).encode() if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"{method} {path[:40]}...: {response.status} {data[:300]!r}")
    return elapsed, data.decode()


def row(name: str, times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return (
        f"| {name} | {len(times)} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--edits", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(14)

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        home = Path(tmp)
        csv_path = home / "subscribers.csv"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env.update(
            DIGEST_SECRET=SECRET,
            DIGEST_DB=str(home / "digest.db"),
            DIGEST_SUBSCRIBERS=str(csv_path),
            DIGEST_FROM="digest@example.org",
            DIGEST_ARXIV_DELAY="0",
        )
        # The week's papers in the database, for the preferences page's preview: a dry run
        # for one subscriber fetches them from a loopback arXiv stand-in.
        papers = data.make_papers_list(data.base_papers(data.find_seeds(None))[0], 250, 120)
        keywords = [k for k, _ in data.usable_keywords(papers)]
        csv_path.write_text(f"email,keywords\nfirst@example.org,{keywords[0]}\n")
        with ArxivStandin(papers) as arxiv:
            subprocess.run(
                [sys.executable, "-m", "digest", "send", "--dry-run", "--out", str(home / "p")],
                env={**env, "DIGEST_ARXIV_URL": arxiv.url}, check=True, capture_output=True,
            )  # fmt: skip
        write_csv(csv_path, args.subscribers, keywords)
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        line = server.stdout.readline()
        startup = time.perf_counter() - started
        if not line.startswith("Serving on "):
            raise SystemExit(f"digest serve did not start: {line!r}")
        host, port = line.split()[-1].removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            people = rng.sample(range(args.subscribers), args.requests + args.edits)
            views = [
                timed(conn, "GET", f"/unsubscribe/{make_token(SECRET, f'reader{i}@example.org')}")
                for i in people[: args.requests]
            ]
            shown = zip(people[: args.requests], views, strict=True)
            assert all(f"reader{i}@example.org" in body for i, (_, body) in shown)
            edits = []
            for i in people[args.requests :]:
                token = make_token(SECRET, f"reader{i}@example.org")
                ms, body = timed(
                    conn, "POST", f"/unsubscribe/{token}/keywords/remove", {"keyword": f"extra {i}"}
                )
                assert "Removed" in body, body[:500]
                edits.append(ms)
            prefs = (
                []
                if os.environ.get("NOPREFS")
                else [
                    timed(
                        conn,
                        "GET",
                        "/preferences/"
                        + make_token(SECRET, f"reader{i}@example.org", PREFERENCES_SALT),
                    )[0]
                    for i in people[: args.requests // 2]
                ]
            )
            after = [
                timed(conn, "GET", f"/unsubscribe/{make_token(SECRET, f'reader{i}@example.org')}")[
                    0
                ]
                for i in people[args.requests :]
            ]
            # Another process changes the file: the next request parses it again.
            cli_started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "digest", "subscribers", "keywords", "add",
                 "reader1@example.org", "bench keyword"],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
            cli_ms = (time.perf_counter() - cli_started) * 1000
            cold, _ = timed(
                conn, "GET", f"/unsubscribe/{make_token(SECRET, 'reader2@example.org')}"
            )
            text = csv_path.read_text(encoding="utf-8")
            size = csv_path.stat().st_size
            removed = sum(f"extra {i}," in text for i in people[args.requests :])
            assert removed == 0, f"{removed} removed keywords still in the file"
        finally:
            conn.close()
            server.terminate()
            server.wait(timeout=30)

    print(
        f"digest serve, {args.subscribers:,} subscribers ({size / 1e6:.1f} MB file), real HTTP "
        f"on 127.0.0.1, one kept-alive connection\n"
    )
    print("| request | n | median ms | p95 ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    print(row("page view (GET /unsubscribe/<token>)", [ms for ms, _ in views]))
    print(row("edit (POST .../keywords/remove, locked write)", edits))
    print(row("preferences page with preview", prefs))
    print(row("page view after the edits", after))
    print(row("first page view after another process changed the file", [cold]))
    print(row("CLI edit, whole process (digest subscribers keywords add)", [cli_ms]))
    print(f"\nstartup until listening (parses the file once): {startup:.2f} s")
    print(f"papers in the database: {len(papers)}; preview keywords from {len(keywords)} phrases")


if __name__ == "__main__":
    main()
