"""A reader's feedback links filled into the paper pieces (digest/blocks.py) of their email.

Every reader's links are their own, so the holes are filled per email, as text, with the URL
as the HTML serializer writes an `<a href>` value (`_href`): the block stays shared, and an
email costs one itsdangerous signature and two HMACs per paper (digest/feedback_links.py).

A link is written as two parts: the start every link of the email shares (DIGEST_PUBLIC_URL,
/feedback/, the reader's signed token), finished and encoded once per email, and the short end
of each link (kind, paper, HMAC), whose quoted-printable form is itself (`_short`, checked
against mailer.qp_part in tests/test_render_equivalence.py).
"""

from __future__ import annotations

import re

from digest.blocks import _html_attr, _Part, _part, _Piece
from digest.feedback_links import ReaderLinks
from digest.mailer import MAX_QP_LINE

_PLAIN_URL = re.compile(r"[A-Za-z0-9._~!:/?=#%+,;@*()-]*")  # written as they are, in quotes
LINK_HOLES = ("\x00M", "\x00L")  # a piece's feedback links, filled per reader (`linked`)


def _href(url: str) -> str:
    """`url` as the HTML serializer writes an `<a href>` value, with its quotes (uncached:
    every reader's links are their own)."""
    if _PLAIN_URL.fullmatch(url):
        return f'"{url}"'
    return _html_attr.__wrapped__("a", "href", url)


def _short(text: str) -> _Part:
    """`_part(text)` for a short URL-safe ASCII string (no "=", not starting with "." or
    "From "): one line, ended by a soft line break."""
    plain = _PLAIN_URL.fullmatch(text) and "=" not in text
    if len(text) < MAX_QP_LINE and plain and text[:1] not in (".", "F"):
        return text, text.encode() + b"=\r\n", len(text)
    return _part(text)


class EmailLinks:
    """The feedback links of one email: `fill(piece, paper_id)` puts them into a piece."""

    def __init__(self, links: ReaderLinks) -> None:
        self.links = links
        start = links.base + links.signed + "~"
        self.plain = bool(_PLAIN_URL.fullmatch(start))
        if self.plain:  # the shared start, finished once
            self.html_start, self.text_start = _part(f'"{start}'), _part(start)

    def _parts(self, paper_id: str, letter: str) -> tuple[tuple[_Part, ...], tuple[_Part, ...]]:
        """(HTML parts, text parts) of one link."""
        tail = self.links.tail(paper_id, letter)
        if self.plain and _PLAIN_URL.fullmatch(tail):
            return (self.html_start, _short(tail + '"')), (self.text_start, _short(tail))
        url = self.links.base + self.links.signed + "~" + tail
        return (_part(_href(url)),), (_part(url),)

    def fill(self, piece: _Piece, paper_id: str) -> _Piece:
        """The piece with this reader's links ("More like this", "Not for me")."""
        more_html, more_text = self._parts(paper_id, "m")
        less_html, less_text = self._parts(paper_id, "n")
        extra = sum(p[2] for p in (*more_html, *less_html))
        return _Piece(
            *_put(piece.html, piece.html_qp, more_html, less_html),
            piece.html_size + extra,
            *_put(piece.html_compact, piece.html_compact_qp, more_html, less_html),
            piece.html_compact_size + extra,
            *_put(piece.text, piece.text_qp, more_text, less_text),
            *_put(piece.text_compact, piece.text_compact_qp, more_text, less_text),
        )


def _put(
    parts: tuple[str, ...],
    encoded: tuple[bytes, ...],
    more: tuple[_Part, ...],
    less: tuple[_Part, ...],
) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """`parts` (and their encodings) with the two link holes replaced by the links' parts."""
    i = parts.index(LINK_HOLES[0])  # a C-speed scan
    j = parts.index(LINK_HOLES[1], i)
    texts = (*parts[:i], *(p[0] for p in more), *parts[i + 1 : j], *(p[0] for p in less))
    codes = (*encoded[:i], *(p[1] for p in more), *encoded[i + 1 : j], *(p[1] for p in less))
    return (*texts, *parts[j + 1 :]), (*codes, *encoded[j + 1 :])
