"""An email's layout, made once per shape, and filled per email with its values and pieces.

A layout is the whole template rendered once (through MJML and premailer: `Blocks.trip`) for
one shape of email (`Layouts.shape`'s key: how many sections, compact list or not, deferred
line, unsubscribe/preferences/likes links, trending section), with marks where a subscriber's
own text goes and a slot mark for each section's papers and the compact list; then cut at the
marks into literal parts and named holes. `fill` joins one email's HTML or text from a layout,
the values and the paper pieces (digest/blocks.py), with each part's quoted-printable encoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parseaddr
from functools import partial

from markupsafe import Markup

from digest.blocks import _SENTINEL, _VALUES, Blocks, _compact_text, _paper_text
from digest.feedback_links import ReaderLinks
from digest.mailer import qp_part_cached, qp_weight
from digest.models import Digest
from digest.piece_links import EmailLinks
from digest.pieces import (
    _ITEM_END,
    _ITEM_START,
    _PAPER_END,
    _PAPER_START,
    _compact_range,
    _cut,
    _html_attr,
    _html_text,
    _Piece,
    _Slow,
)
from digest.render import render_text

_TAG_OPEN = re.compile(r"<(\w+)[^<>]*\s([\w:-]+)=\"$")

# ("lit", text, None) | ("val", name, how the value is written) | ("P" or "C", name, None)
LayoutPart = tuple[str, str, Callable[[str], str] | None]


@dataclass(frozen=True)
class Layout:
    html: tuple[LayoutPart, ...]
    text: tuple[LayoutPart, ...]
    html_literal_size: int  # mailer.qp_weight of every literal part of the HTML together
    html_values: tuple[tuple[str, Callable[[str], str]], ...] = ()  # its values' (name, encoder)


class Layouts:
    """The layouts of one run, by shape (None: cannot be made, or forgotten)."""

    def __init__(self, blocks: Blocks, sender: str) -> None:
        self.blocks, self.sender = blocks, sender
        self.made: dict[tuple[object, ...], Layout | None] = {}

    def get(self, key: tuple[object, ...]) -> Layout:
        """The layout of `key` (made the first time); _Slow if it cannot be made or was
        forgotten."""
        if key not in self.made:
            try:
                self.made[key] = self._make(key)
            except _Slow:
                self.made[key] = None
        layout = self.made[key]
        if layout is None:
            raise _Slow
        return layout

    def forget(self, key: tuple[object, ...]) -> None:
        """Emails of this layout take the reference path from now on."""
        self.made[key] = None

    def shape(
        self,
        digest: Digest,
        full: int,
        shown: int,
        strings: dict[str, str],
        urls: tuple[str | None, str | None],
        links: ReaderLinks | None = None,
    ) -> tuple[tuple[object, ...], Layout, dict[str, str]]:
        """The layout key, layout and values of the email showing the first `shown` entries,
        the first `full` of them in full (`strings`: `render.strings_of`'s for `shown`; `urls`:
        its unsubscribe and preferences links; `links`: the reader's feedback links)."""
        values = {name: strings[name] for name in _VALUES}
        start = sections = 0
        for section in digest.sections:
            in_full = min(len(section.entries), max(0, full - start))
            start += len(section.entries)
            if in_full:
                values[f"k{sections}"], values[f"n{sections}"] = section.keyword, str(in_full)
                sections += 1
        unsubscribe_url, preferences_url = urls
        if unsubscribe_url is not None:
            values["unsubscribe"] = unsubscribe_url
        if preferences_url is not None:
            values["preferences"] = preferences_url
        if links is not None:
            values["likes"] = links.likes
        if any(self.blocks.mark in value for value in values.values()):
            raise _Slow
        layout_key = (
            sections,
            shown > full,
            bool(strings["deferred_line"]),
            unsubscribe_url is not None,
            preferences_url is not None,
            digest.trending,
            links is not None,
        )
        return layout_key, self.get(layout_key), values

    def _make(self, key: tuple[object, ...]) -> Layout:
        sections, compact, deferred, unsubscribe, preferences, trending, likes = key
        assert isinstance(sections, int) and isinstance(trending, tuple)
        slot = replace(
            _SENTINEL, title=Markup(self.blocks.m("slot")), title_text=self.blocks.m("slot")
        )
        context: dict[str, object] = {name: self.blocks.m(name) for name in _VALUES}
        context.update(
            sender_address=parseaddr(self.sender)[1] or self.sender,
            sections=[
                {
                    "keyword": self.blocks.m(f"k{i}"),
                    "count": self.blocks.m(f"n{i}"),
                    "entries": [slot],
                }
                for i in range(sections)
            ],
            compact=[slot] if compact else [],
            deferred_line=self.blocks.m("deferred_line") if deferred else "",
            unsubscribe_url=self.blocks.m("unsubscribe") if unsubscribe else None,
            preferences_url=self.blocks.m("preferences") if preferences else None,
            likes_url=self.blocks.m("likes") if likes else None,
            trending=trending,
        )
        html = self.blocks.trip(context)
        spans = _cut(html, _PAPER_START, _PAPER_END)
        lo, hi = _compact_range(html)
        spans += _cut(html, _ITEM_START, _ITEM_END, lo, hi)
        for at, stop in sorted(spans, reverse=True):
            is_paper = html.startswith(_PAPER_START, at)
            html = html[:at] + self.blocks.m("P" if is_paper else "C") + html[stop:]
        text = render_text(context)
        text = text.replace(_paper_text(slot), self.blocks.m("P"))
        text = text.replace(_compact_text(slot), self.blocks.m("C"))
        html_parts, text_parts = self._parse(html, html=True), self._parse(text, html=False)
        known = {*_VALUES, "unsubscribe", "preferences", "likes"}
        known |= {f"{c}{i}" for c in "kn" for i in range(sections)}
        for parts in (html_parts, text_parts):
            names = [name for kind, name, _ in parts if kind != "lit"]
            if not set(names) <= known | {"P", "C"} or names.count("P") != sections:
                raise _Slow
            if names.count("C") != int(bool(compact)):
                raise _Slow
        literal = sum(qp_weight(text) for kind, text, _ in html_parts if kind == "lit")
        values = tuple((name, how) for kind, name, how in html_parts if kind == "val" and how)
        return Layout(html_parts, text_parts, literal, values)

    def _parse(self, source: str, *, html: bool) -> tuple[LayoutPart, ...]:
        """A layout's parts: the text between marks, and what each mark stands for."""
        parts: list[LayoutPart] = []
        cursor = 0
        for found in self.blocks.marks.finditer(source):
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


def fill(
    parts: tuple[LayoutPart, ...],
    values: dict[str, str],
    slots: list[list[tuple[_Piece, str]]],
    compact: list[tuple[_Piece, str]],
    links: EmailLinks | None,
    *,
    html: bool,
    strings: bool = True,
) -> tuple[list[str], list[bytes]]:
    """The parts of one email's HTML or text, in order (literals, values, pieces with the
    reader's links), and each part as quoted-printable (a piece's encoding is made once and
    kept with it); not `strings`: only the encodings (the parts come back empty)."""
    out: list[str] = []
    encoded: list[bytes] = []
    into = out if strings else None
    section = 0
    for kind, name, encoder in parts:
        if kind == "lit" or kind == "val":
            if kind == "val":
                assert encoder is not None
                name = encoder(values[name])
            if name:
                if into is not None:
                    into.append(name)
                encoded.append(qp_part_cached(name))
        else:
            shown = compact if kind == "C" else slots[section]
            section += kind == "P"
            if links is None:
                for piece, _ in shown:
                    piece.write(html, into, encoded)
            elif into is None:  # only the encodings: the links' encodings alone
                codes = links.codes
                for piece, paper_id in shown:
                    piece.encode(html, encoded, codes(paper_id, html))
            else:
                pair = links.pair
                for piece, paper_id in shown:
                    piece.write(html, into, encoded, pair(paper_id, html))
    return out, encoded
