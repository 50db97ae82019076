"""The signed "More like this" / "Not for me" links of one reader's email, made cheaply.

A link's token is `<reader>~<kind>~<paper>~<mac>`: `<reader>` the subscriber key signed with
itsdangerous (once per email), `<kind>` `m` (more like this) or `n` (not for me), `<paper>` the
arXiv id (a `/` of an old-style id written `!`), and `<mac>` 12 bytes (16 base64 characters) of
a keyed BLAKE2b (a MAC: RFC 7693) of (subscriber key, paper id), keyed by a key derived from
DIGEST_SECRET: the first 12 bytes for `m`, the next 12 for `n` (two independent parts of one
keyed hash, so a link of one kind is no link of the other). So an email with 40 papers costs
one signature and 40 MACs, and a forged or altered part (reader, kind, paper or mac) fails
`read`. Used by the send path (the links) and by `digest serve` (feedback.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature

from digest.tokens import make_token, serializer

READER_SALT = "digest.feedback.reader"
LIKES_SALT = "digest.likes"
KINDS = {"m": "like", "n": "dislike"}
LETTERS = {kind: letter for letter, kind in KINDS.items()}
PATH = "/feedback/"
MAC_CHARS = 16  # the length of a link's MAC


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"digest.feedback.paper\x00" + secret.encode()).digest()


def _macs(key: bytes, subscriber: str, paper_id: str) -> tuple[str, str]:
    """The MACs of the paper's "m" and "n" links for this reader: keyed BLAKE2b (RFC 7693's
    MAC mode, a third of HMAC-SHA256's time here), 12 bytes each."""
    return _split(_reader_mac(key, subscriber), paper_id)


def _reader_mac(key: bytes, subscriber: str) -> Any:
    """The keyed BLAKE2b with this reader's part of the message taken in (copied per paper)."""
    return hashlib.blake2b(f"{subscriber}\x00".encode(), key=key, digest_size=24)


def _split(reader: Any, paper_id: str) -> tuple[str, str]:
    mac = reader.copy()
    mac.update(paper_id.encode())
    both = base64.urlsafe_b64encode(mac.digest()).decode()  # 12 bytes -> 16 characters, no "="
    return both[:MAC_CHARS], both[MAC_CHARS:]


def reader_token(secret: str, subscriber_key: str) -> str:
    """The `<reader>` part of the reader's links (`tokens.make_token`, made cheaply)."""
    return make_token(secret, subscriber_key, READER_SALT)


def likes_token(secret: str, subscriber_key: str) -> str:
    """The token of the reader's "your likes" page (`tokens.make_token`, made cheaply)."""
    return make_token(secret, subscriber_key, LIKES_SALT)


def token(secret: str, subscriber_key: str, paper_id: str, kind: str) -> str:
    """The token of one link (like|dislike); `ReaderLinks` makes many of them cheaply."""
    return ReaderLinks.make("", secret, subscriber_key).token(paper_id, LETTERS[kind])


def read(secret: str, value: str) -> tuple[str, str, str] | None:
    """(subscriber key, paper id, like|dislike) of a token we made, else None."""
    parts = value.split("~")
    if len(parts) != 4:
        return None
    signed, letter, paper, mac = parts
    try:
        subscriber = serializer(secret, READER_SALT).loads(signed)
    except BadSignature:
        return None
    if not isinstance(subscriber, str) or not subscriber or letter not in KINDS or not paper:
        return None
    paper_id = paper.replace("!", "/")
    expected = _macs(_key(secret), subscriber, paper_id)[letter == "n"]
    if not hmac.compare_digest(mac, expected):
        return None
    return subscriber, paper_id, KINDS[letter]


@dataclass(frozen=True)
class ReaderLinks:
    """One reader's links: `urls(paper_id)` -> ("More like this", "Not for me"); `likes`: their
    "your likes" page."""

    base: str  # DIGEST_PUBLIC_URL + /feedback/
    subscriber: str
    signed: str  # reader_token
    key: bytes
    likes: str

    @classmethod
    def make(cls, public_url: str, secret: str, subscriber_key: str) -> ReaderLinks:
        root = public_url.rstrip("/")
        return cls(
            base=root + PATH,
            subscriber=subscriber_key,
            signed=reader_token(secret, subscriber_key),
            key=_key(secret),
            likes=f"{root}/likes/{likes_token(secret, subscriber_key)}",
        )

    def token(self, paper_id: str, letter: str) -> str:
        return f"{self.signed}~{self.tail(paper_id, letter)}"

    def tail(self, paper_id: str, letter: str) -> str:
        """What follows `base + signed + "~"` in the link (the same start for every link)."""
        return self.tails(paper_id)[letter == "n"]

    def tails(self, paper_id: str, reader: Any = None) -> tuple[str, str]:
        """The tails of the paper's two links ("m", "n"): one MAC (`reader`: `mac()`, made
        once for the many papers of one email)."""
        return self.tails_many((paper_id,), reader)[0]

    def tails_many(self, paper_ids: Sequence[str], reader: Any = None) -> list[tuple[str, str]]:
        """`tails` of each of these papers; their MACs base64-encoded in one call (24 bytes
        are 32 characters without padding, so the encodings of the MACs joined are the
        joined encodings: `_split`'s, checked in tests/test_render_equivalence.py)."""
        both = self.macs_b64(paper_ids, reader).decode()
        tails = []
        for at, paper_id in zip(range(0, len(both), 2 * MAC_CHARS), paper_ids, strict=True):
            shown = paper_id.replace("/", "!")
            more, less = both[at : at + MAC_CHARS], both[at + MAC_CHARS : at + 2 * MAC_CHARS]
            tails.append((f"m~{shown}~{more}", f"n~{shown}~{less}"))
        return tails

    def macs_b64(self, paper_ids: Sequence[str], reader: Any = None) -> bytes:
        """The MACs of these papers' links, joined and base64-encoded in one call:
        2 x MAC_CHARS characters a paper, the "m" link's then the "n" link's (`reader`: this
        reader's `mac()`, when already made)."""
        copy = (reader or self.mac()).copy
        macs = []
        for paper_id in paper_ids:
            mac = copy()
            mac.update(paper_id.encode())
            macs.append(mac.digest())
        return base64.urlsafe_b64encode(b"".join(macs))

    def mac(self) -> Any:
        return _reader_mac(self.key, self.subscriber)

    def urls(self, paper_id: str) -> tuple[str, str]:
        return self.base + self.token(paper_id, "m"), self.base + self.token(paper_id, "n")


def for_reader(
    public_url: str | None, secret: str | None, subscriber_key: str
) -> ReaderLinks | None:
    """The reader's links, or None unless DIGEST_PUBLIC_URL and DIGEST_SECRET are both set."""
    if not (public_url and secret):
        return None
    return ReaderLinks.make(public_url, secret, subscriber_key)
