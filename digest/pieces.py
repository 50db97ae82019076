"""The finished pieces a paper's block is joined from: HTML and text exactly as the template
and lxml's serializer write them (`_html_text`, `_html_attr`, `_highlighted`), each with its
quoted-printable encoding and size (`_part`); a block's forms cut at their holes (`_Cut`,
`_Skeleton`), and one reader's version of a block (`_Piece`), which writes itself into an
email. Made by digest/blocks.py, joined into emails by digest/layouts.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from lxml import etree

from digest.mailer import qp_part, qp_weight
from digest.models import Paper, Span

_PAPER_START, _PAPER_END = '<div class="paper"', "</div>"
_ITEM_START, _ITEM_END = "<li", "</li>"
_COMPACT_LIST = '<ul class="compact"'
LINK_NAMES = ("M", "L")  # a piece's feedback links' holes (piece_links.EmailLinks)
_REWRITTEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # the parser would change these


class _Slow(Exception):
    """This email cannot be joined from pieces: render it the reference way."""


# What the HTML serializer writes as it is: as text, ASCII but "&", "<", ">" and control
# characters (tab and newline kept); in an href, what PLAIN_URL allows. Checked against
# lxml in tests/test_render_equivalence.py.
_PLAIN_TEXT = re.compile(r"[\t\n\x20-\x25\x27-\x3b\x3d\x3f-\x7e]*")
PLAIN_URL = re.compile(r"[A-Za-z0-9._~!:/?=#%+,;@*()-]*")
# ...and as any other attribute's value (an aria-label, a title), printable ASCII but '"', "&",
# "<" and ">" (URI attributes, which the serializer escapes its own way, excepted).
_PLAIN_ATTR = re.compile(r"[\x20\x21\x23-\x25\x27-\x3b\x3d\x3f-\x7e]*")
_URI_ATTRS = frozenset({"href", "src", "action", "name", "background", "cite", "longdesc"})


def _html_text(value: str) -> str:
    """`value` as the HTML serializer writes it as text (what premailer's output holds)."""
    if _PLAIN_TEXT.fullmatch(value):
        return value  # most of a run's values: no trip through lxml
    return _html_text_lxml(value)


@lru_cache(maxsize=65536)
def _html_text_lxml(value: str) -> str:
    if _REWRITTEN.search(value):
        raise _Slow
    element = etree.Element("p")
    element.text = value.replace("\r\n", "\n").replace("\r", "\n")  # as the parser reads it
    return etree.tostring(element, method="html", encoding="unicode")[3:-4]


@lru_cache(maxsize=16384)
def _html_attr(tag: str, attr: str, value: str) -> str:
    """`value` as the HTML serializer writes it as attribute `attr` of a `tag` element, with
    its quotes (single ones when the value holds a double quote)."""
    if tag == "a" and attr == "href" and PLAIN_URL.fullmatch(value):
        return f'"{value}"'
    if attr not in _URI_ATTRS and _PLAIN_ATTR.fullmatch(value):
        return f'"{value}"'  # (an email's aria-label: one a reader, no trip through lxml)
    element = etree.Element(tag)
    element.set(attr, value)
    out = etree.tostring(element, method="html", encoding="unicode")
    return out[out.index("=") + 1 : out.index(">")]


def _highlighted(text: str, spans: Sequence[Span], open_tag: str) -> str:
    """What `render.highlight(text, spans)` becomes in the finished HTML."""
    parts: list[str] = []
    cursor = 0
    for start, end in spans:
        start, end = max(start, cursor), min(end, len(text))
        if start >= end:
            continue
        parts.append(_html_text(text[cursor:start]))
        parts.append(open_tag + _html_text(text[start:end]) + "</span>")
        cursor = end
    parts.append(_html_text(text[cursor:]))
    return "".join(parts)


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


# A finished string, as quoted-printable (mailer.qp_part), and its mailer.qp_weight.
_Part = tuple[str, bytes, int]


def _part(text: str) -> _Part:
    return text, qp_part(text), qp_weight(text)


@dataclass(frozen=True)
class _Cut:
    """One form of a paper's block cut at its holes: its literal strings (and their encodings)
    and the names of the holes between them; `weight`: the literals' mailer.qp_weight; `fills`:
    how many holes are not links. `order` picks, from (literals + the fills + the links'
    four strings), the form's parts in order: a reader's version is written with one C call."""

    strings: tuple[str, ...]
    codes: tuple[bytes, ...]
    holes: tuple[str, ...]
    weight: int
    fills: int
    order: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    filled: tuple[str, ...] = ()  # the holes that are not links, in order


def _picker(indices: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    if len(indices) >= 2:
        return itemgetter(*indices)
    return lambda items: tuple(items[i] for i in indices)


def _cut_at_holes(items: tuple[_Part | str, ...]) -> _Cut:
    """A `Blocks._holes` result (literal parts, hole names) as a `_Cut`."""
    literals = [item for item in items if isinstance(item, tuple)]
    holes = tuple(item for item in items if isinstance(item, str))
    fills = sum(1 for hole in holes if hole not in LINK_NAMES)
    links_at = len(literals) + fills  # where the four link strings are in what `order` picks from
    indices: list[int] = []
    literal = fill = 0
    for item in items:
        if isinstance(item, tuple):
            indices.append(literal)
            literal += 1
        elif item in LINK_NAMES:
            first = links_at + 2 * LINK_NAMES.index(item)
            indices += (first, first + 1)
        else:
            indices.append(len(literals) + fill)
            fill += 1
    return _Cut(
        tuple(p[0] for p in literals),
        tuple(p[1] for p in literals),
        holes,
        sum(p[2] for p in literals),
        fills,
        _picker(indices),
        tuple(hole for hole in holes if hole not in LINK_NAMES),
    )


KINDS = ("html", "html_compact", "text", "text_compact")  # a block's forms


@dataclass(frozen=True)
class _Skeleton:
    """One paper's finished blocks with holes, in each of the `KINDS` (in full and in the
    compact list, HTML and text)."""

    paper: Paper
    abstract: str  # as shown (shortened)
    cuts: dict[str, _Cut]


# A paper's two links as a piece writes them: (more start, more end, less start, less end),
# and the same four encoded.
LinkCodes = tuple[bytes, ...]  # the four encoded (none: a block without links)
Links = tuple[tuple[str, str, str, str], tuple[bytes, bytes, bytes, bytes]]
_NO_LINKS: Links = ((), ())  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Piece:
    """One reader's version of a paper block, in full ("html" and "text" forms) or `compact`
    ("html_compact" and "text_compact"): its two forms cut at their holes, and the strings
    (and encodings) that fill the holes, links left out (`write` puts the reader's links in:
    piece_links.EmailLinks); `html_size`: its HTML form's mailer.qp_weight, without links."""

    compact: bool
    html_cut: _Cut
    html_texts: tuple[str, ...]
    html_codes: tuple[bytes, ...]
    text_cut: _Cut
    text_texts: tuple[str, ...]
    text_codes: tuple[bytes, ...]
    html_size: int
    cr: bool = False  # a CR in its text form (the HTML serializer writes none): Renderer.encode

    def write(
        self,
        html: bool,
        out: list[str] | None,
        encoded: list[bytes],
        links: Links | None = None,
    ) -> None:
        """Append this block's HTML (else text) form to `out` (unless None: only the encoding
        is wanted) and its quoted-printable encoding to `encoded`, with `links` ("More like
        this", "Not for me") in its link holes."""
        if html:
            cut, fills, codes = self.html_cut, self.html_texts, self.html_codes
        else:
            cut, fills, codes = self.text_cut, self.text_texts, self.text_codes
        texts, link_codes = links or _NO_LINKS
        if len(link_codes) != 2 * (len(cut.holes) - cut.fills):
            raise _Slow  # links for a block without them, or none for one with them
        if out is not None:
            out += cut.order(cut.strings + fills + texts)
        encoded += cut.order(cut.codes + codes + link_codes)

    def encode(self, html: bool, encoded: list[bytes], links: LinkCodes = ()) -> None:
        """`write(html, None, encoded, ...)` with these encoded `links` (`EmailLinks.codes`).
        (Joining each piece's encoding once between its links saved ~3% of a broad email's
        CPU but kept a second copy of every piece's bytes in the piece cache: not worth the
        memory at 100,000 readers.)"""
        self.write(html, None, encoded, ((), links))  # type: ignore[arg-type]


def make_piece(
    compact: bool, html_cut: _Cut, html: dict[str, _Part], text_cut: _Cut, text: dict[str, _Part]
) -> _Piece:
    """The piece whose two forms' holes `html` and `text` fill (by hole name)."""
    try:
        html_fills = [html[hole] for hole in html_cut.filled]
        text_fills = [text[hole] for hole in text_cut.filled]
    except KeyError:
        raise _Slow from None
    html_texts, html_codes, weights = zip(*html_fills, strict=True) if html_fills else ((),) * 3
    text_texts, text_codes, _ = zip(*text_fills, strict=True) if text_fills else ((),) * 3
    return _Piece(
        compact,
        html_cut,
        html_texts,
        html_codes,
        text_cut,
        text_texts,
        text_codes,
        html_cut.weight + sum(weights),
        any("\r" in text for text in (*text_cut.strings, *text_texts)),
    )
