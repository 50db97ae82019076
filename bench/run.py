"""Benchmark the whole `digest send` with real parts: python bench/run.py --profile broad ...

For each workload profile (bench/data.py: "narrow", today's 3-5 of ~120 research phrases per
subscriber; "broad", 3-5 of 20 common phrases, emails at the HTML budget) and each receiver
("aiosmtpd": bench/smtp_sink.py in its own process; "postfix": the machine's real Postfix on a
loopback port with the discard transport, bench/postfix.py), each repeat:

1. a loopback arXiv stand-in (tests/standins.py) serves the papers; the real `digest send`
   runs in a subprocess on a fresh database and is timed from process start to exit (fetch,
   matching, building, sending, everything): emails / that time is "digest msg/s";
2. the bare client (bench/bare.py: plain smtplib.SMTP.sendmail) resends exactly the messages
   the aiosmtpd sink captured from `digest send` (same bytes, sender and recipients) to the
   same receiver over the same number of connections: "bare msg/s". Postfix keeps no copy, so
   against Postfix the bare client sends the messages captured from the same profile's
   aiosmtpd run of the same repeat (run first; with `--receiver postfix` alone, an untimed
   capture run against the aiosmtpd sink is made first). Only Message-ID and Date differ
   between the two sets;
3. the ratio is digest msg/s / bare msg/s, both measured in the same repeat.

Before the timed runs, a `digest send --dry-run` of --sample subscribers checks the profile
(papers per email, HTML size against the budget, the compact list). The build figures (a
sample of digests built the reference way and ours, in this process) are the only part that
imports digest's internals: bench/internals.py. The mail server gets the last CPU to itself
(`--shared-cpus`: it shares). The tables show medians of --repeat runs. Not a test: the figures
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

import bare  # noqa: E402
import data  # noqa: E402
import internals  # noqa: E402
from helpers import SENDER, Digest  # noqa: E402
from postfix_receiver import PostfixReceiver  # noqa: E402
from report import detail_table, dry_run_line, machine, main_table  # noqa: E402
from smtp_sink import SmtpSink, read_spool  # noqa: E402
from standins import ArxivStandin  # noqa: E402

PUBLIC_URL = "https://digest.example.org"
SECRET = "bench-secret-not-for-production-0123456789"
WINDOW_HOURS = 24 * 5  # papers published within the last 5 days: new for the 7-day look-back
RECEIVERS = ("aiosmtpd", "postfix")
_SENT = re.compile(r"(\d+) emails sent, (\d+) failed")


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

    profile: str
    receiver: str
    subscribers: int
    emails: int = 0
    papers_per_email: float = 0.0
    avg_email_kb: float = 0.0
    wall_s: float = 0.0
    whole_per_s: float = 0.0  # emails / (process exit - process start)
    after_fetch_per_s: float = 0.0  # emails / (process exit - last arXiv answer)
    bare_per_s: float = 0.0  # of the runs before and after digest's (mean time per message)
    bare_before_per_s: float = 0.0  # 0: no run before (aiosmtpd: digest's run captures them)
    bare_after_per_s: float = 0.0
    bare_messages: int = 0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    arxiv_requests: int = 0
    fetch_s: float = 0.0
    match_s: float = 0.0
    match_source: str = ""
    server_per_s: float = 0.0
    smtp_connections_seen: int = 0
    timings: dict[str, Any] | None = None
    build: internals.BuildFigures | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.whole_per_s / self.bare_per_s if self.bare_per_s else 0.0


# --- one run ---------------------------------------------------------------------------------


DKIM_ENV: dict[str, str] = {}  # --dkim: DIGEST_DKIM_KEY and DIGEST_DKIM_SELECTOR


def dkim_key(work: Path) -> dict[str, str]:
    """A fresh 2048-bit RSA key in `work` (as an operator would make one) and the settings
    that make `digest send` sign every email with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = work / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"DIGEST_DKIM_KEY": str(path), "DIGEST_DKIM_SELECTOR": "bench"}


def installation(home: Path, arxiv: TimedArxiv, receiver: Any, connections: int) -> Digest:
    home.mkdir(parents=True)
    extra = {
        "DIGEST_SMTP_CONNECTIONS": str(connections),
        "DIGEST_PUBLIC_URL": PUBLIC_URL,
        "DIGEST_SECRET": SECRET,
        **DKIM_ENV,
    }
    return Digest(home, arxiv, receiver, extra)  # type: ignore[arg-type]


def digest_send(where: Digest, *args: str) -> tuple[float, float, Any, str]:
    """Run `digest send *args` to the end: (start, exit (epoch seconds), rusage, stdout)."""
    out, err = (where.home / "send.out").open("wb"), (where.home / "send.err").open("wb")
    with out, err:
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "send", *args],
            cwd=where.home,
            env=where.env(),
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.time()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (where.home / "send.err").read_text(errors="replace")[-2000:]
        command = shlex.join(["digest", "send", *args])
        raise SystemExit(f"`{command}` exited with {code} in {where.home}:\n{tail}")
    return started, ended, usage, (where.home / "send.out").read_text(errors="replace")


def run_once(
    where: Digest,
    rows: Sequence[dict[str, str]],
    profile: str,
    receiver: Any,
    capture: Path | None,
) -> Run:
    """One timed `digest send` to `receiver` on a fresh database (captured to `capture`)."""
    arxiv: TimedArxiv = where.arxiv  # type: ignore[assignment]
    data.write_csv(where.csv_path, rows)
    run = Run(profile=profile, receiver=receiver.name, subscribers=len(rows))
    arxiv.reset()
    receiver.reset(capture)
    started, ended, usage, stdout = digest_send(where)
    run.wall_s = ended - started
    run.peak_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    run.cpu_s = usage.ru_utime + usage.ru_stime
    sent = _SENT.search(stdout)
    if sent is None or int(sent.group(2)):
        raise SystemExit(f"`digest send` did not send everything:\n{stdout[-2000:]}")
    got = receiver.stats(int(sent.group(1)))
    run.emails = got["messages"]
    if run.emails != int(sent.group(1)):
        raise SystemExit(f"{receiver.name} got {run.emails} emails, digest says {sent.group(1)}")
    run.smtp_connections_seen = got["connections"]
    run.avg_email_kb = got["bytes"] / run.emails / 1024 if run.emails else 0.0
    run.whole_per_s = run.emails / run.wall_s
    if got["first"] and got["last"] and run.emails > 1 and got["last"] > got["first"]:
        run.server_per_s = (run.emails - 1) / (got["last"] - got["first"])
    if arxiv.last and ended > arxiv.last:
        run.after_fetch_per_s = run.emails / (ended - arxiv.last)
    record, deliveries = read_database(where.db_path)
    run.arxiv_requests = int(record.get("arxiv_requests") or 0)
    if record.get("timings"):
        run.timings = json.loads(str(record["timings"]))
    t = run.timings or {}
    run.fetch_s = float(t.get("fetch_s", 0.0))
    if "match_s" in t:
        run.match_s, run.match_source = float(t["match_s"]), "runs.timings"
    if deliveries is not None and run.emails:
        run.papers_per_email = deliveries / run.emails
    return run


def read_database(path: Path) -> tuple[dict[str, Any], int | None]:
    """The last `runs` row and how many papers were recorded as delivered (the user's file)."""
    with sqlite3.connect(path) as conn:
        columns = [c[1] for c in conn.execute("PRAGMA table_info(runs)")]
        row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        try:
            (deliveries,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        except sqlite3.OperationalError:
            deliveries = None
    return dict(zip(columns, row, strict=True)), deliveries


def dry_run_check(home: Path, arxiv: TimedArxiv, sink: SmtpSink, rows: Sequence[Any]) -> str:
    """`digest send --dry-run` for `rows`: papers per email, HTML size, compact list."""
    where = installation(home, arxiv, sink, 2)
    data.write_csv(where.csv_path, rows)
    digest_send(where, "--dry-run", "--out", "previews")
    budget = int(where.env().get("DIGEST_HTML_BUDGET", "95000"))
    return dry_run_line(home / "previews", budget, len(rows))


# --- a profile: every receiver, every repeat ---------------------------------------------------


def bench_profile(
    args: argparse.Namespace,
    profile: str,
    work: Path,
    receivers: dict[str, Any],
    sink: SmtpSink,
) -> list[Run]:
    count = args.papers or data.PROFILES[profile][0]
    papers = data.make_papers_list(BASE, count, WINDOW_HOURS)
    keywords = data.profile_keywords(profile, papers)
    rows = data.subscriber_rows(args.subscribers, keywords)
    print(
        f"\nprofile {profile}: {data.PROFILES[profile][1]}; {len(papers)} papers published "
        f"within the last {WINDOW_HOURS} h, {len(keywords)} keywords, "
        f"{args.subscribers} subscribers",
        flush=True,
    )
    runs: list[Run] = []
    with TimedArxiv(papers) as arxiv:
        if args.sample:
            line = dry_run_check(work / f"{profile}-dry", arxiv, sink, rows[: args.sample])
            print(line, flush=True)
        for r in range(args.repeat):
            spool = work / f"{profile}-{r}.spool"
            if "aiosmtpd" not in receivers:  # Postfix keeps nothing: capture from the sink
                where = installation(work / f"{profile}-capture{r}", arxiv, sink, args.connections)
                run_once(where, rows, profile, sink, spool)
                print(f"  capture run {r + 1} against aiosmtpd (not in the tables)", flush=True)
            for name in (n for n in RECEIVERS if n in receivers):
                home = work / f"{profile}-{name}{r}"
                where = installation(home, arxiv, receivers[name], args.connections)
                run = receiver_run(args, where, rows, profile, receivers[name], spool)
                if args.build and name == min(receivers):  # once a repeat: same digests
                    add_build_figures(args, run, where)
                runs.append(run)
                print(
                    f"  run {r + 1}/{args.repeat} {name}: {run.emails} emails in "
                    f"{run.wall_s:.1f} s ({run.whole_per_s:.0f}/s), bare {run.bare_per_s:.0f}/s"
                    f"{_sides(run)}, ratio {run.ratio:.2f}",
                    flush=True,
                )
                if not args.keep:
                    shutil.rmtree(where.home, ignore_errors=True)
            spool.unlink(missing_ok=True)
    return runs


def receiver_run(
    args: argparse.Namespace,
    where: Digest,
    rows: Sequence[dict[str, str]],
    profile: str,
    receiver: Any,
    spool: Path,
) -> Run:
    """`digest send` to `receiver`, then the bare client resending `spool` to it. When the
    messages are known before (Postfix: from the capture run), the bare client also runs just
    before `digest send`, and its rate is that of the two runs' mean time: this shared
    machine's speed drifts by 2x within minutes, and a bare run on one side only compares
    digest with another machine."""
    capture = spool if receiver.name == "aiosmtpd" else None
    before = 0.0
    if capture is None:
        before, _ = _bare(args, receiver, spool)
        receiver.wait_idle()
    run = run_once(where, rows, profile, receiver, capture)
    if DKIM_ENV and capture is not None:
        _check_signed(capture)
    receiver.wait_idle()
    after, run.bare_messages = _bare(args, receiver, spool)
    run.bare_per_s = 2 / (1 / before + 1 / after) if before and after else after
    run.bare_before_per_s, run.bare_after_per_s = before, after
    return run


def _check_signed(spool: Path) -> None:
    """--dkim: the messages the sink took carry a DKIM signature (the first one checked)."""
    for _, _, offset, size in read_spool(spool):
        with spool.open("rb") as handle:
            handle.seek(offset)
            head = handle.read(min(size, 4096))
        if not head.startswith(b"DKIM-Signature:"):
            raise SystemExit(f"--dkim: the emails {spool} holds are not DKIM-signed")
        return


def _sides(run: Run) -> str:
    if not run.bare_before_per_s:
        return ""
    return f" ({run.bare_before_per_s:.0f} before, {run.bare_after_per_s:.0f} after)"


def _bare(args: argparse.Namespace, receiver: Any, spool: Path) -> tuple[float, int]:
    """The bare client resending `spool` to `receiver`: (messages/s, messages)."""
    receiver.wait_idle()
    copy = spool.with_name("bare.spool")
    # aiosmtpd stores the bare client's copy too, as it did digest's: the same work
    receiver.reset(copy if receiver.name == "aiosmtpd" else None)
    try:
        got = bare.resend(spool, receiver, args.connections)
        if receiver.name == "aiosmtpd" and copy.stat().st_size != spool.stat().st_size:
            raise SystemExit("the bare client's messages differ from those captured")
    finally:
        receiver.reset()
        copy.unlink(missing_ok=True)
    return got


def add_build_figures(args: argparse.Namespace, run: Run, where: Digest) -> None:
    env = where.env()
    run.build = internals.build_figures(
        env, where.db_path, where.csv_path, args.sample, SENDER, PUBLIC_URL, SECRET
    )
    if not run.match_source and run.build.match_replay_s:
        run.match_s = run.build.match_replay_s
        run.match_source = "bench replay of matching + planning"


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        action="append",
        choices=sorted(data.PROFILES),
        help="workload (repeatable; default narrow)",
    )
    parser.add_argument(
        "--receiver",
        action="append",
        choices=RECEIVERS,
        help="mail server (repeatable; default aiosmtpd)",
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="N (default 1000)")
    parser.add_argument(
        "--papers", type=int, default=None, help="new papers (default: narrow 250, broad 156)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs; the tables show medians")
    parser.add_argument(
        "--connections", type=int, default=2, help="DIGEST_SMTP_CONNECTIONS and bare client's"
    )
    parser.add_argument(
        "--sample", type=int, default=200, help="digests for the dry run and the build figures"
    )
    parser.add_argument(
        "--no-build", dest="build", action="store_false", help="skip the build figures"
    )
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
    parser.add_argument(
        "--dkim",
        action="store_true",
        help="sign every email (DIGEST_DKIM_KEY: a fresh 2048-bit RSA key); the bare client "
        "resends the same signed messages",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args(argv)
    for name in ("subscribers", "repeat", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.papers is not None and args.papers < 1:
        parser.error("--papers must be at least 1")
    args.profile = list(dict.fromkeys(args.profile or ["narrow"]))
    args.receiver = list(dict.fromkeys(args.receiver or ["aiosmtpd"]))
    return args


BASE: list[dict[str, Any]] = []


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("command: python " + shlex.join(sys.argv if argv is None else ["bench/run.py", *argv]))
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine(ROOT) + internals.features():
        print(line)

    server_cpus = None
    cpus = sorted(os.sched_getaffinity(0))
    if not args.shared_cpus and len(cpus) >= 2:
        server_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by `digest send`
        print(f"CPUs: mail server on {sorted(server_cpus)}, everything else on {cpus[:-1]}")
    else:
        print(f"CPUs: mail server and everything else share {cpus}")

    base, source = data.base_papers(data.find_seeds(args.seeds))
    BASE[:] = base
    print(f"papers from {source}")
    sys.stdout.flush()

    work = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    runs: list[Run] = []
    try:
        if args.dkim:
            DKIM_ENV.update(dkim_key(work))
            print("DKIM: every email signed (2048-bit RSA, relaxed/relaxed, selector bench)")
        with ExitStack() as stack:
            sink = stack.enter_context(SmtpSink(server_cpus))
            if args.requests_check:
                return requests_check(work, sink, args.connections)
            receivers: dict[str, Any] = {}
            if "aiosmtpd" in args.receiver:
                receivers["aiosmtpd"] = sink
            if "postfix" in args.receiver:
                receivers["postfix"] = stack.enter_context(PostfixReceiver(server_cpus))
                for note in receivers["postfix"].notes:
                    print(note)
            for profile in args.profile:
                runs += bench_profile(args, profile, work, receivers, sink)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n`digest send`, {args.subscribers} subscribers, {args.connections} SMTP "
        f"connection(s), median of {args.repeat} run(s) (min .. max in brackets):\n"
    )
    print("\n".join(main_table(runs)))
    print("\nDetails (medians):\n")
    print("\n".join(detail_table(runs)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average (1/5/15 min) at end: {load}")
    for run in runs:
        if run.timings and run is runs[0]:
            print(f"runs.timings of the first run: {json.dumps(run.timings)}")
        build = run.build
        if build is not None:
            for note in build.notes:
                print(f"note: {note}")
            if build.equal_renders != build.sample:
                print(f"WARNING: only {build.equal_renders}/{build.sample} renders equal")
    if args.json:
        dump = [dict(vars(r), build=vars(r.build) if r.build else None) for r in runs]
        args.json.write_text(json.dumps(dump, indent=2, default=str))
    return 0


def requests_check(work: Path, sink: SmtpSink, connections: int) -> int:
    """The same keyword set followed by 10,000 subscribers and by 10: arXiv requests of each."""
    papers = data.make_papers_list(BASE, data.PROFILES["narrow"][0], WINDOW_HOURS)
    keywords = data.profile_keywords("narrow", papers)
    many = data.subscriber_rows(10_000, keywords)
    followed = list(dict.fromkeys(k for row in many for k in row["keywords"].split("; ")))
    few = data.covering_rows(10, followed)
    counts = []
    with TimedArxiv(papers) as arxiv:
        for label, rows in (("10", few), ("10,000", many)):
            where = installation(work / label.replace(",", ""), arxiv, sink, connections)
            run = run_once(where, rows, "narrow", sink, None)
            counts.append(run.arxiv_requests)
            print(
                f"{label} subscribers ({len(followed)} distinct keywords): "
                f"{run.arxiv_requests} arXiv requests (stand-in saw {len(arxiv.requests)}), "
                f"{run.emails} emails, {run.wall_s:.1f} s",
                flush=True,
            )
    same = "identical" if counts[0] == counts[1] else "DIFFERENT"
    print(f"arXiv requests at 10 and at 10,000 subscribers: {counts[0]} and {counts[1]} ({same})")
    return 0 if counts[0] == counts[1] else 1


if __name__ == "__main__":
    sys.exit(main())
