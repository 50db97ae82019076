"""The finished pieces a paper's block is joined from: HTML and text exactly as the template
and lxml's serializer write them (`_html_text`, `_html_attr`, `_highlighted`), each with its
quoted-printable encoding and size (`_part`); a block's forms cut at their holes (`_Cut`,
`_Skeleton`), and one reader's version of a block (`_Piece`), which writes itself into an
email. Made by digest/blocks.py, joined into emails by digest/layouts.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=65536)
def _html_text(value: str) -> str:
    """`value` as the HTML serializer writes it as text (what premailer's output holds)."""
    if _REWRITTEN.search(value):
        raise _Slow
    element = etree.Element("p")
    element.text = value.replace("\r\n", "\n").replace("\r", "\n")  # as the parser reads it
    return etree.tostring(element, method="html", encoding="unicode")[3:-4]


@lru_cache(maxsize=16384)
def _html_attr(tag: str, attr: str, value: str) -> str:
    """`value` as the HTML serializer writes it as attribute `attr` of a `tag` element, with
    its quotes (single ones when the value holds a double quote)."""
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
    """One form of a paper's block cut at its holes: the finished literal runs (strings and
    their encodings: one more run than holes, some empty) and the holes' names between them;
    `weight`: the runs' mailer.qp_weight."""

    strings: tuple[tuple[str, ...], ...]
    codes: tuple[tuple[bytes, ...], ...]
    holes: tuple[str, ...]
    weight: int


def _cut_at_holes(items: tuple[_Part | str, ...]) -> _Cut:
    """A `Blocks._holes` result as literal runs between the holes."""
    runs: list[list[_Part]] = [[]]
    holes: list[str] = []
    for item in items:
        if isinstance(item, tuple):
            runs[-1].append(item)
        else:
            holes.append(item)
            runs.append([])
    return _Cut(
        tuple(tuple(p[0] for p in run) for run in runs),
        tuple(tuple(p[1] for p in run) for run in runs),
        tuple(holes),
        sum(p[2] for run in runs for p in run),
    )


KINDS = ("html", "html_compact", "text", "text_compact")  # a block's forms


@dataclass(frozen=True)
class _Skeleton:
    """One paper's finished blocks with holes, in each of the `KINDS` (in full and in the
    compact list, HTML and text)."""

    paper: Paper
    abstract: str  # as shown (shortened)
    cuts: dict[str, _Cut]


# A link written into a piece's link hole: (start, its encoding, end, its encoding).
Link = tuple[str, bytes, str, bytes]


@dataclass(frozen=True, slots=True)
class _Piece:
    """One reader's version of a paper block: its skeleton, and per kind what fills each of
    its holes (None for the feedback links' holes, which `write` fills from the reader's
    links: piece_links.EmailLinks); the HTML sizes (mailer.qp_weight, without the links)."""

    skeleton: _Skeleton
    fills: dict[str, tuple[_Part | None, ...]]
    html_size: int
    html_compact_size: int

    def write(
        self,
        kind: str,
        out: list[str],
        encoded: list[bytes],
        links: tuple[Link, Link] | None = None,
    ) -> None:
        """Append this block in `kind` to `out` and its quoted-printable encoding to `encoded`,
        with `links` ("More like this", "Not for me") in its link holes."""
        cut = self.skeleton.cuts[kind]
        strings, codes = cut.strings, cut.codes
        out += strings[0]
        encoded += codes[0]
        for k, fill in enumerate(self.fills[kind], 1):
            if fill is None:
                if links is None:
                    raise _Slow
                link = links[cut.holes[k - 1] == "L"]
                out.append(link[0])
                out.append(link[2])
                encoded.append(link[1])
                encoded.append(link[3])
            else:
                out.append(fill[0])
                encoded.append(fill[1])
            out += strings[k]
            encoded += codes[k]

    def parts(self, kind: str) -> tuple[list[str], list[bytes]]:
        """The strings of this block in `kind` and their encodings (without links)."""
        out: list[str] = []
        encoded: list[bytes] = []
        self.write(kind, out, encoded)
        return out, encoded


def _aligned(cut: _Cut, fills: dict[str, _Part]) -> tuple[_Part | None, ...]:
    """What fills each hole of `cut`, in order (None for a link)."""
    try:
        return tuple(None if hole in LINK_NAMES else fills[hole] for hole in cut.holes)
    except KeyError:
        raise _Slow from None
