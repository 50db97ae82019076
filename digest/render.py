"""Render a Digest as an email body: MJML (via Jinja) -> HTML (mjml-python) -> inlined CSS
(premailer, network off), plus a plain-text part with the same papers.

Everything from arXiv reaches the templates as plain text and is escaped by Jinja's autoescape;
the only markup we add ourselves is highlighting, built here from escaped pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
import premailer
from markupsafe import Markup, escape
from mjml import mjml2html

from digest.models import Digest, Entry, RenderedEmail, Span

MAX_AUTHORS = 5
ABSTRACT_CHARS = 600
DOCTYPE = "<!doctype html>\n"


def templates_dir() -> Path:
    """The MJML templates: inside the installed package (wheel), else the source tree's emails/."""
    packaged = resources.files("digest") / "emails"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "emails"


@cache
def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def template(name: str, *, autoescape: bool = True) -> jinja2.Template:
    """A template from emails/ (also the archive page's), HTML-escaping by default."""
    return _env(autoescape).get_template(name)


@dataclass(frozen=True)
class EntryView:
    """What a template needs to show one paper: strings, already shortened and highlighted."""

    title: Markup
    title_text: str
    authors: str
    date: str
    category: str
    abstract: Markup
    abstract_text: str
    abstract_cut: bool
    comment: str
    keywords: tuple[str, ...]
    abs_url: str
    pdf_url: str
    upvotes: int = 0  # on Hugging Face's daily papers today; 0: not trending


def highlight(text: str, spans: Sequence[Span]) -> Markup:
    """`text` escaped, with each span wrapped in a highlight; spans past the end are clipped."""
    parts: list[str] = []
    cursor = 0
    for start, end in spans:
        start, end = max(start, cursor), min(end, len(text))
        if start >= end:
            continue
        parts.append(escape(text[cursor:start]))
        parts.append(Markup('<span class="hl">%s</span>') % text[start:end])
        cursor = end
    parts.append(escape(text[cursor:]))
    return Markup("").join(parts)


def shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary at most `limit` characters in (no ellipsis added)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > limit // 2 else limit].rstrip()


def author_line(authors: Sequence[str]) -> str:
    if len(authors) <= MAX_AUTHORS:
        return ", ".join(authors)
    return f"{', '.join(authors[:MAX_AUTHORS])} et al. ({len(authors)} authors)"


def entry_view(entry: Entry, upvotes: int = 0) -> EntryView:
    paper = entry.paper
    abstract = shorten(paper.abstract, ABSTRACT_CHARS)
    return EntryView(
        title=highlight(paper.title, entry.title_spans),
        title_text=paper.title,
        authors=author_line(paper.authors),
        date=paper.published.date().isoformat(),
        category=paper.primary_category,
        abstract=highlight(abstract, entry.abstract_spans),
        abstract_text=abstract,
        abstract_cut=len(abstract) < len(paper.abstract),
        comment=paper.comment,
        keywords=(*entry.keywords, *(f"by {author}" for author in entry.authors)),
        abs_url=paper.abs_url,
        pdf_url=paper.pdf_url,
        upvotes=upvotes,
    )


def subject_line(digest: Digest) -> str:
    count = len(digest.entries)
    papers = "1 new paper" if count == 1 else f"{count} new papers"
    keywords = ", ".join(section.keyword for section in digest.sections)
    day = date.fromisoformat(digest.day).strftime("%-d %b %Y")
    subject = f"arXiv digest {day}: {papers} on {keywords}"
    return " ".join(subject.split())  # never a line break in a header


def _context(
    digest: Digest, full: int, shown: int, sender: str, unsubscribe_url: str | None = None
) -> dict[str, object]:
    entries = digest.entries[:shown]
    views = {e.paper.id: entry_view(e, digest.upvotes.get(e.paper.id, 0)) for e in entries}
    full_ids = {entry.paper.id for entry in entries[:full]}
    sections = []
    for section in digest.sections:
        in_section = [views[e.paper.id] for e in section.entries if e.paper.id in full_ids]
        if in_section:
            sections.append({"keyword": section.keyword, "entries": in_section})
    compact = [views[entry.paper.id] for entry in entries[full:]]
    day = date.fromisoformat(digest.day)
    return {
        "subject": subject_line(digest),
        "day": day.strftime("%A, %-d %B %Y"),
        "count": len(entries),
        "keyword_count": len(digest.sections),
        "sections": sections,
        "compact": compact,
        "deferred": len(digest.entries) - shown,
        "subscriber": digest.subscriber,
        "frequency": "daily" if digest.subscriber.weekday is None else "weekly",
        "unsubscribe_url": unsubscribe_url,
        "sender_address": parseaddr(sender)[1] or sender,
        "preview": "; ".join(v.title_text for v in list(views.values())[:3]),
        "trending": digest.trending,
    }


def render_html(context: dict[str, object]) -> str:
    mjml_source = _env(True).get_template("digest.mjml").render(context)
    html = mjml2html(mjml_source, fonts={}, disable_comments=True)
    inlined = premailer.transform(
        html,
        allow_network=False,
        strip_important=False,  # the dark-mode block must beat the inlined light colours
        cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
    )
    # premailer drops the doctype; without it clients render in quirks mode.
    return inlined if inlined.lstrip().lower().startswith("<!doctype") else DOCTYPE + inlined


def render_text(context: dict[str, object]) -> str:
    return _env(False).get_template("digest.txt").render(context)


class Renderer:
    """Renders the emails of one run. Keep one per run: it may cache what every email shares.

    `render(digest, unsubscribe_url)` returns exactly what `render_reference` returns for the
    same digest; only the time it takes differs."""

    def __init__(self, *, sender: str, budget: int) -> None:
        self.sender, self.budget = sender, budget

    def render(self, digest: Digest, unsubscribe_url: str | None = None) -> RenderedEmail:
        return render_reference(
            digest, sender=self.sender, budget=self.budget, unsubscribe_url=unsubscribe_url
        )


def render(
    digest: Digest, *, sender: str, budget: int, unsubscribe_url: str | None = None
) -> RenderedEmail:
    """The email for `digest` (a one-off; a run renders many through one `Renderer`)."""
    return Renderer(sender=sender, budget=budget).render(digest, unsubscribe_url)


def render_reference(
    digest: Digest, *, sender: str, budget: int, unsubscribe_url: str | None = None
) -> RenderedEmail:
    """The email for `digest`, its HTML kept under `budget` bytes, rendered the straightforward
    way: the whole template through Jinja, MJML and premailer for this one subscriber.

    Past the budget the last papers are listed compactly (title and link); if even that does
    not fit, the email carries the papers that fit and says the rest follow next time. The
    returned `paper_ids` are exactly the papers shown: only those may be recorded as delivered.
    """
    total = len(digest.entries)

    def attempt(full: int, shown: int) -> tuple[str, dict[str, object]]:
        context = _context(digest, full, shown, sender, unsubscribe_url)
        return render_html(context), context

    html, context = attempt(total, total)
    full, shown = total, total
    if len(html.encode()) > budget:
        full = _largest(lambda n: len(attempt(n, total)[0].encode()) <= budget, total)
        if full == 0 and len(attempt(0, total)[0].encode()) > budget:
            shown = _largest(lambda n: len(attempt(0, n)[0].encode()) <= budget, total)
        html, context = attempt(full, shown)
    return RenderedEmail(
        subject=str(context["subject"]),
        html=html,
        text=render_text(context),
        paper_ids=digest.paper_ids[:shown],
        full_entries=full,
        deferred=digest.paper_ids[shown:],
    )


def _largest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest n in [0, upper] with fits(n), assuming fits is monotone and fits(0) or n=0."""
    low, high = 0, upper
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
