"""`digest archive` end to end: papers reach the database through the real pipeline (`digest send
--dry-run` against the arXiv stand-in), then the real CLI writes the page; we read it the way
GitHub would (a CommonMark + tables renderer with raw HTML on) or the way a browser parses HTML."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import REWARD_MODEL, Digest
from markdown_it import MarkdownIt
from standins import ArxivStandin, Paper, SmtpStandin, base_id, paper_from_fixture

# Also "reasonings", unlike helpers.REASONING.
REASONING = re.compile(r"\breason(ing|ings|er|ers|s|ed)?\b", re.IGNORECASE)
TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {})
    installation.write_subscribers(
        [
            {"email": "ada@example.org", "keywords": "Reward Model; Reasoning"},
            {"email": "grace@example.org", "keywords": "reasoning"},
        ]
    )
    return installation


def filled(digest: Digest) -> Digest:
    """The database after one real (dry) run: every served paper stored."""
    result = digest.run("send", "--dry-run")
    assert result.returncode == 0, result.stderr
    return digest


class _Page(HTMLParser):
    """A parsed page: its h2 headings and, per table, its rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []
        elif tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def as_github_would(markdown: str) -> _Page:
    page = _Page()
    page.feed(
        MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    )
    return page


def as_browser_would(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def newest_matching(papers: list[Paper], pattern: re.Pattern[str], n: int) -> list[str]:
    found = [p for p in papers if pattern.search(p["title"] + " " + p["abstract"])]
    found.sort(key=lambda p: (p["published"], base_id(p["id"])), reverse=True)
    return [base_id(p["id"]) for p in found[:n]]


def test_markdown_page_has_the_seed_layout_for_every_subscribed_keyword(digest: Digest) -> None:
    filled(digest)

    result = digest.run("archive")

    assert result.returncode == 0, result.stderr
    text = (digest.home / "archive.md").read_text(encoding="utf-8")
    assert text.startswith("# Daily Papers\n")
    assert f"\nLast update: {TODAY}\n" in text
    assert re.findall(r"^## .*$", text, re.M) == ["## Reward Model", "## Reasoning"]
    assert text.count("| **Title** | **Date** | **Abstract** | **Comment** |") == 2
    page = as_github_would(text)
    assert page.headings == ["Reward Model", "Reasoning"]
    served = digest.arxiv.papers
    for table, pattern in zip(page.tables, (REWARD_MODEL, REASONING), strict=True):
        header, *rows = table
        assert header == ["Title", "Date", "Abstract", "Comment"]
        expected = newest_matching(served, pattern, 100)
        assert len(rows) == len(expected) and len(expected) >= 5
        assert all(len(row) == 4 for row in rows)
        dates = [row[1] for row in rows]
        assert dates == sorted(dates, reverse=True)  # newest first
        assert all(row[2].startswith("Show") for row in rows)  # abstract collapsed
    links = [href for href in page.links if "arxiv.org/abs/" in href]
    expected_all = newest_matching(served, REWARD_MODEL, 100) + newest_matching(
        served, REASONING, 100
    )
    assert [href.rsplit("/", 1)[1] for href in links] == expected_all
    assert f"Wrote archive.md: {len(expected_all)} papers for 2 keywords." in result.stdout


def test_at_most_max_per_keyword_newest_papers_and_chosen_keywords(digest: Digest) -> None:
    filled(digest)

    result = digest.run("archive", "--max-per-keyword", "3", "--keyword", "reasoning", "--out", "-")

    assert result.returncode == 0, result.stderr
    page = as_github_would(result.stdout)
    assert page.headings == ["reasoning"]
    [table] = page.tables
    assert len(table) == 1 + 3
    shown = [href.rsplit("/", 1)[1] for href in page.links if "arxiv.org/abs/" in href]
    assert shown == newest_matching(digest.arxiv.papers, REASONING, 3)
    assert not (digest.home / "archive.md").exists()  # '-' writes to standard output only


def test_html_page_is_standalone_with_the_same_tables(digest: Digest) -> None:
    filled(digest)

    result = digest.run("archive", "--format", "html", "--max-per-keyword", "4")

    assert result.returncode == 0, result.stderr
    html = (digest.home / "archive.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert '<html lang="en">' in html and '<meta name="viewport"' in html
    page = as_browser_would(html)
    assert page.headings == ["Reward Model", "Reasoning"]
    assert [len(t) for t in page.tables] == [5, 5]
    assert page.tables[0][0] == ["Title", "Date", "Abstract", "Comment"]
    assert f"Last update: {TODAY}" in html
    shown = [href.rsplit("/", 1)[1] for href in page.links if "arxiv.org/abs/" in href]
    assert shown[:4] == newest_matching(digest.arxiv.papers, REWARD_MODEL, 4)


HOSTILE_TITLE = (
    "Reward Models | a *bold* [claim](javascript:alert(1))\nwith <script>x()</script> ~~gone~~ #1"
)
HOSTILE_ABSTRACT = (
    "We train a reward model.\n| --- | --- |\nAnother | row <img src=x onerror=alert(1)> "
    "and `code` & $a_i < b_j$ and a back\\slash."
)
HOSTILE_ABSTRACT_READABLE = (
    "We train a reward model.\n| \u2014 | \u2014 |\nAnother | row <img src=x onerror=alert(1)> "
    "and `code` & a\u1d62 < b\u2c7c and a back\\slash."
)
HOSTILE_COMMENT = "12 pages | 3 figures\n<b>Accepted</b> at *ICML* | code: https://x.org/a_b"


@pytest.fixture
def hostile(digest: Digest, papers_fixture: list) -> Digest:
    paper = paper_from_fixture(papers_fixture[0], datetime.now(UTC) - timedelta(hours=1))
    paper.update(
        id="2511.99999v1", title=HOSTILE_TITLE, abstract=HOSTILE_ABSTRACT, comment=HOSTILE_COMMENT
    )
    calm = paper_from_fixture(papers_fixture[1], datetime.now(UTC) - timedelta(hours=2))
    calm.update(id="2511.99998v1", title="A calm reward model paper", comment="")
    digest.arxiv.papers = [paper, calm]
    return filled(digest)


def test_markdown_escaping_keeps_each_paper_one_row_of_four_cells_and_inert(
    hostile: Digest,
) -> None:
    result = hostile.run("archive", "--keyword", "reward model")

    assert result.returncode == 0, result.stderr
    text = (hostile.home / "archive.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| **[")]
    assert len(rows) == 2  # no newline from arXiv split a row
    rendered = (
        MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)
    )
    page = as_github_would(text)
    [table] = page.tables
    _header, first, second = table
    assert len(first) == len(second) == 4
    assert first[0] == " ".join(HOSTILE_TITLE.split())  # the title reads as written
    # <summary> then <p>; the abstract's LaTeX ($a_i < b_j$, and so its --- too) made readable.
    assert first[2] == "Show" + " ".join(HOSTILE_ABSTRACT_READABLE.split())
    assert first[3].endswith(" ".join(HOSTILE_COMMENT.split()))
    assert second[0] == "A calm reward model paper"
    # Nothing from arXiv became markup: no script, image, bold tag, emphasis or extra link.
    for tag in ("<script", "<img", "<b>", "<em>", "<code>", "<s>", 'href="javascript'):
        assert tag not in rendered
    assert [h for h in page.links if "arxiv.org" in h] == [
        "https://arxiv.org/abs/2511.99999",
        "https://arxiv.org/abs/2511.99998",
    ]


def test_html_escaping_keeps_arxiv_text_as_text(hostile: Digest) -> None:
    result = hostile.run("archive", "--format", "html", "--keyword", "reward model")

    assert result.returncode == 0, result.stderr
    html = (hostile.home / "archive.html").read_text(encoding="utf-8")
    page = as_browser_would(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    _header, first, _ = page.tables[0]
    assert " ".join(first[0].split()) == " ".join(HOSTILE_TITLE.split())
    assert " ".join(first[2].split()) == "Show" + " ".join(HOSTILE_ABSTRACT_READABLE.split())


def test_latex_in_titles_abstracts_and_comments_reads_as_text(
    digest: Digest, papers_fixture: list
) -> None:
    paper = paper_from_fixture(papers_fixture[0], datetime.now(UTC) - timedelta(hours=1))
    paper.update(
        id="2511.99997v1",
        title="PB$^2$: reward model exploration with $\\alpha$-divergence",
        abstract="A reward model that is \\emph{more robust} and runs in $O(n^2)$ for $5.",
        comment="Code at $\\href{https://x.org/c}{\\text{this https URL}}$",
    )
    digest.arxiv.papers = [paper]
    filled(digest)
    for fmt in ("md", "html"):
        result = digest.run("archive", "--format", fmt, "--keyword", "reward model")
        assert result.returncode == 0, result.stderr
    md = (digest.home / "archive.md").read_text(encoding="utf-8")
    assert "PB\u00b2: reward model exploration with \u03b1-divergence" in md
    assert "A reward model that is more robust and runs in O(n\u00b2) for $5." in md
    assert "this https URL &lt;https://x.org/c&gt;" in md  # HTML-escaped in Markdown
    page = as_browser_would((digest.home / "archive.html").read_text(encoding="utf-8"))
    _header, row = page.tables[0]
    assert row[0] == "PB\u00b2: reward model exploration with \u03b1-divergence"
    assert "runs in O(n\u00b2) for $5." in row[2] and "\\emph" not in row[2]


def test_archive_errors_name_what_to_change(digest: Digest) -> None:
    no_db = digest.run("archive")
    assert no_db.returncode == 1
    assert no_db.stderr == (
        f"Error: {digest.db_path}: no database yet; run 'digest send' (or --dry-run) first, "
        "or point DIGEST_DB at yours\n"
    )

    filled(digest)
    digest.write_subscribers("email,keywords\n")
    no_keywords = digest.run("archive")
    assert no_keywords.returncode == 1
    assert no_keywords.stderr == (
        "Error: no keywords: subscribers.csv lists no subscriber with keywords; "
        "add subscribers or name keywords with --keyword\n"
    )

    bad_limit = digest.run("archive", "--keyword", "x", "--max-per-keyword", "0")
    assert bad_limit.returncode == 2 and "--max-per-keyword" in bad_limit.stderr

    missing_folder = digest.run("archive", "--keyword", "reasoning", "--out", "nope/page.md")
    assert missing_folder.returncode == 1
    assert missing_folder.stderr == (
        "Error: nope/page.md: the folder nope does not exist; create it first\n"
    )


def test_a_bad_subscriber_row_is_reported_and_the_page_still_written(digest: Digest) -> None:
    filled(digest)
    digest.write_subscribers(
        "email,keywords\nnot-an-address,reasoning\nada@example.org,reasoning\n"
    )

    result = digest.run("archive")

    assert result.returncode == 1
    assert result.stderr.startswith("Error: subscribers.csv:2: 'not-an-address' is not an email")
    page = as_github_would((digest.home / "archive.md").read_text(encoding="utf-8"))
    assert page.headings == ["reasoning"] and len(page.tables[0]) > 1
