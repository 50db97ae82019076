"""Paper blocks, finished once per run with holes, filled in per reader.

A paper's block (in full and in the compact list, HTML and text) goes through the whole
template once (many papers per trip through MJML and premailer), with marks where what differs
per reader goes: the highlighted title and abstract, the keyword tags (and "by <author>"
tags). A reader's version is then filled in as text, serialized exactly as lxml writes it; the
highlight and tag elements are written as one prototype rendering showed premailer finishes
them. Used by digest/assemble.py, whose safety nets compare the result with the reference.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from markupsafe import Markup

from digest.latex import readable, readable_spans
from digest.models import Digest, Entry, Paper
from digest.pieces import (
    _ITEM_END,
    _ITEM_START,
    _PAPER_END,
    _PAPER_START,
    _compact_range,
    _cut,
    _cut_at_holes,
    _highlighted,
    _html_text,
    _Part,
    _part,
    _Piece,
    _Skeleton,
    _Slow,
    make_piece,
)
from digest.render import ABSTRACT_CHARS, EntryView, _env, entry_view, render_html, shorten

log = logging.getLogger(__name__)

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

PAPERS_PER_TRIP = 250
PIECE_CACHE = 300_000  # readers' versions of blocks kept (then forgotten and made again)
FILL_CACHE = 100_000  # hole fills kept


class Blocks:
    """The finished paper blocks of one run, and every reader's version of them.

    Holes are marked with a string no text can hold by chance: a fresh one per run. `trips`
    counts the trips through MJML and premailer, here and for the layouts (`trip`)."""

    def __init__(self) -> None:
        self.mark = f"@@{secrets.token_hex(6)}x"
        self.marks = re.compile(re.escape(self.mark) + r"(\w+?)@@")
        self.skeletons: dict[tuple[str, int, int, bool, bool], _Skeleton | None] = {}
        # What fills the holes (a title highlighted one way, a set of tags...), by what it
        # depends on; and each entry's finished piece, by the Entry object itself (planning
        # shares entries between readers).
        self.fills: dict[tuple[object, ...], _Part] = {}
        self._keys: dict[tuple[int, int, bool, bool], tuple[Entry, _Piece]] = {}
        self._prototype: dict[str, str] | None = None
        self.trips = 0

    def m(self, name: str) -> str:
        """The mark of hole `name`."""
        return f"{self.mark}{name}@@"

    def trip(self, context: dict[str, object]) -> str:
        """The whole template through Jinja, MJML and premailer, counted."""
        self.trips += 1
        return render_html(context)

    def piece(
        self, entry: Entry, upvotes: int, links: bool = False, compact: bool = False
    ) -> _Piece:
        """This reader's version of the entry's block (`upvotes`: its trending badge; `links`:
        with feedback links, left as holes for `linked`): in full (its "html" and "text"
        forms) or, `compact`, as in the compact list ("html_compact", "text_compact"). Most
        emails at the budget show every paper compact: their full forms are never made."""
        known = self._keys.get((id(entry), upvotes, links, compact))
        if known is not None and known[0] is entry:
            return known[1]
        return self._piece(entry, upvotes, links, compact)

    def pieces(
        self,
        entries: Sequence[Entry],
        upvotes: Mapping[str, int],
        links: bool = False,
        compact: bool = False,
    ) -> list[_Piece]:
        """`piece` of each of these entries (`upvotes`: by paper id), the ones made already
        found in one pass (most of an email's papers are in other readers' emails too)."""
        keys, make = self._keys, self._piece
        found = []
        for entry in entries:
            votes = upvotes.get(entry.paper.id, 0)
            known = keys.get((id(entry), votes, links, compact))
            if known is not None and known[0] is entry:
                found.append(known[1])
            else:
                found.append(make(entry, votes, links, compact))
        return found

    def _piece(self, entry: Entry, upvotes: int, links: bool, compact: bool) -> _Piece:
        """A piece not made yet (`piece`): made from the paper's skeleton, and kept."""
        paper = entry.paper
        rec = entry.why is not None
        key = (paper.id, paper.version, upvotes, rec, links)
        skeleton = self.skeletons.get(key)
        if skeleton is None or (skeleton.paper is not paper and skeleton.paper != paper):
            self.prepare_papers([(paper, upvotes, rec, links)])
            skeleton = self.skeletons.get(key)
        tags = entry.keywords
        if entry.authors:
            tags += tuple(f"by {author}" for author in entry.authors)
        if (
            skeleton is None
            or (skeleton.paper is not paper and skeleton.paper != paper)
            or bool(tags) == rec
        ):
            raise _Slow
        ident = (paper.id, paper.version)
        title = entry.title_spans
        proto = self._prototype_tags()
        fill = self._fill
        text = {"K": fill(("TK", tags), lambda: ", ".join(tags))}
        if rec:
            why = entry.why or ""
            text["W"] = fill(("TW", why), lambda: why)
        cuts = skeleton.cuts
        if compact:
            html = {
                "T": fill(
                    ("CT", ident, title),
                    lambda: _highlighted(*readable_spans(paper.title, title), proto["compact"]),
                ),
                "K": fill(("K", tags), lambda: _html_text(", ".join(tags))),
            }
            piece = make_piece(True, cuts["html_compact"], html, cuts["text_compact"], text)
        else:
            abstract = entry.abstract_spans
            html = {
                "T": fill(
                    ("T", ident, title),
                    lambda: _highlighted(*readable_spans(paper.title, title), proto["title"]),
                ),
                "A": fill(
                    ("A", ident, abstract),
                    lambda: _highlighted(
                        skeleton.abstract,
                        readable_spans(paper.abstract, abstract)[1],
                        proto["abstract"],
                    ),
                ),
                "G": fill(
                    ("G", tags),
                    lambda: " ".join(proto["tag"] + _html_text(tag) + "</span>" for tag in tags),
                ),
            }
            if rec:
                html["W"] = fill(("W", why), lambda: _html_text(why))
            piece = make_piece(False, cuts["html"], html, cuts["text"], text)
        if len(self._keys) >= PIECE_CACHE:
            self._keys.clear()
        # the entry kept: its id stays its own
        self._keys[id(entry), upvotes, links, compact] = (entry, piece)
        return piece

    def _fill(self, key: tuple[object, ...], make: Callable[[], str]) -> _Part:
        """What fills one hole, finished once (by what it depends on) and kept."""
        found = self.fills.get(key)
        if found is None:
            if len(self.fills) >= FILL_CACHE:
                self.fills.clear()
            found = self.fills[key] = _part(make())
        return found

    def _view(self, paper: Paper, upvotes: int, rec: bool, links: bool) -> EntryView:
        entry = Entry(paper, (), why=self.m("W")) if rec else Entry(paper, (self.m("K"),))
        view = entry_view(entry, upvotes)
        if links:
            view = replace(view, more_url=self.m("M"), less_url=self.m("L"))
        return replace(view, title=Markup(self.m("T")), abstract=Markup(self.m("A")))

    def prepare(self, digests: Iterable[Digest], links: bool = False) -> None:
        """Finish, in a few trips, the block of every paper these digests show that is not
        ready yet (optional: `render` finishes what is missing itself, one trip each)."""
        wanted: dict[tuple[str, int, int, bool, bool], tuple[Paper, int, bool, bool]] = {}
        for digest in digests:
            for entry in digest.entries:
                paper, upvotes = entry.paper, digest.upvotes.get(entry.paper.id, 0)
                key = (paper.id, paper.version, upvotes, entry.why is not None, links)
                if key not in self.skeletons and key not in wanted:
                    wanted[key] = (paper, upvotes, key[3], links)
        batch = list(wanted.values())
        for start in range(0, len(batch), PAPERS_PER_TRIP):
            try:
                self.prepare_papers(batch[start : start + PAPERS_PER_TRIP])
            except Exception:  # each email then finishes (or renders in full) on its own
                log.exception("rendering a batch of paper blocks failed")

    def prepare_papers(self, papers: Sequence[tuple[Paper, int, bool, bool]]) -> None:
        """Finish these papers' blocks, in full and in the compact list, in one document
        through the whole template; then cut each block out and mark its holes."""
        views = [self._view(*paper) for paper in papers]
        html = self.trip(self._context(views, views))
        blocks = _cut(html, _PAPER_START, _PAPER_END)
        lo, hi = _compact_range(html)
        items = _cut(html, _ITEM_START, _ITEM_END, lo, hi)
        if len(blocks) != len(views) or len(items) != len(views):
            raise _Slow
        for (paper, upvotes, rec, links), view, block, item in zip(
            papers, views, blocks, items, strict=True
        ):
            key = (paper.id, paper.version, upvotes, rec, links)
            ml = "ML" if links else ""
            try:
                whole = html[block[0] : block[1]]
                forms = {
                    "html": self._holes(whole if rec else self._tags_hole(whole), _expect(rec, ml)),
                    "html_compact": self._holes(
                        html[item[0] : item[1]], ("T" if rec else "TK") + ml
                    ),
                    "text": self._holes(_paper_text(view), ("W" if rec else "K") + ml),
                    "text_compact": self._holes(_compact_text(view), ("" if rec else "K") + ml),
                }
                self.skeletons[key] = _Skeleton(
                    paper=paper,
                    abstract=shorten(readable(paper.abstract), ABSTRACT_CHARS),
                    cuts={kind: _cut_at_holes(items) for kind, items in forms.items()},
                )
            except _Slow:
                self.skeletons[key] = None

    def _tags_hole(self, block: str) -> str:
        """The one keyword tag element of a skeleton block replaced by the tags' hole."""
        at = block.find(self.m("K"))
        opened = block.rfind("<span", 0, at)
        closed = block.find("</span>", at)
        if at == -1 or opened == -1 or closed == -1 or block.count(self.m("K")) != 1:
            raise _Slow
        return block[:opened] + self.m("G") + block[closed + len("</span>") :]

    def _holes(self, source: str, expected: str) -> tuple[_Part | str, ...]:
        """`source` split at its hole marks, which must be exactly `expected`, in order: the
        literal strings between them finished (empty ones left out), and the holes' names."""
        out: list[_Part | str] = []
        cursor = 0
        names = []
        for found in self.marks.finditer(source):
            start, end = found.start(), found.end()
            if found[1] in "ML" and source[start - 1 : start] == '"':  # an attribute value:
                if source[end : end + 1] != '"':  # the fill brings its own quotes (`_href`)
                    raise _Slow
                start, end = start - 1, end + 1
            if start > cursor:
                out.append(_part(source[cursor:start]))
            out.append(found[1])
            names.append(found[1])
            cursor = end
        if cursor < len(source):
            out.append(_part(source[cursor:]))
        if "".join(names) != expected:
            raise _Slow
        return tuple(out)

    def _prototype_tags(self) -> dict[str, str]:
        """How a highlight (in a title, an abstract, a compact title) and a keyword tag begin
        in the finished HTML, learned from one paper rendered with both."""
        if self._prototype is None:
            hl = Markup('<span class="hl">') + self.m("h") + Markup("</span>")
            view = replace(
                _SENTINEL, title=hl, abstract=hl, keywords=(self.m("k"),), title_text="-"
            )
            html = self.trip(self._context([view], [view]))
            opens = []
            for found in re.finditer(re.escape(self.m("h")) + "</span>", html):
                opens.append(html[html.rfind("<span", 0, found.start()) : found.start()])
            at = html.find(self.m("k"))
            tag = html[html.rfind("<span", 0, at) : at]
            if len(opens) != 3 or 'class="tag"' not in tag:
                raise _Slow
            self._prototype = {"title": opens[0], "abstract": opens[1], "compact": opens[2]}
            self._prototype["tag"] = tag
        return self._prototype

    @staticmethod
    def _context(full: list[EntryView], compact: list[EntryView]) -> dict[str, object]:
        context: dict[str, object] = {name: "-" for name in _VALUES}
        context.update(
            sender_address="-",
            sections=[{"keyword": "-", "count": "-", "entries": full}],
            compact=compact,
            deferred_line="",
            unsubscribe_url=None,
            likes_url=None,
            trending=(),
        )
        return context

    # Layouts -------------------------------------------------------------------------------


def _expect(rec: bool, links: str) -> str:
    """The holes of a block in full: title, tags (or the recommendation's why), abstract."""
    return ("TAW" if rec else "TGA") + links


_SENTINEL = EntryView(
    title=Markup("-"),
    title_text="-",
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


def _paper_text(view: EntryView) -> str:
    return _env(False).get_template("_paper.txt").render(paper=view)


def _compact_text(view: EntryView) -> str:
    return _env(False).get_template("_compact.txt").render(paper=view)
