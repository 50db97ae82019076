"""A reader's feedback links, written into the paper pieces (digest/blocks.py) of their email.

Every reader's links are their own, so the shared pieces keep the links as holes, and the
email is joined around them (blocks._Piece.write, with `EmailLinks.pair`): only the form a
paper is shown in (in full or in the compact list, HTML and text) gets the links, and an email
costs one itsdangerous signature and one HMAC per paper (digest/feedback_links.py). The HTML
budget needs only the links' size, which does not depend on the MAC (`EmailLinks.weight`).

A link is written as two parts: the start every link of the email shares (DIGEST_PUBLIC_URL,
/feedback/, the reader's signed token), finished and encoded once per email, and the short end
of each link (kind, paper, MAC), whose quoted-printable form is itself (`_short`, checked
against mailer.qp_part in tests/test_render_equivalence.py). In HTML the URL is written as the
serializer writes an `<a href>` value, with its quotes (`_href`).
"""

from __future__ import annotations

import re

from digest.blocks import Link, _html_attr, _Part, _part
from digest.feedback_links import MAC_CHARS, ReaderLinks
from digest.mailer import MAX_QP_LINE

_PLAIN_URL = re.compile(r"[A-Za-z0-9._~!:/?=#%+,;@*()-]*")  # written as they are, in quotes
_SHORT = re.compile(r'[A-Za-z0-9._~!:/?#%+,;@*()-]*"?')  # quoted-printable as they are
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~!:?#%+,;@*()-]{1,40}")  # ids whose tails are `_SHORT`
_TAIL = len("m~") + len("~") + MAC_CHARS  # a tail's length besides the paper id


def _href(url: str) -> str:
    """`url` as the HTML serializer writes an `<a href>` value, with its quotes (uncached:
    every reader's links are their own)."""
    if _PLAIN_URL.fullmatch(url):
        return f'"{url}"'
    return _html_attr.__wrapped__("a", "href", url)


def _short(text: str) -> _Part:
    """`_part(text)` for a short URL-safe ASCII string (no "=", not starting with "." or
    "From ", at most a closing quote besides): one line, ended by a soft line break."""
    if len(text) < MAX_QP_LINE and _SHORT.fullmatch(text) and text[:1] not in (".", "F"):
        return text, text.encode() + b"=\r\n", len(text)
    return _part(text)


def _link(*parts: _Part) -> Link:
    return tuple(p[0] for p in parts), tuple(p[1] for p in parts), sum(p[2] for p in parts)


class EmailLinks:
    """The feedback links of one email ("More like this", "Not for me" on every paper)."""

    def __init__(self, links: ReaderLinks) -> None:
        self.links = links
        start = links.base + links.signed + "~"
        self.plain = bool(_PLAIN_URL.fullmatch(start))
        if self.plain:  # the shared start, finished once
            self.html_start, self.text_start = _part(f'"{start}'), _part(start)
        self._made: dict[str, tuple[Link, Link, Link, Link]] = {}

    def weight(self, paper_id: str) -> int:
        """What the paper's two links add to its HTML block, as mailer.qp_weight counts."""
        if self.plain and _PLAIN_ID.fullmatch(paper_id.replace("/", "!")):
            return 2 * (self.html_start[2] + _TAIL + len(paper_id) + 1)  # + the closing quote
        more, less, _, _ = self._links(paper_id)
        return more[2] + less[2]

    def pair(self, paper_id: str, kind: str) -> tuple[Link, Link]:
        """The paper's two links ("More like this", "Not for me") as a piece of `kind` (html,
        html_compact, text, text_compact) writes them (`_Piece.write`)."""
        more, less, more_text, less_text = self._links(paper_id)
        return (more_text, less_text) if kind[0] == "t" else (more, less)

    def _links(self, paper_id: str) -> tuple[Link, Link, Link, Link]:
        """(HTML more, HTML less, text more, text less) of one paper: one HMAC."""
        found = self._made.get(paper_id)
        if found is None:
            found = self._made[paper_id] = self._make(paper_id)
        return found

    def _make(self, paper_id: str) -> tuple[Link, Link, Link, Link]:
        made: list[Link] = []
        texts: list[Link] = []
        for tail in self.links.tails(paper_id):
            quoted = tail + '"'
            if self.plain and len(quoted) < MAX_QP_LINE and _SHORT.fullmatch(tail):
                # `_link(start, _short(...))` written out: this runs for every paper of every email
                html, text = self.html_start, self.text_start
                made.append(
                    (
                        (html[0], quoted),
                        (html[1], quoted.encode() + b"=\r\n"),
                        html[2] + len(quoted),
                    )
                )
                texts.append(
                    ((text[0], tail), (text[1], tail.encode() + b"=\r\n"), text[2] + len(tail))
                )
            else:
                url = self.links.base + self.links.signed + "~" + tail
                made.append(_link(_part(_href(url))))
                texts.append(_link(_part(url)))
        return made[0], made[1], texts[0], texts[1]
