"""Render a Digest as an email body: MJML (via Jinja) -> HTML (mjml-python) -> inlined CSS
(premailer, network off), plus a plain-text part with the same papers.

`render_reference` does that for one subscriber: the reference. A run uses
`assemble.Renderer`, which gives the same bytes by finishing each paper block and layout once
and joining each email from those pieces.

Everything from arXiv reaches the templates as plain text and is escaped by Jinja's autoescape;
the only markup we add ourselves is highlighting, built here from escaped pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from importlib import resources
from itertools import accumulate
from pathlib import Path

import jinja2
import premailer
from markupsafe import Markup, escape
from mjml import mjml2html

from digest.budget import fit, fit_holds
from digest.feedback_links import ReaderLinks
from digest.latex import readable, readable_spans
from digest.mailer import qp_size, qp_weight, sender_address
from digest.models import RECOMMENDED_SECTION, Digest, Entry, RenderedEmail, Span
from digest.tidy import without_zero_fonts

log = logging.getLogger(__name__)

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
    recommended: bool = False  # in "Recommended for you" (no keyword tags; a "why" line)
    why: str = ""
    more_url: str | None = None  # the reader's feedback links (with DIGEST_PUBLIC_URL/SECRET)
    less_url: str | None = None


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


def entry_view(entry: Entry, upvotes: int = 0, links: ReaderLinks | None = None) -> EntryView:
    paper = entry.paper
    more, less = links.urls(paper.id) if links is not None else (None, None)
    title, title_spans = readable_spans(paper.title, entry.title_spans)  # LaTeX as text
    whole, abstract_spans = readable_spans(paper.abstract, entry.abstract_spans)
    abstract = shorten(whole, ABSTRACT_CHARS)
    return EntryView(
        title=highlight(title, title_spans),
        title_text=title,
        authors=author_line(paper.authors),
        date=paper.published.date().isoformat(),
        category=paper.primary_category,
        abstract=highlight(abstract, abstract_spans),
        abstract_text=abstract,
        abstract_cut=len(abstract) < len(whole),
        comment=readable(paper.comment),
        keywords=(*entry.keywords, *(f"by {author}" for author in entry.authors)),
        abs_url=paper.abs_url,
        pdf_url=paper.pdf_url,
        upvotes=upvotes,
        recommended=entry.why is not None,
        why=entry.why or "",  # already readable text (personalize.py)
        more_url=more,
        less_url=less,
    )


def subject_line(digest: Digest) -> str:
    count = len(digest.entries)
    papers = "1 new paper" if count == 1 else f"{count} new papers"
    headings = [s.keyword for s in digest.sections if s.keyword != RECOMMENDED_SECTION]
    if headings:
        subject = f"arXiv digest {_short_day(digest.day)}: {papers} on {', '.join(headings)}"
    else:  # only recommendations
        subject = f"arXiv digest {_short_day(digest.day)}: {papers} recommended for you"
    return " ".join(subject.split())  # never a line break in a header


def _strings(digest: Digest, shown: int, sender: str) -> dict[str, str]:
    """The per-email text outside the paper blocks, as whole strings (the assembling renderer
    fills these into a layout; the reference renders them through the template)."""
    return strings_of(digest, sender)(shown)


def strings_of(digest: Digest, sender: str) -> Callable[[int], dict[str, str]]:
    """`_strings(digest, shown, sender)` as a function of `shown`: what does not depend on how
    many papers are shown worked out once (the budget's choice asks for several)."""
    person = digest.subscriber
    following = "; ".join(person.keywords)
    if person.authors:
        following += "; papers by " + "; ".join(person.authors)
    fixed = {
        "subject": subject_line(digest),
        "day": _long_day(digest.day),
        "subscriber_email": person.email,
        "frequency": "daily" if person.weekday is None else "weekly",
        "following": following,
        "sender_address": sender_address(sender),
    }
    entries = digest.entries
    previews: dict[int, str] = {}
    sections = sum(1 for s in digest.sections if s.keyword != RECOMMENDED_SECTION)
    recommended = [0, *accumulate(entry.why is not None for entry in entries)]  # of the first n

    def strings(shown: int) -> dict[str, str]:
        deferred = len(entries) - shown
        first = min(shown, 3)
        if first not in previews:
            previews[first] = "; ".join(readable(entry.paper.title) for entry in entries[:first])
        return {
            **fixed,
            "preview": previews[first],
            "summary": _summary(shown - recommended[shown], recommended[shown], sections),
            "deferred_line": f"{deferred} more paper{'s' if deferred != 1 else ''} did not fit "
            f"in this email; they will follow in your next digest."
            if deferred
            else "",
        }

    return strings


def _summary(count: int, recommended: int, sections: int) -> str:
    """ "12 new papers for 3 of your keywords" (", 2 recommended for you" when some are):
    `count` keyword papers shown, `recommended` papers, `sections` keywords with papers."""
    mine = f"{recommended} recommended for you"
    if not count and recommended:
        return mine
    summary = f"{count} new paper{'s' if count != 1 else ''} for {sections} of your keywords"
    return f"{summary}, {mine}" if recommended else summary


@lru_cache(maxsize=64)
def _long_day(day: str) -> str:
    return date.fromisoformat(day).strftime("%A, %-d %B %Y")


@lru_cache(maxsize=64)
def _short_day(day: str) -> str:
    return date.fromisoformat(day).strftime("%-d %b %Y")


def _split(
    digest: Digest, full: int, shown: int
) -> tuple[list[tuple[str, list[Entry]]], list[Entry]]:
    """Which entries are shown in full, by section (sections left empty dropped), and which
    compactly, when the first `full` of the first `shown` entries are shown in full."""
    entries = digest.entries[:shown]
    full_ids = {entry.paper.id for entry in entries[:full]}
    sections = []
    for section in digest.sections:
        in_section = [e for e in section.entries if e.paper.id in full_ids]
        if in_section:
            sections.append((section.keyword, in_section))
    return sections, list(entries[full:])


def _context(
    digest: Digest,
    full: int,
    shown: int,
    sender: str,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
    links: ReaderLinks | None = None,
) -> dict[str, object]:
    views = {
        e.paper.id: entry_view(e, digest.upvotes.get(e.paper.id, 0), links) for e in digest.entries
    }
    sections, compact = _split(digest, full, shown)
    return {
        **_strings(digest, shown, sender),
        "sections": [
            {"keyword": keyword, "count": len(found), "entries": [views[e.paper.id] for e in found]}
            for keyword, found in sections
        ],
        "compact": [views[e.paper.id] for e in compact],
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "likes_url": links.likes if links is not None else None,
        "trending": digest.trending,
    }


def render_html(context: dict[str, object]) -> str:
    mjml_source = _env(True).get_template("digest.mjml").render(context)
    # MJML's font-size:0px layout wrappers (which spam filters score) go before inlining.
    html = without_zero_fonts(mjml2html(mjml_source, fonts={}, disable_comments=True))
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


def render_reference(
    digest: Digest,
    *,
    sender: str,
    budget: int,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
    links: ReaderLinks | None = None,
) -> RenderedEmail:
    """The email for `digest`, its HTML kept under `budget` bytes, rendered the straightforward
    way: the whole template through Jinja, MJML and premailer for this one subscriber.

    Past the budget the last papers are listed compactly (title and link); if even that does
    not fit, the email carries the papers that fit and says the rest follow next time. The
    returned `paper_ids` are exactly the papers shown: only those may be recorded as delivered.
    """
    attempts: dict[tuple[int, int], tuple[str, dict[str, object]]] = {}

    def attempt(full: int, shown: int) -> tuple[str, dict[str, object]]:
        if (full, shown) not in attempts:
            context = _context(digest, full, shown, sender, unsubscribe_url, preferences_url, links)
            attempts[full, shown] = render_html(context), context
        return attempts[full, shown]

    def size(full: int, shown: int) -> int:  # of the HTML part as encoded in the message
        return qp_size(qp_weight(attempt(full, shown)[0]))

    full, shown = fit(size, len(digest.entries), budget)
    html, context = attempt(full, shown)
    return _email(digest, html, render_text(context), full, shown)


def reference_fits(
    digest: Digest,
    full: int,
    shown: int,
    *,
    sender: str,
    budget: int,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
    links: ReaderLinks | None = None,
    html: str | None = None,
) -> bool:
    """Whether `render_reference` would choose to show the first `shown` papers, `full` of
    them in full: the choice checked at its edges (`fit_holds`), one to three renderings
    instead of the whole search (`html`: the reference rendering of this choice, when made
    already: one fewer)."""

    def size(f: int, s: int) -> int:
        context = _context(digest, f, s, sender, unsubscribe_url, preferences_url, links)
        return qp_size(qp_weight(render_html(context)))

    known = {} if html is None else {(full, shown): qp_size(qp_weight(html))}
    return fit_holds(size, len(digest.entries), budget, full, shown, known)


def render_at(
    digest: Digest,
    full: int,
    shown: int,
    *,
    sender: str,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
    links: ReaderLinks | None = None,
) -> RenderedEmail:
    """The email `render_reference` gives when its budget leads to showing the first `shown`
    papers, the first `full` of them in full: the same straightforward rendering, one try."""
    context = _context(digest, full, shown, sender, unsubscribe_url, preferences_url, links)
    return _email(digest, render_html(context), render_text(context), full, shown)


def _email(digest: Digest, html: str, text: str, full: int, shown: int) -> RenderedEmail:
    return RenderedEmail(
        subject=subject_line(digest),
        html=html,
        text=text,
        paper_ids=digest.paper_ids[:shown],
        full_entries=full,
        deferred=digest.paper_ids[shown:],
    )
