"""`digest archive`: the per-keyword page of the newest papers, from the database, in the layout
of the "Daily Papers" READMEs (a heading per keyword; a table Title / Date / Abstract (collapsed)
/ Comment, newest first; "Last update: DATE"), as GitHub Markdown or as a standalone HTML page.

A keyword matches here exactly as in the emails (`plan.match_keywords`: the FTS5 phrase, and
the literal check for keywords like `C++`). Everything from arXiv is escaped for where it lands:
Markdown table cells (no `|` or line break can end a cell or row, no HTML gets through, no
emphasis or link syntax) or HTML (Jinja's autoescape).
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from digest import store, subscribers
from digest.config import Settings
from digest.errors import DigestError
from digest.latex import readable
from digest.match import distinct_keywords
from digest.models import Paper
from digest.plan import match_keywords
from digest.render import template

FORMATS = ("md", "html")
DEFAULT_MAX = 100
COLLAPSE_COMMENT_AT = 20  # longer comments are folded behind their first words, as in the seeds
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")


@dataclass(frozen=True)
class KeywordTable:
    keyword: str
    papers: tuple[Paper, ...]  # newest first


@dataclass
class Archive:
    text: str
    tables: list[KeywordTable]
    path: Path | None = None  # where it was written; None: standard output
    problems: list[str] = field(default_factory=list)  # bad subscriber rows, for standard error

    @property
    def paper_count(self) -> int:
        return sum(len(t.papers) for t in self.tables)


# Pure parts ------------------------------------------------------------------------------------


def md_text(text: str) -> str:
    """Text from arXiv (or a keyword) as inert Markdown inside a table cell or heading: on one
    line, HTML escaped, and `|`, `\\`, `` ` ``, `*`, `_`, `[`, `]`, `~`, `#` backslash-escaped."""
    one_line = " ".join(text.split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def md_url(url: str) -> str:
    """A URL safe inside `(...)` of a Markdown link: no space, parenthesis, `|` or `<>`."""
    return quote(" ".join(url.split()), safe=":/?#=&%~.-_+,;@!$'*")


def md_comment(comment: str) -> str:
    text = " ".join(comment.split())
    if len(text) <= COLLAPSE_COMMENT_AT:
        return md_text(text)
    return f"<details><summary>{md_text(text[:5])}...</summary><p>{md_text(text)}</p></details>"


def md_row(paper: Paper) -> str:
    """One table row; LaTeX in the title, abstract and comment made readable first."""
    title = f"**[{md_text(readable(paper.title))}]({md_url(paper.abs_url)})**"
    abstract = (
        f"<details><summary>Show</summary><p>{md_text(readable(paper.abstract))}</p></details>"
    )
    date = paper.published.date().isoformat()
    return "| " + " | ".join([title, date, abstract, md_comment(readable(paper.comment))]) + " |"


@dataclass(frozen=True)
class Row:
    """What the HTML page shows of one paper: text from arXiv, LaTeX made readable."""

    title: str
    abs_url: str
    date: str
    abstract: str
    comment: str

    @classmethod
    def of(cls, paper: Paper) -> Row:
        return cls(
            title=readable(paper.title),
            abs_url=paper.abs_url,
            date=paper.published.date().isoformat(),
            abstract=readable(paper.abstract),
            comment=readable(paper.comment),
        )


def markdown(tables: Sequence[KeywordTable], day: str, limit: int) -> str:
    lines = [
        "# Daily Papers",
        "The newest arXiv papers for each keyword, collected by digest.",
        "",
        "The subheadings are the search keywords.",
        "",
        f"Only the most recent papers for each keyword are kept, up to a maximum of {limit}.",
        "",
        f"Last update: {day}",
        "",
    ]
    for table in tables:
        lines.append(f"## {md_text(table.keyword)}")
        if not table.papers:
            lines += ["No papers for this keyword yet.", ""]
            continue
        lines.append("| **Title** | **Date** | **Abstract** | **Comment** |")
        lines.append("| --- | --- | --- | --- |")
        lines.extend(md_row(paper) for paper in table.papers)
        lines.append("")
    return "\n".join(lines)


def html_page(tables: Sequence[KeywordTable], day: str, limit: int) -> str:
    page = template("archive.html")
    shown = [{"keyword": t.keyword, "rows": [Row.of(p) for p in t.papers]} for t in tables]
    return page.render(tables=shown, day=day, limit=limit, collapse=COLLAPSE_COMMENT_AT)


def newest(
    keywords: Sequence[str],
    hits: Mapping[str, Mapping[str, object]],
    papers: Mapping[str, Paper],
    limit: int,
) -> list[KeywordTable]:
    """Per keyword, its matching papers, newest first (ties: the higher id), at most `limit`."""
    tables = []
    for keyword in keywords:
        found = [papers[pid] for pid in hits.get(keyword.casefold(), {}) if pid in papers]
        found.sort(key=lambda p: (p.published, p.id), reverse=True)
        tables.append(KeywordTable(keyword, tuple(found[:limit])))
    return tables


# The command -----------------------------------------------------------------------------------


def run_archive(
    settings: Settings,
    *,
    out: Path | None = None,
    fmt: str = "md",
    keywords: Sequence[str] = (),
    limit: int = DEFAULT_MAX,
    now: datetime | None = None,
) -> Archive:
    """Build the page and write it to `out` (default `archive.md` / `archive.html`; `-`: only
    return the text, for standard output). Keywords: the given ones, else every subscriber's."""
    if fmt not in FORMATS:
        raise DigestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if limit < 1:
        raise DigestError(f"--max-per-keyword {limit}: use a number greater than 0")
    problems: list[str] = []
    wanted = distinct_keywords_of(keywords)
    if not wanted:
        people, bad_rows = subscribers.load(settings.subscribers_path)
        problems = [str(p) for p in bad_rows]
        wanted = distinct_keywords(people)
    if not wanted:
        raise DigestError(
            f"no keywords: {settings.subscribers_path} lists no subscriber with keywords; "
            f"add subscribers or name keywords with --keyword"
        )
    if not settings.db_path.is_file():
        raise DigestError(
            f"{settings.db_path}: no database yet; run 'digest send' (or --dry-run) first, "
            f"or point DIGEST_DB at yours"
        )
    db = store.open_db(settings.db_path)
    try:
        hits, papers = match_keywords(db, wanted, EPOCH)
    finally:
        db.close()
    tables = newest(wanted, hits, papers, limit)
    day = (now or datetime.now(UTC)).astimezone(settings.tz).date().isoformat()
    text = (markdown if fmt == "md" else html_page)(tables, day, limit)
    archive = Archive(text=text, tables=tables, problems=problems)
    if out is None:
        out = Path(f"archive.{fmt}")
    if str(out) != "-":
        archive.path = _write(out, text)
    return archive


def distinct_keywords_of(keywords: Sequence[str]) -> list[str]:
    """--keyword values: whitespace-normalised, without empty or repeated ones."""
    cleaned = subscribers.parse_keywords(";".join(k.replace(";", " ") for k in keywords))
    unusable = [k for k in cleaned if not re.search(r"[^\W_]", k)]
    if unusable:
        raise DigestError(
            f"--keyword {unusable[0]!r} has no letters or digits to search for; use words"
        )
    return list(cleaned)


def _write(path: Path, text: str) -> Path:
    """Write atomically: a page being published is never seen half-written."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DigestError(f"{path}: the folder {folder} does not exist; create it first")
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
