"""Render a Digest as an email body: MJML (via Jinja) -> HTML (mjml-python) -> inlined CSS
(premailer, network off), plus a plain-text part with the same papers.

`render_reference` does that for one subscriber; a run uses a `Renderer`, which gives the same
bytes by rendering each paper block and layout once and joining each email from those pieces.

Everything from arXiv reaches the templates as plain text and is escaped by Jinja's autoescape;
the only markup we add ourselves is highlighting, built here from escaped pieces.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from email.utils import parseaddr
from functools import cache, cached_property, lru_cache, partial
from importlib import resources
from pathlib import Path

import jinja2
import premailer
from lxml import etree
from markupsafe import Markup, escape
from mjml import mjml2html

from digest.models import Digest, Entry, RenderedEmail, Span

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


def _strings(digest: Digest, shown: int, sender: str) -> dict[str, str]:
    """The per-email text outside the paper blocks, as whole strings (the assembling renderer
    fills these into a layout; the reference renders them through the template)."""
    entries = digest.entries[:shown]
    count, deferred = len(entries), len(digest.entries) - shown
    person = digest.subscriber
    following = "; ".join(person.keywords)
    if person.authors:
        following += "; papers by " + "; ".join(person.authors)
    return {
        "subject": subject_line(digest),
        "preview": "; ".join(entry.paper.title for entry in entries[:3]),
        "day": date.fromisoformat(digest.day).strftime("%A, %-d %B %Y"),
        "summary": f"{count} new paper{'s' if count != 1 else ''} for "
        f"{len(digest.sections)} of your keywords",
        "deferred_line": f"{deferred} more paper{'s' if deferred != 1 else ''} did not fit in "
        f"this email; they will follow in your next digest."
        if deferred
        else "",
        "subscriber_email": person.email,
        "frequency": "daily" if person.weekday is None else "weekly",
        "following": following,
        "sender_address": parseaddr(sender)[1] or sender,
    }


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
    digest: Digest, full: int, shown: int, sender: str, unsubscribe_url: str | None = None
) -> dict[str, object]:
    views = {e.paper.id: entry_view(e, digest.upvotes.get(e.paper.id, 0)) for e in digest.entries}
    sections, compact = _split(digest, full, shown)
    return {
        **_strings(digest, shown, sender),
        "sections": [
            {"keyword": keyword, "count": len(found), "entries": [views[e.paper.id] for e in found]}
            for keyword, found in sections
        ],
        "compact": [views[e.paper.id] for e in compact],
        "unsubscribe_url": unsubscribe_url,
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


def render_reference(
    digest: Digest, *, sender: str, budget: int, unsubscribe_url: str | None = None
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
            context = _context(digest, full, shown, sender, unsubscribe_url)
            attempts[full, shown] = render_html(context), context
        return attempts[full, shown]

    full, shown = _fit(lambda f, s: len(attempt(f, s)[0].encode()), len(digest.entries), budget)
    html, context = attempt(full, shown)
    return _email(digest, html, render_text(context), full, shown)


def _email(digest: Digest, html: str, text: str, full: int, shown: int) -> RenderedEmail:
    return RenderedEmail(
        subject=subject_line(digest),
        html=html,
        text=text,
        paper_ids=digest.paper_ids[:shown],
        full_entries=full,
        deferred=digest.paper_ids[shown:],
    )


def _fit(size: Callable[[int, int], int], total: int, budget: int) -> tuple[int, int]:
    """How many of `total` papers to show in full and how many at all, given the HTML `size`
    of each choice: all in full if that fits, else as many in full as fit with the rest
    compact, else (none in full) as many compact ones as fit."""
    if size(total, total) <= budget:
        return total, total
    full = _largest(lambda n: size(n, total) <= budget, total)
    if full > 0 or size(0, total) <= budget:
        return full, total
    return 0, _largest(lambda n: size(0, n) <= budget, total)


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


# ---------------------------------------------------------------------------------------------
# Render once, assemble per subscriber.
#
# MJML and premailer cost ~20 ms per email; nearly all of an email is the same for everyone who
# gets it: the template, and each paper's block (given the keywords it is tagged with). So a run
# renders each paper block once (many at a time, through the whole template, cutting the
# finished blocks out), and each layout (how many sections; compact list, deferred line,
# unsubscribe link and trending section or not) once, with marker strings where a subscriber's
# own text and paper blocks go. An email is then joined from those finished pieces. The first
# email of each layout, and every `verify_every`-th email, is also rendered the reference way
# and compared byte for byte; a difference logs a warning and that layout goes the slow way.
# ---------------------------------------------------------------------------------------------

_MARK = re.compile(r"@@dg(\w+)@@")
PIECES_PER_DOCUMENT = 250
MARK_PREFIX = "@@dg"
_PAPER_START, _PAPER_END = '<div class="paper"', "</div>"
_ITEM_START, _ITEM_END = "<li", "</li>"
_COMPACT_LIST = '<ul class="compact"'
_TAG_OPEN = re.compile(r"<(\w+)[^<>]*\s([\w:-]+)=\"$")
_VALUES = (
    "subject",
    "preview",
    "day",
    "summary",
    "deferred_line",
    "subscriber_email",
    "frequency",
    "following",
)


def _mark(name: str) -> str:
    return f"{MARK_PREFIX}{name}@@"


@lru_cache(maxsize=16384)
def _html_text(value: str) -> str:
    """`value` as the HTML serializer writes it as text (what premailer's output holds)."""
    element = etree.Element("p")
    element.text = value
    return etree.tostring(element, method="html", encoding="unicode")[3:-4]


@lru_cache(maxsize=16384)
def _html_attr(tag: str, attr: str, value: str) -> str:
    """`value` as the HTML serializer writes it as attribute `attr` of a `tag` element, with
    its quotes (single ones when the value holds a double quote)."""
    element = etree.Element(tag)
    element.set(attr, value)
    out = etree.tostring(element, method="html", encoding="unicode")
    return out[out.index("=") + 1 : out.index(">")]


def _cut(
    html: str, start: str, end: str, lo: int = 0, hi: int | None = None
) -> list[tuple[int, int]]:
    """The [from, to) ranges of the elements that begin with `start` and end at the first `end`
    after it, between `lo` and `hi` (paper blocks and list items hold no nested ones)."""
    hi = len(html) if hi is None else hi
    ranges = []
    at = html.find(start, lo, hi)
    while at != -1:
        stop = html.index(end, at) + len(end)
        ranges.append((at, stop))
        at = html.find(start, stop, hi)
    return ranges


def _compact_range(html: str) -> tuple[int, int]:
    at = html.find(_COMPACT_LIST)
    return (at, html.index("</ul>", at)) if at != -1 else (0, 0)


_SENTINEL = EntryView(
    title=Markup(_mark("slot")),
    title_text=_mark("slot"),
    authors="-",
    date="-",
    category="-",
    abstract=Markup("-"),
    abstract_text="-",
    abstract_cut=False,
    comment="",
    keywords=("-",),
    abs_url="https://arxiv.org/",
    pdf_url="https://arxiv.org/",
)


@dataclass(frozen=True)
class _Piece:
    """One paper's finished blocks, shown in full and in the compact list, HTML and text."""

    html: str
    html_compact: str
    text: str
    text_compact: str

    @cached_property
    def html_size(self) -> int:
        return len(self.html.encode())

    @cached_property
    def html_compact_size(self) -> int:
        return len(self.html_compact.encode())


# A layout: literal strings, values (name, encoder), paper slots ("P": the next section's
# papers) and the compact slot ("C").
_Part = tuple[str, str, Callable[[str], str] | None]


@dataclass(frozen=True)
class _Layout:
    html: tuple[_Part, ...]
    text: tuple[_Part, ...]

    @cached_property
    def html_sizes(self) -> tuple[int, ...]:
        """Bytes of each literal part of the HTML (0 for the others)."""
        return tuple(len(text.encode()) if kind == "lit" else 0 for kind, text, _ in self.html)


def _parse(source: str, *, html: bool) -> tuple[_Part, ...]:
    """A layout's parts: the text between markers, and what each marker stands for."""
    parts: list[_Part] = []
    cursor = 0
    for found in _MARK.finditer(source):
        start, end, name = found.start(), found.end(), found[1]
        encoder: Callable[[str], str] | None = None
        if name not in ("P", "C"):
            encoder = str
            if html:
                encoder = _html_text
                opened = source.rfind("<", 0, start)
                tag = _TAG_OPEN.match(source, opened, start)
                if opened > source.rfind(">", 0, start) and tag:
                    # A whole attribute value: the serializer picks its quotes by the value.
                    if source[start - 2 : start] != '="' or source[end : end + 1] != '"':
                        raise _Slow
                    encoder = partial(_html_attr, tag[1], tag[2])
                    start, end = start - 1, end + 1
        parts.append(("lit", source[cursor:start], None))
        parts.append(("val", name, encoder) if encoder else (name, name, None))
        cursor = end
    parts.append(("lit", source[cursor:], None))
    return tuple(parts)


class Renderer:
    """Renders the emails of one run: each paper's block and each layout once, each email
    joined from those pieces. `render(digest, unsubscribe_url)` returns exactly what
    `render_reference` returns for the same digest; only the time it takes differs.

    Keep one per run (its cache holds the run's papers, not its subscribers)."""

    def __init__(self, *, sender: str, budget: int, verify_every: int = 1000) -> None:
        self.sender, self.budget, self.verify_every = sender, budget, verify_every
        self._pieces: dict[tuple[object, ...], _Piece] = {}
        self._layouts: dict[tuple[object, ...], _Layout | None] = {}
        self._verified: set[tuple[object, ...]] = set()
        self.count = 0
        self.assembled = 0  # emails joined from pieces (the rest were rendered in full)
        self.mismatches = 0

    def render(self, digest: Digest, unsubscribe_url: str | None = None) -> RenderedEmail:
        self.count += 1
        try:
            email, layout_key = self._assemble(digest, unsubscribe_url)
        except _Slow:
            return self._reference(digest, unsubscribe_url)
        except Exception:  # a bug here must cost speed, never an email
            log.exception("assembling the email for %s failed", digest.subscriber.email)
            return self._reference(digest, unsubscribe_url)
        check = layout_key not in self._verified or self.count % self.verify_every == 0
        if check:
            reference = self._reference(digest, unsubscribe_url)
            if reference != email:
                self._mismatch(digest, layout_key, reference, email)
                return reference
            self._verified.add(layout_key)
        self.assembled += 1
        return email

    def _reference(self, digest: Digest, unsubscribe_url: str | None) -> RenderedEmail:
        return render_reference(
            digest, sender=self.sender, budget=self.budget, unsubscribe_url=unsubscribe_url
        )

    def _mismatch(
        self,
        digest: Digest,
        layout_key: tuple[object, ...],
        reference: RenderedEmail,
        email: RenderedEmail,
    ) -> None:
        self.mismatches += 1
        self._layouts[layout_key] = None
        where = next(
            (i for i, (a, b) in enumerate(zip(reference.html, email.html, strict=False)) if a != b),
            min(len(reference.html), len(email.html)),
        )
        log.warning(
            "the assembled email for %s differs from the full rendering (HTML from character "
            "%d: %r, expected %r); emails of this layout are rendered in full from now on",
            digest.subscriber.email,
            where,
            email.html[where : where + 60],
            reference.html[where : where + 60],
        )

    def _assemble(
        self, digest: Digest, unsubscribe_url: str | None
    ) -> tuple[RenderedEmail, tuple[object, ...]]:
        entries = digest.entries
        keys = [self._key(digest, entry) for entry in entries]
        missing = {
            key: (entry, digest.upvotes.get(entry.paper.id, 0))
            for key, entry in zip(keys, entries, strict=True)
            if key not in self._pieces
        }
        if missing:
            self._render_pieces(missing)
        pieces = [self._pieces[k] for k in keys]
        by_id = {entry.paper.id: piece for entry, piece in zip(entries, pieces, strict=True)}

        def size(full: int, shown: int) -> int:  # of the HTML in bytes, without building it
            _, layout, values, slots = self._shape(digest, by_id, full, shown, unsubscribe_url)
            return _measure(layout, values, slots)

        full, shown = _fit(size, len(entries), self.budget)
        layout_key, layout, values, slots = self._shape(digest, by_id, full, shown, unsubscribe_url)
        html = _fill(layout.html, values, slots, lambda p: p.html, lambda p: p.html_compact)
        text = _fill(layout.text, values, slots, lambda p: p.text, lambda p: p.text_compact)
        email = _email(digest, "".join(html), "".join(text), full, shown)
        return replace(email, html_parts=tuple(html), text_parts=tuple(text)), layout_key

    @staticmethod
    def _key(digest: Digest, entry: Entry) -> tuple[object, ...]:
        upvotes = digest.upvotes.get(entry.paper.id, 0)
        return (
            entry.paper,
            entry.keywords,
            entry.title_spans,
            entry.abstract_spans,
            entry.authors,
            upvotes,
        )

    def _shape(
        self,
        digest: Digest,
        pieces: dict[str, _Piece],
        full: int,
        shown: int,
        unsubscribe_url: str | None,
    ) -> tuple[tuple[object, ...], _Layout, dict[str, str], dict[str, list[list[_Piece]]]]:
        """The layout, values and pieces of the email showing the first `shown` entries, the
        first `full` of them in full."""
        sections, compact = _split(digest, full, shown)
        strings = _strings(digest, shown, self.sender)
        values = {name: strings[name] for name in _VALUES}
        for index, (keyword, found) in enumerate(sections):
            values[f"k{index}"], values[f"n{index}"] = keyword, str(len(found))
        if unsubscribe_url is not None:
            values["unsubscribe"] = unsubscribe_url
        if any(MARK_PREFIX in value for value in values.values()):
            raise _Slow
        layout_key = (
            len(sections),
            bool(compact),
            bool(strings["deferred_line"]),
            unsubscribe_url is not None,
            digest.trending,
        )
        layout = self._layout(layout_key)
        slots = {
            "P": [[pieces[e.paper.id] for e in found] for _, found in sections],
            "C": [[pieces[e.paper.id] for e in compact]],
        }
        return layout_key, layout, values, slots

    def _layout(self, key: tuple[object, ...]) -> _Layout:
        if key not in self._layouts:
            try:
                self._layouts[key] = self._make_layout(key)
            except _Slow:
                self._layouts[key] = None
        layout = self._layouts[key]
        if layout is None:
            raise _Slow
        return layout

    def _make_layout(self, key: tuple[object, ...]) -> _Layout:
        sections, compact, deferred, unsubscribe, trending = key
        assert isinstance(sections, int) and isinstance(trending, tuple)
        context: dict[str, object] = {name: _mark(name) for name in _VALUES}
        context.update(
            sender_address=parseaddr(self.sender)[1] or self.sender,
            sections=[
                {"keyword": _mark(f"k{i}"), "count": _mark(f"n{i}"), "entries": [_SENTINEL]}
                for i in range(sections)
            ],
            compact=[_SENTINEL] if compact else [],
            deferred_line=_mark("deferred_line") if deferred else "",
            unsubscribe_url=_mark("unsubscribe") if unsubscribe else None,
            trending=trending,
        )
        html = render_html(context)
        spans = _cut(html, _PAPER_START, _PAPER_END)
        lo, hi = _compact_range(html)
        spans += _cut(html, _ITEM_START, _ITEM_END, lo, hi)
        for at, stop in sorted(spans, reverse=True):
            html = (
                html[:at]
                + (_mark("P") if html.startswith(_PAPER_START, at) else _mark("C"))
                + html[stop:]
            )
        text = render_text(context)
        text = text.replace(_paper_text(_SENTINEL), _mark("P"))
        text = text.replace(_compact_text(_SENTINEL), _mark("C"))
        layout = _Layout(_parse(html, html=True), _parse(text, html=False))
        known = {*_VALUES, "unsubscribe", *(f"{c}{i}" for c in "kn" for i in range(sections))}
        for parts in (layout.html, layout.text):
            names = [name for kind, name, _ in parts if kind != "lit"]
            # Marker-like text in the trending list or the sender would be taken for a slot.
            if not set(names) <= known | {"P", "C"} or names.count("P") != sections:
                raise _Slow
            if names.count("C") != int(bool(compact)):
                raise _Slow
        return layout

    def prepare(self, digests: Iterable[Digest]) -> None:
        """Finish, in a few documents, every paper block these digests need that is not ready
        yet. One trip through MJML and premailer costs ~7 ms plus ~0.4 ms per block, so a run
        that calls this for each batch of subscribers before rendering them pays the 7 ms per
        batch instead of per subscriber. Optional: `render` finishes what is missing itself."""
        missing: dict[tuple[object, ...], tuple[Entry, int]] = {}
        for digest in digests:
            for entry in digest.entries:
                key = self._key(digest, entry)
                if key not in self._pieces:
                    missing[key] = (entry, digest.upvotes.get(entry.paper.id, 0))
        batch = list(missing.items())
        for start in range(0, len(batch), PIECES_PER_DOCUMENT):
            try:
                self._render_pieces(dict(batch[start : start + PIECES_PER_DOCUMENT]))
            except Exception:  # each email then finishes (or renders in full) on its own
                log.exception("rendering a batch of paper blocks failed")

    def _render_pieces(self, missing: dict[tuple[object, ...], tuple[Entry, int]]) -> None:
        """Finish the blocks of these papers: all of them in one document, shown in full and
        in the compact list, through the whole template; then cut each block out."""
        views = [entry_view(entry, upvotes) for entry, upvotes in missing.values()]
        context: dict[str, object] = {name: "-" for name in _VALUES}
        context.update(
            sender_address="-",
            sections=[{"keyword": "-", "count": "-", "entries": views}],
            compact=views,
            deferred_line="",
            unsubscribe_url=None,
            trending=(),
        )
        html = render_html(context)
        blocks = _cut(html, _PAPER_START, _PAPER_END)
        lo, hi = _compact_range(html)
        items = _cut(html, _ITEM_START, _ITEM_END, lo, hi)
        if len(blocks) != len(views) or len(items) != len(views):
            raise _Slow
        for key, view, block, item in zip(missing, views, blocks, items, strict=True):
            self._pieces[key] = _Piece(
                html=html[block[0] : block[1]],
                html_compact=html[item[0] : item[1]],
                text=_paper_text(view),
                text_compact=_compact_text(view),
            )


class _Slow(Exception):
    """This email cannot be joined from pieces: render it the reference way."""


def _paper_text(view: EntryView) -> str:
    return _env(False).get_template("_paper.txt").render(paper=view)


def _compact_text(view: EntryView) -> str:
    return _env(False).get_template("_compact.txt").render(paper=view)


def _fill(
    parts: tuple[_Part, ...],
    values: dict[str, str],
    slots: dict[str, list[list[_Piece]]],
    whole: Callable[[_Piece], str],
    compact: Callable[[_Piece], str],
) -> list[str]:
    """The parts of one email's HTML or text, in order: literals, values, pieces."""
    out: list[str] = []
    used = {"P": 0, "C": 0}
    for kind, name, encoder in parts:
        if kind == "lit":
            out.append(name)
        elif kind == "val":
            assert encoder is not None
            out.append(encoder(values[name]))
        else:
            pieces = slots[kind][used[kind]]
            used[kind] += 1
            pick = whole if kind == "P" else compact
            out.extend(pick(piece) for piece in pieces)
    return out


def _measure(layout: _Layout, values: dict[str, str], slots: dict[str, list[list[_Piece]]]) -> int:
    """The size in bytes of the HTML `_fill` would join, without joining it."""
    total = 0
    used = {"P": 0, "C": 0}
    for (kind, name, encoder), size in zip(layout.html, layout.html_sizes, strict=True):
        if kind == "lit":
            total += size
        elif kind == "val":
            assert encoder is not None
            total += len(encoder(values[name]).encode())
        elif kind == "P":
            total += sum(piece.html_size for piece in slots[kind][used[kind]])
            used[kind] += 1
        else:
            total += sum(piece.html_compact_size for piece in slots[kind][used[kind]])
            used[kind] += 1
    return total
