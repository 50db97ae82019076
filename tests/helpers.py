"""Running `digest` as a user does: a subprocess with DIGEST_* settings, against stand-ins."""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from standins import ArxivStandin, Paper, SmtpStandin, base_id

SENDER = "arXiv digest <digest@example.org>"
ADA, GRACE, ALAN = "ada@example.org", "grace@example.org", "alan@example.org"
# Oracles for what subscribers' keywords match, independent of SQLite: each phrase with the
# endings in our data.
REWARD_MODEL = re.compile(r"\brewards?[\s-]+model(s|ing|ling|ed|er|ers)?\b", re.IGNORECASE)
GNN = re.compile(r"\bgraph[\s-]+neural[\s-]+network(s)?\b", re.IGNORECASE)
REASONING = re.compile(r"\breason(ing|s|ers?|ed)?\b", re.IGNORECASE)
# The subscribers of the shared `digest` fixture (conftest.py) and Alan, whom some tests add.
ADA_ROW = {"email": ADA, "name": "Ada", "keywords": "reward model"}
GRACE_ROW = {"email": GRACE, "name": "Grace", "keywords": "graph neural network; reward model"}
ALAN_ROW = {"email": ALAN, "name": "Alan", "keywords": "reasoning"}


@dataclass
class Digest:
    """A `digest` installation in a temporary folder: its database, subscribers and settings."""

    home: Path
    arxiv: ArxivStandin
    smtp: SmtpStandin
    extra_env: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.home / "digest.db"

    @property
    def csv_path(self) -> Path:
        return self.home / "subscribers.csv"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env.update(
            DIGEST_DB=str(self.db_path),
            DIGEST_SUBSCRIBERS=self.csv_path.name,  # relative to cwd, as users write it
            DIGEST_ARXIV_URL=self.arxiv.url,
            DIGEST_ARXIV_DELAY="0",
            DIGEST_ARXIV_TIMEOUT="5",
            DIGEST_SMTP_HOST=self.smtp.host,
            DIGEST_SMTP_PORT=str(self.smtp.port),
            DIGEST_SMTP_SECURITY="none",
            DIGEST_SMTP_TIMEOUT="5",
            DIGEST_FROM=SENDER,
            DIGEST_RETRY_BACKOFF="0",  # retries happen, without waiting real seconds
        )
        env.update(self.extra_env)
        return env

    def write_subscribers(self, rows: Iterable[Mapping[str, str]] | str) -> None:
        if isinstance(rows, str):
            self.csv_path.write_text(rows, encoding="utf-8")
            return
        rows = list(rows)
        with self.csv_path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "digest", *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def query(self, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, list(params)).fetchall()

    def delivered(self, address: str) -> set[str]:
        rows = self.query("SELECT paper_id FROM deliveries WHERE subscriber = ?", [address])
        return {str(row[0]) for row in rows}


def messages_to(smtp: SmtpStandin, address: str) -> list[EmailMessage]:
    return [m.message for m in smtp.messages if address in m.rcpt_tos]


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) bodies of a digest."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def abs_ids(body: str) -> set[str]:
    """arXiv ids (without version) linked from an email body."""
    return set(re.findall(r"https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})", body))


def matching(papers: Iterable[Paper], *patterns: re.Pattern[str]) -> set[str]:
    """Ids (without version) of the papers whose title or abstract any of `patterns` finds."""
    return {
        base_id(p["id"])
        for p in papers
        if any(pattern.search(p["title"] + " " + p["abstract"]) for pattern in patterns)
    }


def owed(papers: list[Paper]) -> dict[str, set[str]]:
    """Each of Ada's, Grace's and Alan's papers among `papers`, by the oracles above."""
    return {
        ADA: matching(papers, REWARD_MODEL),
        GRACE: matching(papers, GNN, REWARD_MODEL),
        ALAN: matching(papers, REASONING),
    }
