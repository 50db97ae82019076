"""A reader's feedback links filled into the paper pieces (digest/blocks.py) of their email.

Every reader's links are their own, so the holes are filled per email, as text, with the URL
as the HTML serializer writes an `<a href>` value (`_href`): the block stays shared, and an
email costs one itsdangerous signature and two HMACs per paper (digest/feedback_links.py).
"""

from __future__ import annotations

import re

from digest.blocks import _html_attr, _Part, _part, _Piece

_PLAIN_URL = re.compile(r"[A-Za-z0-9._~!:/?=#%+,;@*()-]*")  # written as they are, in quotes
LINK_HOLES = ("\x00M", "\x00L")  # a piece's feedback links, filled per reader (`linked`)


def _href(url: str) -> str:
    """`url` as the HTML serializer writes an `<a href>` value, with its quotes (uncached:
    every reader's links are their own)."""
    if _PLAIN_URL.fullmatch(url):
        return f'"{url}"'
    return _html_attr.__wrapped__("a", "href", url)


def linked(piece: _Piece, more: str, less: str) -> _Piece:
    """The piece with this reader's feedback links ("More like this", "Not for me")."""
    html = dict(zip(LINK_HOLES, (_part(_href(more)), _part(_href(less))), strict=True))
    text = dict(zip(LINK_HOLES, (_part(more), _part(less)), strict=True))

    def put(
        parts: tuple[str, ...], encoded: tuple[bytes, ...], fills: dict[str, _Part]
    ) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
        i = parts.index(LINK_HOLES[0])  # a C-speed scan: the holes are near the end
        j = parts.index(LINK_HOLES[1], i)
        m, n = fills[LINK_HOLES[0]], fills[LINK_HOLES[1]]
        return (
            (*parts[:i], m[0], *parts[i + 1 : j], n[0], *parts[j + 1 :]),
            (*encoded[:i], m[1], *encoded[i + 1 : j], n[1], *encoded[j + 1 :]),
        )

    extra = html[LINK_HOLES[0]][2] + html[LINK_HOLES[1]][2]
    return _Piece(
        *put(piece.html, piece.html_qp, html),
        piece.html_size + extra,
        *put(piece.html_compact, piece.html_compact_qp, html),
        piece.html_compact_size + extra,
        *put(piece.text, piece.text_qp, text),
        *put(piece.text_compact, piece.text_compact_qp, text),
    )
