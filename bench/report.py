"""The benchmark's printed output: the machine, the dry-run check and the two tables."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_ABS = re.compile(r"https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})")
_COMPACT = '<ul class="compact"'  # how the rendered HTML starts its compact list


def machine(root: Path) -> list[str]:
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
    usable = len(os.sched_getaffinity(0))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"machine: {platform.node()}, {cpu}, nproc {usable} (of {os.cpu_count()}), RAM {mem}",
        f"load average (1/5/15 min) at start: {load}",
        f"python {platform.python_version()}, digest at {commit or '?'} ({root})",
    ]


def dry_run_line(previews: Path, budget: int, subscribers: int) -> str:
    """What the previews of a dry run show: papers per email, HTML size, compact lists."""
    papers, sizes, compact = [], [], 0
    for text in sorted(previews.glob("*.txt")):
        papers.append(len(set(_ABS.findall(text.read_text(encoding="utf-8")))))
        html = text.with_suffix(".html").read_bytes()
        sizes.append(len(html))
        compact += _COMPACT.encode() in html
    if not papers:
        return f"dry run of {subscribers} subscribers: no previews written"
    papers.sort()
    tenth = papers[len(papers) // 10], papers[len(papers) * 9 // 10]
    return (
        f"dry run of the first {subscribers} subscribers ({len(papers)} previews): papers per "
        f"email mean {statistics.mean(papers):.0f} (10th..90th percentile {tenth[0]}..{tenth[1]}, "
        f"min {papers[0]}, max {papers[-1]}); HTML mean {statistics.mean(sizes) / 1024:.0f} KB, "
        f"max {max(sizes) / 1024:.0f} KB (budget {budget / 1024:.0f} KB); compact list in "
        f"{compact}/{len(papers)}"
    )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _groups(runs: Sequence[Any]) -> list[tuple[str, str, list[Any]]]:
    keys = list(dict.fromkeys((r.profile, r.receiver) for r in runs))
    return [(p, n, [r for r in runs if (r.profile, r.receiver) == (p, n)]) for p, n in keys]


def _cell(runs: Sequence[Any], value: Callable[[Any], float | None], fmt: str, span: bool) -> str:
    values = [v for v in (value(r) for r in runs) if v is not None]
    if not values:
        return "-"
    mid = format(_median(values), fmt)
    if span and len(values) > 1:
        return f"{mid} [{format(min(values), fmt)} .. {format(max(values), fmt)}]"
    return mid


MAIN = [
    ("emails", lambda r: r.emails, ".0f", False),
    ("avg papers/email", lambda r: r.papers_per_email, ".0f", False),
    ("avg KB", lambda r: r.avg_email_kb, ".0f", False),
    ("digest msg/s (whole run)", lambda r: r.whole_per_s, ".0f", True),
    ("bare smtplib msg/s", lambda r: r.bare_per_s, ".0f", True),
    ("ratio", lambda r: r.ratio, ".2f", True),
    ("match s", lambda r: r.match_s, ".3f", False),
    ("peak MB", lambda r: r.peak_rss_mb, ".0f", False),
    ("wall s", lambda r: r.wall_s, ".1f", False),
]


def main_table(runs: Sequence[Any]) -> list[str]:
    """One row per profile x receiver: the figures that count."""
    head = ["profile", "receiver", *(name for name, *_ in MAIN)]
    out = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * len(MAIN)]
    for profile, receiver, group in _groups(runs):
        cells = [_cell(group, value, fmt, span) for _, value, fmt, span in MAIN]
        out.append(f"| {profile} | {receiver} | " + " | ".join(cells) + " |")
    return out


def _build(attr: str) -> Callable[[Any], float | None]:
    return lambda r: getattr(r.build, attr) if r.build and r.build.sample else None


def _timing(key: str) -> Callable[[Any], float | None]:
    return lambda r: float(r.timings[key]) if r.timings and key in r.timings else None


DETAILS: list[tuple[str, Callable[[Any], float | None], str, str]] = [
    ("arXiv requests", lambda r: r.arxiv_requests, ".0f", "runs.arxiv_requests"),
    ("fetch s", lambda r: r.fetch_s or None, ".2f", "runs.timings fetch_s"),
    ("match s", lambda r: r.match_s or None, ".3f", "runs.timings match_s (else bench replay)"),
    (
        "digest msg/s after the fetch",
        lambda r: r.after_fetch_per_s or None,
        ".0f",
        "emails / (exit - last arXiv answer)",
    ),
    (
        "server-side msg/s during digest send",
        lambda r: r.server_per_s or None,
        ".0f",
        "aiosmtpd: first to last accepted",
    ),
    ("SMTP connections used by digest", lambda r: r.smtp_connections_seen, ".0f", "receiver"),
    ("CPU s of digest send", lambda r: r.cpu_s, ".1f", "user + system, all threads"),
    ("messages resent by the bare client", lambda r: r.bare_messages, ".0f", "captured"),
    ("build ms/email, ours", _build("build_ms_ours"), ".2f", "sample, in the bench"),
    (
        "finishing paper blocks, ms/email",
        lambda r: r.build.renderer_setup_ms / r.build.sample if _build("sample")(r) else None,
        ".2f",
        "Renderer.prepare for the sample, once",
    ),
    ("build ms/email, reference", _build("build_ms_reference"), ".2f", "MJML + premailer + email"),
    ("build ratio reference/ours", _build("build_ratio"), ".1f", "same digests"),
    ("renders equal to the reference", _build("equal_renders"), ".0f", "of the sample"),
    ("build ms/email inside digest send", _timing("build_ms_median"), ".2f", "runs.timings"),
    ("send stage s inside digest send", _timing("send_s"), ".1f", "runs.timings"),
    ("msg/s inside digest send", _timing("messages_per_s"), ".0f", "runs.timings"),
]


def detail_table(runs: Sequence[Any]) -> list[str]:
    """Every other figure: one column per profile x receiver."""
    groups = _groups(runs)
    head = ["measure", *(f"{p} / {n}" for p, n, _ in groups), "how"]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(groups) + " --- |"]
    for name, value, fmt, how in DETAILS:
        cells = [_cell(group, value, fmt, False) for _, _, group in groups]
        if all(c == "-" for c in cells):
            continue
        out.append(f"| {name} | " + " | ".join(cells) + f" | {how} |")
    return out
