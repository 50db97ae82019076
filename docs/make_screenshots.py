"""Make the README's screenshots of a real digest: the seed papers (tests/fixtures/papers.json)
through the real pipeline (`digest send --dry-run`, trending on, against the loopback stand-ins),
photographed by headless Chromium (tests/browser.py).

    .venv/bin/python docs/make_screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from browser import screenshot  # noqa: E402
from helpers import Digest  # noqa: E402
from standins import (  # noqa: E402
    ArxivStandin,
    SmtpStandin,
    TrendingStandin,
    daily_paper,
    load_papers,
    recent,
)


def main() -> None:
    papers = recent(load_papers())
    board = [
        daily_paper(p, votes) for p, votes in zip(papers[1::9], (64, 41, 33, 20, 12), strict=False)
    ]
    with (
        tempfile.TemporaryDirectory() as home,
        ArxivStandin(papers) as arxiv,
        SmtpStandin() as smtp,
        TrendingStandin(board) as hf,
    ):
        digest = Digest(
            Path(home),
            arxiv,
            smtp,
            {"DIGEST_TRENDING": "huggingface", "DIGEST_TRENDING_URL": hf.url},
        )
        digest.write_subscribers("email,name,keywords\nada@example.org,Ada,reward model\n")
        result = digest.run("send", "--dry-run")
        if result.returncode != 0:
            sys.exit(result.stderr)
        html = Path(home) / "previews" / "ada@example.org.html"
        for name, width, height, dark in (
            ("digest-phone.png", 375, 1500, False),
            ("digest-phone-dark.png", 375, 1500, True),
            ("digest-wide.png", 800, 1100, False),
        ):
            print(screenshot(html, DOCS / name, width, height, dark=dark))


def recommended() -> None:
    """An email with "Recommended for you": Ada follows "graph neural network" and liked five
    reasoning papers (the likes column); the feedback links are on (DIGEST_PUBLIC_URL/SECRET)."""
    papers = recent(load_papers())
    reasoning = [
        p["id"].rsplit("v", 1)[0] for p in reversed(papers) if p["keywords"] == ["Reasoning"]
    ]
    with (
        tempfile.TemporaryDirectory() as home,
        ArxivStandin(papers) as arxiv,
        SmtpStandin() as smtp,
    ):
        digest = Digest(
            Path(home),
            arxiv,
            smtp,
            {
                "DIGEST_PUBLIC_URL": "https://digest.example.org",
                "DIGEST_SECRET": "screenshot-secret-0123456789",
            },
        )
        digest.write_subscribers(
            "email,name,keywords,likes\n"
            f"ada@example.org,Ada,graph neural network,{';'.join(reasoning[:5])}\n"
        )
        result = digest.run("send", "--dry-run")
        if result.returncode != 0:
            sys.exit(result.stderr)
        html = Path(home) / "previews" / "ada@example.org.html"
        print(screenshot(html, DOCS / "digest-recommended.png", 600, 0))


if __name__ == "__main__":
    main()
    recommended()
