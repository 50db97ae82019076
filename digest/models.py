"""The values that flow between the stages: plain frozen data, no behaviour with side effects."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache

from email_validator import EmailNotValidError, validate_email

Span = tuple[int, int]
"""A [start, end) character range of a text: a highlighted match."""

_VERSIONED_ID = re.compile(r"^(?P<id>.+?)(?:v(?P<version>\d+))?$")


def split_version(arxiv_id: str) -> tuple[str, int]:
    """`2401.00001v2` -> (`2401.00001`, 2); an id without a version is version 1."""
    match = _VERSIONED_ID.match(arxiv_id.strip())
    assert match is not None  # the pattern matches any string
    return match["id"], int(match["version"] or 1)


@dataclass(frozen=True)
class Paper:
    id: str  # without version: the key for "seen" and "delivered"
    version: int
    title: str
    authors: tuple[str, ...]
    abstract: str
    comment: str
    categories: tuple[str, ...]
    primary_category: str
    published: datetime  # first version, UTC
    updated: datetime  # this version, UTC
    abs_url: str
    pdf_url: str

    @property
    def versioned_id(self) -> str:
        return f"{self.id}v{self.version}"


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


@lru_cache(maxsize=65536)
def subscriber_key(email: str) -> str:
    """The identity of a subscriber for deliveries, unsubscribes and suspensions: how two
    spellings of an address compare (no surrounding spaces, the address as email-validator
    normalises it, case-insensitive). The one place this is decided."""
    raw = email.strip()
    if _PLAIN_ADDRESS.fullmatch(raw) and "xn--" not in raw.lower():  # email-validator would
        return raw.casefold()  # leave it as it is (checked in tests/test_locking.py); fast
    with contextlib.suppress(EmailNotValidError):
        raw = validate_email(raw, check_deliverability=False).normalized
    return raw.casefold()


@dataclass(frozen=True)
class Subscriber:
    email: str  # as written in the file (normalised: no surrounding spaces)
    keywords: tuple[str, ...]  # in the subscriber's order of preference
    name: str = ""
    line: int = 0  # line in subscribers.csv, for messages
    trending: bool = True  # show the "Trending today" section (when trending is on)
    categories: tuple[str, ...] = ()  # arXiv categories (`cs.CL`, `cs.*`); empty: any
    exclude: tuple[str, ...] = ()  # phrases that drop a keyword match
    authors: tuple[str, ...] = ()  # papers by these authors are included whatever the keywords
    weekday: int | None = None  # None: daily; 0 (Monday) .. 6 (Sunday): weekly on that day
    likes: tuple[str, ...] = ()  # arXiv ids without version, from the `likes` column

    @property
    def key(self) -> str:
        """The identity used for deliveries (`subscriber_key`)."""
        return subscriber_key(self.email)


AUTHORS_SECTION = "Authors you follow"
"""The section of papers that matched a followed author but none of the keywords."""

RECOMMENDED_SECTION = "Recommended for you"
"""The last section: papers the reader's model picked from their likes (issue 13)."""


@dataclass(frozen=True)
class Entry:
    """One paper in one subscriber's email."""

    paper: Paper
    keywords: tuple[str, ...]  # every keyword of the subscriber it matched, in their order
    title_spans: tuple[Span, ...] = ()
    abstract_spans: tuple[Span, ...] = ()

    authors: tuple[str, ...] = ()  # the followed authors who wrote it, as the subscriber wrote them
    why: str | None = None  # recommended (not a keyword match): the one line saying why

    @property
    def section(self) -> str:
        if self.why is not None:
            return RECOMMENDED_SECTION
        return self.keywords[0] if self.keywords else AUTHORS_SECTION


@dataclass(frozen=True)
class Section:
    keyword: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class TrendingPaper:
    """A paper on Hugging Face's daily papers list, with its upvotes."""

    id: str  # arXiv id without version
    title: str
    upvotes: int

    @property
    def abs_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"

    @property
    def hf_url(self) -> str:
        return f"https://huggingface.co/papers/{self.id}"


@dataclass(frozen=True)
class Digest:
    """What one subscriber is owed today, in the order the email shows it."""

    subscriber: Subscriber
    sections: tuple[Section, ...]
    day: str  # the digest's date, ISO, in the configured time zone
    trending: tuple[TrendingPaper, ...] = ()  # the "Trending today" section, most upvoted first
    upvotes: Mapping[str, int] = field(default_factory=dict)  # paper id -> upvotes, if trending

    @cached_property  # a Digest never changes: worked out once, on first use
    def entries(self) -> tuple[Entry, ...]:
        return tuple([entry for section in self.sections for entry in section.entries])

    @cached_property
    def paper_ids(self) -> tuple[str, ...]:
        return tuple([entry.paper.id for entry in self.entries])

    @property
    def recommended(self) -> dict[str, str]:
        """The papers of "Recommended for you", paper id -> the line saying why (issue 13)."""
        return {e.paper.id: e.why for e in self.entries if e.why is not None}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    paper_ids: tuple[str, ...]  # exactly the papers the email shows: what "delivered" records
    full_entries: int = 0  # how many entries are shown in full (the rest compactly)
    deferred: tuple[str, ...] = field(default=())  # owed papers left for the next email
    # The html and text as the parts they were joined from (when they were): the mailer
    # encodes each part once per run. Not part of what the email is.
    html_parts: tuple[str, ...] = field(default=(), compare=False, repr=False)
    text_parts: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # ...and those parts already quoted-printable (mailer.qp_part), when the renderer has them.
    html_qp: tuple[bytes, ...] = field(default=(), compare=False, repr=False)
    text_qp: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class EncodedEmail:
    """An email as the message carries it: what the send path needs of a `RenderedEmail`,
    its HTML and text already quoted-printable (CRLF lines, as mailer.message_bytes writes
    them), never joined as text. Made by `Renderer.encode`, or from a RenderedEmail by
    `mailer.encoded`."""

    subject: str
    html_body: bytes
    text_body: bytes
    paper_ids: tuple[str, ...]
    full_entries: int = 0
    deferred: tuple[str, ...] = field(default=())
