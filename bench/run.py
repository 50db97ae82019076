"""Benchmark `digest send` with real parts: python bench/run.py --subscribers N --papers M.

Builds M papers from the real seed papers and N subscribers (3-5 research phrases each), starts
a loopback arXiv stand-in (tests/standins.py) and a loopback aiosmtpd server in its own process
(bench/smtp_sink.py), runs the real `digest send` in a subprocess on a fresh database, and prints
one table (each figure the median of --repeat runs):

- arXiv requests, fetch time, match time, build ms per email, send messages/s, wall time, peak
  memory, average email size;
- build ratio: for a sample of the run's digests, the straightforward path (render_reference +
  build_message(...).as_bytes()) against ours (one render.Renderer per run + message_bytes);
- send ratio: the whole `digest send` after its fetch, in messages/s, against a bare smtplib
  client pushing the same number of pre-built messages to the same server over the same number
  of connections.

`--requests-check` instead runs 10 and 10,000 subscribers following the same keyword set and
prints both arXiv request counts. Not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

import data  # noqa: E402
from helpers import SENDER, Digest  # noqa: E402
from smtp_sink import SmtpSink  # noqa: E402
from standins import ArxivStandin  # noqa: E402

from digest import mailer, pipeline, render, store, subscribers  # noqa: E402
from digest.config import Settings  # noqa: E402
from digest.match import plan_digest  # noqa: E402
from digest.tokens import unsubscribe_url  # noqa: E402

PUBLIC_URL = "https://digest.example.org"
SECRET = "bench-secret-not-for-production-0123456789"
WINDOW_HOURS = 24 * 5  # papers published within the last 5 days: new for the 7-day look-back


class TimedArxiv(ArxivStandin):
    """The arXiv stand-in, noting when the first request came and the last answer was made."""

    first: float | None = None
    last: float | None = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.first = self.last = None

    def _record(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        self.first = self.first or time.time()
        return super()._record(path, params, headers)

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        answer = super()._answer(path, params)
        self.last = time.time()
        return answer


@dataclass
class Run:
    """What one `digest send` did and what the bench measured around it."""

    subscribers: int
    emails: int = 0
    arxiv_requests: int = 0
    standin_requests: int = 0
    fetch_s: float = 0.0
    fetch_source: str = ""
    match_s: float = 0.0
    match_source: str = ""
    build_ms_ours: float = 0.0
    build_ms_reference: float = 0.0
    build_source: str = ""
    renderer_setup_ms: float = 0.0
    equal_renders: int = 0
    sample: int = 0
    papers_per_email: float = 0.0
    send_per_s_ours: float = 0.0
    send_source: str = ""
    send_per_s_reference: float = 0.0
    server_per_s: float = 0.0
    smtp_connections_seen: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    avg_email_kb: float = 0.0
    timings: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def build_ratio(self) -> float:
        return self.build_ms_reference / self.build_ms_ours if self.build_ms_ours else 0.0

    @property
    def send_ratio(self) -> float:
        ref = self.send_per_s_reference
        return self.send_per_s_ours / ref if ref else 0.0


# --- the machine and what is merged ----------------------------------------------------------


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"machine: {platform.node()}, {cpu}, nproc {usable} (of {os.cpu_count()}), RAM {mem}",
        f"load average (1/5/15 min) at start: {load}",
        f"python {platform.python_version()}, digest at {commit or '?'} ({ROOT})",
    ]


def message_bytes_fn() -> Callable[..., bytes] | None:
    return getattr(mailer, "message_bytes", None)


def renderer_is_reference() -> bool:
    """True while render.Renderer.render only calls render_reference (fast one not merged)."""
    code = render.Renderer.render.__code__
    return set(code.co_names) <= {"render_reference", "sender", "budget"}


def features() -> list[str]:
    lines = []
    if message_bytes_fn() is None:
        lines.append(
            "mailer.message_bytes: ABSENT -> 'ours' builds with build_message(...).as_bytes()"
        )
    else:
        lines.append("mailer.message_bytes: present -> 'ours' builds with it")
    if renderer_is_reference():
        lines.append(
            "render.Renderer: only calls render_reference (fast renderer NOT merged) -> "
            "build ratio ~1x expected"
        )
    else:
        lines.append("render.Renderer: its own implementation (checked equal to reference)")
    connections = "present" if hasattr(Settings(), "smtp_connections") else "ABSENT"
    lines.append(f"Settings.smtp_connections: {connections} (DIGEST_SMTP_CONNECTIONS is passed)")
    return lines


# --- one run ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def run_once(
    home: Path,
    rows: Sequence[dict[str, str]],
    arxiv: TimedArxiv,
    sink: SmtpSink,
    connections: int,
    sample: int,
    ratios: bool = True,
) -> Run:
    home.mkdir(parents=True)
    extra = {
        "DIGEST_SMTP_CONNECTIONS": str(connections),
        "DIGEST_PUBLIC_URL": PUBLIC_URL,
        "DIGEST_SECRET": SECRET,
    }
    installation = Digest(home, arxiv, sink, extra)  # type: ignore[arg-type]
    data.write_csv(installation.csv_path, rows)
    env = installation.env()
    run = Run(subscribers=len(rows))
    arxiv.reset()
    sink.reset()

    started = time.time()
    out, err = (home / "send.out").open("wb"), (home / "send.err").open("wb")
    with out, err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "send"], cwd=home, env=env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    ended = time.time()
    run.wall_s = ended - started
    run.peak_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    run.cpu_s = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = (home / "send.err").read_text(errors="replace")[-2000:]
        raise SystemExit(f"`digest send` exited with {proc.returncode} in {home}:\n{tail}")

    got = sink.stats()
    run.emails = got["messages"]
    run.smtp_connections_seen = got["connections"]
    run.avg_email_kb = got["bytes"] / got["messages"] / 1024 if got["messages"] else 0.0
    if got["messages"] > 1 and got["last"] > got["first"]:
        run.server_per_s = (got["messages"] - 1) / (got["last"] - got["first"])
    row = installation.query("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
    columns = [c[1] for c in installation.query("PRAGMA table_info(runs)")]
    record = dict(zip(columns, row[0], strict=True))
    run.arxiv_requests = int(record.get("arxiv_requests") or 0)
    run.standin_requests = len(arxiv.requests)
    if record.get("timings"):
        run.timings = json.loads(str(record["timings"]))
    t = run.timings or {}

    if "fetch_s" in t:
        run.fetch_s, run.fetch_source = float(t["fetch_s"]), "runs.timings"
    elif arxiv.first and arxiv.last:
        run.fetch_s, run.fetch_source = arxiv.last - arxiv.first, "arXiv stand-in"
    if arxiv.last and run.emails:  # the whole pipeline after the fetch, timings or not
        run.send_per_s_ours = run.emails / (ended - arxiv.last)
        run.send_source = "emails / (end - last arXiv answer)"
    if "peak_rss_mb" in t:
        run.notes.append(f"timings peak_rss_mb {t['peak_rss_mb']} (table: wait4 ru_maxrss)")

    settings = Settings.from_env(
        env, db_path=installation.db_path, subscribers_path=installation.csv_path
    )
    digests, replay_s = plan_all(settings, sample)
    if "match_s" in t:
        run.match_s, run.match_source = float(t["match_s"]), "runs.timings"
    else:
        run.match_s, run.match_source = replay_s, "bench replay of match_keywords + plan_digest"
    run.papers_per_email = median([len(d.entries) for d in digests])
    if ratios:
        built = measure_build(run, settings, digests)
        if "build_ms_median" in t:
            run.notes.append(f"timings build_ms_median {t['build_ms_median']} (table: bench)")
        run.send_per_s_reference = bare_smtp(sink, built, run.emails, connections)
    return run


def plan_all(settings: Settings, sample: int) -> tuple[list[Any], float]:
    """Every subscriber's digest as the run planned it (matched against the papers in the
    database, nothing counted as delivered), timed; returns an evenly spread sample of them."""
    people, _ = subscribers.load(settings.subscribers_path)
    db = store.open_db(settings.db_path)
    now = datetime.now(UTC)
    since = now - timedelta(days=settings.lookback_days)
    day = now.astimezone(settings.tz).date().isoformat()
    every = max(1, len(people) // sample) if sample else len(people) + 1
    kept = []
    started = time.perf_counter()
    hits, papers = pipeline.match_keywords(db, pipeline.distinct_keywords(people), since)
    for i, person in enumerate(people):
        digest = plan_digest(person, hits, papers, set(), day, since=since)
        if i % every == 0 and digest.entries and len(kept) < sample:
            kept.append(digest)
    return kept, time.perf_counter() - started


def measure_build(run: Run, settings: Settings, digests: Sequence[Any]) -> list[bytes]:
    """Median ms per email of the reference path and ours on the same digests; ours' bytes."""
    now = datetime.now(UTC)
    budget = settings.html_budget
    fast_bytes = message_bytes_fn()
    setup = time.perf_counter()
    renderer = render.Renderer(sender=SENDER, budget=budget)
    # As `digest send` does for each batch of subscribers: finish their paper blocks first.
    prepare = getattr(renderer, "prepare", None)
    if prepare is not None:
        prepare(digests)
    run.renderer_setup_ms = (time.perf_counter() - setup) * 1000
    ours_ms, reference_ms, built = [], [], []
    for i, digest in enumerate(digests):
        person = digest.subscriber
        link = unsubscribe_url(PUBLIC_URL, SECRET, person.key)
        message_id = mailer.new_message_id(SENDER)
        headers = {"sender": SENDER, "to": person.email, "message_id": message_id, "when": now}

        def reference(digest: Any = digest, link: str = link, headers: Any = headers) -> Any:
            r = render.render_reference(digest, sender=SENDER, budget=budget, unsubscribe_url=link)
            return r, mailer.build_message(r, unsubscribe_url=link, **headers).as_bytes()

        def ours(digest: Any = digest, link: str = link, headers: Any = headers) -> Any:
            r = renderer.render(digest, link)
            if fast_bytes is not None:
                return r, fast_bytes(r, unsubscribe_url=link, **headers)
            return r, mailer.build_message(r, unsubscribe_url=link, **headers).as_bytes()

        order = [(reference, reference_ms), (ours, ours_ms)]
        results = []
        for fn, times in order if i % 2 else order[::-1]:
            started = time.perf_counter()
            results.append(fn())
            times.append((time.perf_counter() - started) * 1000)
        (r1, _), (r2, b2) = results if i % 2 else results[::-1]
        run.equal_renders += r1 == r2
        built.append(b2)
    run.sample = len(digests)
    run.build_ms_ours, run.build_ms_reference = median(ours_ms), median(reference_ms)
    run.build_source = "message_bytes" if fast_bytes else "build_message().as_bytes()"
    return built


def bare_smtp(sink: SmtpSink, messages: Sequence[bytes], count: int, connections: int) -> float:
    """messages/s of plain smtplib pushing `count` of `messages` (cycled) over `connections`."""
    if not messages or not count:
        return 0.0
    sink.reset()
    errors: list[BaseException] = []

    def push(share: range) -> None:
        try:
            with smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
                for n in share:
                    to = f"reader{n:06d}@example.org"
                    client.sendmail("digest@example.org", [to], messages[n % len(messages)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=push, args=(range(c, count, connections),))
        for c in range(connections)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"the bare smtplib client failed: {errors[0]!r}")
    delivered = sink.stats()["messages"]
    if delivered != count:
        raise SystemExit(f"the bare smtplib client: the server got {delivered} of {count}")
    return count / elapsed


# --- output ----------------------------------------------------------------------------------


def spread(runs: Sequence[Run], value: Callable[[Run], float], fmt: str) -> tuple[str, str]:
    values = [value(r) for r in runs]
    mid = format(median(values), fmt)
    if len(values) < 2:
        return mid, ""
    return mid, f"{format(min(values), fmt)} .. {format(max(values), fmt)}"


def table(runs: Sequence[Run], connections: int) -> list[str]:
    first = runs[0]
    rows: list[tuple[str, Callable[[Run], float], str, str, str]] = [
        ("emails sent", lambda r: r.emails, ".0f", "", "all with something new"),
        ("arXiv requests", lambda r: r.arxiv_requests, ".0f", "", "same at 10 and 10,000"),
        ("fetch time (s)", lambda r: r.fetch_s, ".2f", "", first.fetch_source),
        ("match time (s)", lambda r: r.match_s, ".3f", "< 1 s at 10,000", first.match_source),
        ("papers per email (sample median)", lambda r: r.papers_per_email, ".0f", "", ""),
        (
            "build ms per email, ours (median)",
            lambda r: r.build_ms_ours,
            ".2f",
            "<= 2 ms",
            first.build_source,
        ),
        (
            "finishing paper blocks, ms per email (mean)",
            lambda r: r.renderer_setup_ms / r.sample if r.sample else 0.0,
            ".2f",
            "",
            f"Renderer.prepare for the {first.sample}-email sample, once",
        ),
        (
            "build ms per email, reference (median)",
            lambda r: r.build_ms_reference,
            ".2f",
            "",
            "render_reference + build_message().as_bytes()",
        ),
        (
            "build ratio reference/ours",
            lambda r: r.build_ratio,
            ".1f",
            ">= 10x",
            f"{first.equal_renders}/{first.sample} renders equal to the reference",
        ),
        ("send messages/s, digest send", lambda r: r.send_per_s_ours, ".0f", "", first.send_source),
        (
            "send messages/s, bare smtplib",
            lambda r: r.send_per_s_reference,
            ".0f",
            "",
            f"{connections} connection(s), same messages",
        ),
        ("send ratio ours/bare", lambda r: r.send_ratio, ".2f", ">= 0.8", ""),
        (
            "server-side messages/s during digest send",
            lambda r: r.server_per_s,
            ".0f",
            "",
            f"{first.smtp_connections_seen} SMTP connection(s) used by digest send",
        ),
        ("CPU time of digest send (s)", lambda r: r.cpu_s, ".1f", "", "user + system, all threads"),
        ("total wall time (s)", lambda r: r.wall_s, ".1f", "", "the `digest send` process"),
        (
            "peak memory (MB)",
            lambda r: r.peak_rss_mb,
            ".0f",
            "< 500 MB at 100,000",
            "max RSS of the `digest send` process",
        ),
        ("average email size (KB)", lambda r: r.avg_email_kb, ".1f", "", "as the server got it"),
    ]
    if first.timings is not None:  # what `digest send` measured itself, when it records it
        for key, name, fmt in (
            ("build_ms_median", "build ms per email inside digest send", ".2f"),
            ("send_s", "send stage (s) inside digest send", ".1f"),
            ("messages_per_s", "send messages/s inside digest send", ".0f"),
        ):
            if key in first.timings:
                rows.append(
                    (
                        name,
                        lambda r, k=key: float((r.timings or {}).get(k, 0)),
                        fmt,
                        "",
                        f"runs.timings {key}",
                    )
                )
    out = [
        "| measure | median | min .. max | target | how |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, value, fmt, target, how in rows:
        mid, span = spread(runs, value, fmt)
        out.append(f"| {name} | {mid} | {span} | {target} | {how} |")
    return out


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--papers", type=int, default=250, help="M new papers (default 250)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the table shows medians")
    parser.add_argument(
        "--connections", type=int, default=2, help="DIGEST_SMTP_CONNECTIONS and bare client's"
    )
    parser.add_argument("--sample", type=int, default=200, help="digests timed for the build")
    parser.add_argument("--seeds", type=Path, default=None, help="default: ../shared/seeds")
    parser.add_argument(
        "--requests-check",
        action="store_true",
        help="run 10 and 10,000 subscribers with the same keywords; print both request counts",
    )
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="let the mail server share every CPU with digest (default: the server gets the "
        "last CPU to itself and digest, the bare client and the stand-in the others, as when "
        "the mail server is another machine)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args(argv)
    for name in ("subscribers", "papers", "repeat", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("command: python " + shlex.join(sys.argv if argv is None else ["bench/run.py", *argv]))
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine() + features():
        print(line)

    server_cpus = None
    cpus = sorted(os.sched_getaffinity(0))
    if not args.shared_cpus and len(cpus) >= 2:
        server_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by `digest send`
        print(f"CPUs: mail server on {sorted(server_cpus)}, everything else on {cpus[:-1]}")
    else:
        print(f"CPUs: mail server and everything else share {cpus}")

    seeds = data.find_seeds(args.seeds)
    base, source = data.base_papers(seeds)
    papers = data.make_papers_list(base, args.papers, WINDOW_HOURS)
    keywords = [k for k, _ in data.usable_keywords(papers)]
    print(f"papers: {len(papers)} from {source}, published within the last {WINDOW_HOURS} h")
    print(f"keywords: {len(keywords)} research phrases found in those papers")
    sys.stdout.flush()

    work = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    runs: list[Run] = []
    try:
        with TimedArxiv(papers) as arxiv, SmtpSink(server_cpus) as sink:
            if args.requests_check:
                return requests_check(work, keywords, arxiv, sink, args.connections)
            rows = data.subscriber_rows(args.subscribers, keywords)
            for r in range(args.repeat):
                run = run_once(work / f"run{r}", rows, arxiv, sink, args.connections, args.sample)
                runs.append(run)
                print(
                    f"run {r + 1}/{args.repeat}: {run.emails} emails in {run.wall_s:.1f} s, "
                    f"build ratio {run.build_ratio:.1f}x, send ratio {run.send_ratio:.2f}",
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)

    print()
    print(
        f"`digest send`, {args.subscribers} subscribers, {args.papers} papers, "
        f"{args.connections} SMTP connection(s), median of {args.repeat} run(s):"
    )
    print()
    print("\n".join(table(runs, args.connections)))
    print()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1/5/15 min) at end: {load}")
    for run in runs[:1]:
        print(
            f"timings column: {'present' if run.timings is not None else 'ABSENT'}"
            + (f" {json.dumps(run.timings)}" if run.timings else "")
        )
        for note in run.notes:
            print(f"note: {note}")
        if run.equal_renders != run.sample:
            print(f"WARNING: only {run.equal_renders}/{run.sample} renders equal the reference")
    if args.json:
        dump = [dict(vars(r), build_ratio=r.build_ratio, send_ratio=r.send_ratio) for r in runs]
        args.json.write_text(json.dumps(dump, indent=2, default=str))
    return 0


def requests_check(
    work: Path, keywords: Sequence[str], arxiv: TimedArxiv, sink: SmtpSink, connections: int
) -> int:
    """The same keyword set followed by 10,000 subscribers and by 10: arXiv requests of each."""
    many = data.subscriber_rows(10_000, keywords)
    followed = list(dict.fromkeys(k for row in many for k in row["keywords"].split("; ")))
    few = data.covering_rows(10, followed)
    counts = []
    for label, rows in (("10", few), ("10,000", many)):
        run = run_once(work / label.replace(",", ""), rows, arxiv, sink, connections, 0, False)
        counts.append(run.arxiv_requests)
        print(
            f"{label} subscribers ({len(followed)} distinct keywords): "
            f"{run.arxiv_requests} arXiv requests (stand-in saw {run.standin_requests}), "
            f"{run.emails} emails, {run.wall_s:.1f} s",
            flush=True,
        )
    same = "identical" if counts[0] == counts[1] else "DIFFERENT"
    print(f"arXiv requests at 10 and at 10,000 subscribers: {counts[0]} and {counts[1]} ({same})")
    return 0 if counts[0] == counts[1] else 1


if __name__ == "__main__":
    sys.exit(main())
