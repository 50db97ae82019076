"""A reader's feedback links, written into the paper pieces (digest/pieces.py) of their email.

Every reader's links are their own, so the shared pieces keep the links as holes, and the
email is joined around them (pieces._Piece.write, with `EmailLinks.pair`): only the form a
paper is shown in (in full or in the compact list, HTML and text) gets the links, and an email
costs one itsdangerous signature and one MAC per paper (digest/feedback_links.py). The HTML
budget needs only the links' size, which does not depend on the MAC (`EmailLinks.weight`).

A link is written as two parts: the start every link of the email shares (DIGEST_PUBLIC_URL,
/feedback/, the reader's signed token), finished and encoded once per email, and the short end
of each link (kind, paper, MAC), whose quoted-printable form is itself (`_short`, checked
against mailer.qp_part in tests/test_render_equivalence.py). In HTML the URL is written as the
serializer writes an `<a href>` value, with its quotes (`_href`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from digest.feedback_links import MAC_CHARS, ReaderLinks
from digest.mailer import MAX_QP_LINE, qp_weight
from digest.pieces import PLAIN_URL, LinkCodes, Links, _html_attr, _Part, _part

_SHORT = re.compile(r'[A-Za-z0-9._~!:/?#%+,;@*()-]*"?')  # quoted-printable as they are
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~!:?#%+,;@*()-]{1,40}")  # ids whose tails are `_SHORT`
_TAIL = len("m~") + len("~") + MAC_CHARS  # a tail's length besides the paper id


def _href(url: str) -> str:
    """`url` as the HTML serializer writes an `<a href>` value, with its quotes (uncached:
    every reader's links are their own)."""
    return _html_attr.__wrapped__("a", "href", url)  # type: ignore[no-any-return]


def _short(text: str) -> _Part:
    """`_part(text)` for a short URL-safe ASCII string (no "=", not starting with "." or
    "From ", at most a closing quote besides): one line, ended by a soft line break."""
    if len(text) < MAX_QP_LINE and _SHORT.fullmatch(text) and text[:1] not in (".", "F"):
        return text, text.encode() + b"=\r\n", len(text)
    return _part(text)


class EmailLinks:
    """The feedback links of one email ("More like this", "Not for me" on every paper)."""

    def __init__(self, links: ReaderLinks) -> None:
        self.links = links
        start = links.base + links.signed + "~"
        self.plain = bool(PLAIN_URL.fullmatch(start))
        if self.plain:  # the shared start, finished once
            self.html_start, self.text_start = _part(f'"{start}'), _part(start)
        self._made: dict[str, tuple[Links, Links]] = {}
        self._codes: dict[str, tuple[LinkCodes, LinkCodes]] = {}  # what `codes` gives
        self._mac = links.mac()

    def weight(self, paper_id: str) -> int:
        """What the paper's two links add to its HTML block, as mailer.qp_weight counts."""
        if self.plain and _short_id(paper_id):
            return 2 * (self.html_start[2] + _TAIL + len(paper_id) + 1)  # + the closing quote
        texts, _ = self.pair(paper_id, True)
        return qp_weight("".join(texts))

    def pair(self, paper_id: str, html: bool) -> Links:
        """The paper's two links ("More like this", "Not for me") as a piece writes them in
        its HTML (else text) form (`_Piece.write`): one MAC a paper."""
        found = self._made.get(paper_id)
        if found is None:
            found = self._make(paper_id)
        return found[not html]

    def make(self, paper_ids: Sequence[str]) -> None:
        """Make the links of these papers (those not made yet) at once: what `pair` then
        gives them, their MACs encoded in one call."""
        made = self._made
        todo = [paper_id for paper_id in dict.fromkeys(paper_ids) if paper_id not in made]
        if not todo:
            return
        tails = self.links.tails_many(todo, self._mac)
        start = self.links.base + self.links.signed + "~"
        plain = [i for i, paper_id in enumerate(todo) if _short_id(paper_id)] if self.plain else []
        if plain:
            # The shared start, then each tail as `_short` encodes it (the tails are short and
            # begin with "m~"/"n~"): their encodings made in four calls for all the papers.
            (html, html_code, _), (text, text_code, _) = self.html_start, self.text_start
            more = [tails[i][0] for i in plain]
            less = [tails[i][1] for i in plain]
            quoted_more = [tail + '"' for tail in more]
            quoted_less = [tail + '"' for tail in less]
            for i, qm, ql, mt, lt, qmc, qlc, mc, lc in zip(
                plain,
                quoted_more,
                quoted_less,
                more,
                less,
                _soft_all(quoted_more),
                _soft_all(quoted_less),
                _soft_all(more),
                _soft_all(less),
                strict=True,
            ):
                made[todo[i]] = (
                    ((html, qm, html, ql), (html_code, qmc, html_code, qlc)),
                    ((text, mt, text, lt), (text_code, mc, text_code, lc)),
                )
        for paper_id, (more_tail, less_tail) in zip(todo, tails, strict=True):
            if paper_id not in made:
                more_url, less_url = start + more_tail, start + less_tail
                made[paper_id] = (
                    _whole(_href(more_url), _href(less_url)),
                    _whole(more_url, less_url),
                )

    def codes(self, paper_id: str, html: bool) -> LinkCodes:
        """`pair(paper_id, html)`'s encodings alone: what the send path writes."""
        found = self._codes.get(paper_id)
        if found is None:
            self.make_codes((paper_id,))
            found = self._codes[paper_id]
        return found[not html]

    def make_codes(self, paper_ids: Sequence[str]) -> None:
        """`make`, for `codes` (the links' encodings, not their text): a paper's tails as
        bytes, each link's end encoded as `_short` would (the same bytes, checked in
        tests/test_render_equivalence.py), without the text and its four encodings."""
        known = self._codes
        todo = [paper_id for paper_id in dict.fromkeys(paper_ids) if paper_id not in known]
        plain = [paper_id for paper_id in todo if _short_id(paper_id)] if self.plain else []
        if plain:
            html, text = self.html_start[1], self.text_start[1]
            both = self.links.macs_b64(plain, self._mac)  # as ReaderLinks.tails_many
            for at, paper_id in zip(range(0, len(both), 2 * MAC_CHARS), plain, strict=True):
                start_more, start_less = _tail_starts(paper_id)
                more = start_more + both[at : at + MAC_CHARS]
                less = start_less + both[at + MAC_CHARS : at + 2 * MAC_CHARS]
                known[paper_id] = (
                    (html, more + _QUOTE_END, html, less + _QUOTE_END),
                    (text, more + _END, text, less + _END),
                )
        rest = [paper_id for paper_id in todo if paper_id not in known]
        if rest:
            self.make(rest)
            for paper_id in rest:
                (_, html_codes), (_, text_codes) = self._made[paper_id]
                known[paper_id] = (html_codes, text_codes)

    def _make(self, paper_id: str) -> tuple[Links, Links]:
        """(HTML, text) links of one paper."""
        self.make((paper_id,))
        return self._made[paper_id]


_END, _QUOTE_END = b"=\r\n", b'"=\r\n'  # a `_short` part's soft line break; with the quote


@lru_cache(maxsize=65536)
def _tail_starts(paper_id: str) -> tuple[bytes, bytes]:
    """The start of the paper's two tails, "m~<id>~" and "n~<id>~", as bytes."""
    shown = paper_id.replace("/", "!").encode()
    return b"m~" + shown + b"~", b"n~" + shown + b"~"


@lru_cache(maxsize=65536)
def _short_id(paper_id: str) -> bool:
    """Whether the tails of a paper's links ("m~<id>~<mac>": the MAC is URL-safe base64) are
    `_SHORT`, as `_short` writes them, and weigh their length (`EmailLinks.weight`)."""
    return bool(_PLAIN_ID.fullmatch(paper_id.replace("/", "!")))


def _soft_all(texts: list[str]) -> list[bytes]:
    """Each of these ASCII `texts` (no NUL) encoded and ended by a soft line break."""
    return ("=\r\n\0".join(texts) + "=\r\n").encode().split(b"\0")


def _whole(more: str, less: str) -> Links:
    """Two links each written as one part (an empty end)."""
    (more, more_code, _), (less, less_code, _) = _part(more), _part(less)
    return (more, "", less, ""), (more_code, b"", less_code, b"")
