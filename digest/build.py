"""Building: a subscriber's digest to the bytes of their email, and the dry run's destination.

`Builder.build` renders a digest (digest/assemble.py: the same bytes as the reference
rendering, fast) and writes the message (digest/mailer.py). What becomes of the bytes is the
destination's business: `Previews` writes them to files (`digest send --dry-run`), the
dispatcher (digest/dispatch.py) sends them. A render error fails one subscriber, never the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest import feedback_links
from digest.assemble import Renderer
from digest.config import Settings
from digest.mailer import bodies, message_bytes, new_message_id
from digest.models import Digest, EncodedEmail, Subscriber
from digest.outbox import NewEmail
from digest.report import Outcome, Timings
from digest.tokens import preferences_url, unsubscribe_url

if TYPE_CHECKING:
    from digest.dkim import Signer

log = logging.getLogger(__name__)

Emit = Callable[[Outcome], None]


def dkim_signer(settings: Settings) -> Signer | None:
    """The DKIM signer DIGEST_DKIM_KEY asks for (`Signer.from_settings`), or None when it is
    not set."""
    if settings.dkim_key is None:
        return None
    from digest.dkim import Signer  # dkimpy and cryptography (slow to import): only with a key

    return Signer.from_settings(settings)


class BuildFailed(Exception):
    """This subscriber's email could not be built (the message says why, for the reader of the
    run's report)."""


@dataclass(frozen=True)
class Built:
    """One email, ready to go."""

    person: Subscriber
    rendered: EncodedEmail  # its bodies as the message carries them
    message_id: str
    data: bytes
    body_hash: bytes | None = None  # DKIM's bh= of `data`'s body, when signing is on

    @property
    def papers(self) -> int:
        return len(self.rendered.paper_ids)


class Builder:
    """Builds the emails of one run (one renderer, whose caches hold the run's papers)."""

    def __init__(self, settings: Settings, sender: str, timings: Timings) -> None:
        self.settings, self.sender, self.timings = settings, sender, timings
        self.renderer = Renderer(sender=sender, budget=settings.html_budget)
        # With DKIM on, each email's body hash is made here: every body message_bytes writes
        # is already in relaxed canonical form, so it is the body's sha256 (no pass over it)
        # and signing costs only the header's hash and the RSA signature. A sample is checked
        # against the canonicalized body's hash (a difference: hashed that way from then on).
        self.hash_bodies = settings.dkim_key is not None
        self.hashed = 0

    def prepare(self, digests: Iterable[Digest]) -> None:
        """Finish the paper blocks a batch of subscribers needs, in one go."""
        started = time.perf_counter()
        self.renderer.prepare(
            digests, links=bool(self.settings.public_url and self.settings.secret)
        )
        self.timings.blocks_s += time.perf_counter() - started
        self.timings.trips = self.renderer.trips

    def unsubscribe_link(self, person: Subscriber) -> str | None:
        if self.settings.public_url and self.settings.secret:
            return unsubscribe_url(self.settings.public_url, self.settings.secret, person.key)
        return None

    def build(
        self,
        digest: Digest,
        now: datetime,
        message_id: str | None = None,
        *,
        to: str | None = None,
        subject_mark: str = "",
    ) -> Built:
        """The email for `digest` (a new Message-ID unless given; to the subscriber unless
        `to`, a test send, which also marks the Subject). Raises BuildFailed."""
        started = time.perf_counter()
        person = digest.subscriber
        link = self.unsubscribe_link(person)
        links = feedback_links.for_reader(
            self.settings.public_url, self.settings.secret, person.key
        )
        try:
            rendered = self.renderer.encode(
                digest, link, links, preferences_url=preferences_url(self.settings, person)
            )
        except Exception as exc:  # a template or data bug must skip one subscriber, not the run
            log.exception("rendering the digest for %s failed", person.email)
            raise BuildFailed(f"could not render the email: {exc!r}") from None
        if not rendered.paper_ids:
            raise BuildFailed("not even one paper fits in an email")
        message_id = message_id or new_message_id(self.sender)
        if subject_mark:
            rendered = replace(rendered, subject=subject_mark + rendered.subject)
        data = message_bytes(
            rendered,
            sender=self.sender,
            to=to or person.email,
            message_id=message_id,
            when=now,
            unsubscribe_url=link,
        )
        body_hash = self._body_hash(data, person) if self.hash_bodies else None
        t = self.timings
        t.assembled = self.renderer.assembled
        t.rendered_in_full = self.renderer.count - self.renderer.assembled
        t.trips = self.renderer.trips
        t.build.append((time.perf_counter() - started) * 1000)
        t.built += 1
        t.email_bytes += len(data)
        return Built(person, rendered, message_id, data, body_hash)

    BODY_HASH_CHECK_EVERY = 1000  # emails; and the first of each run

    def _body_hash(self, data: bytes, person: Subscriber) -> bytes:
        from digest import dkim  # (imported with the signer: only with a key)

        self.hashed += 1
        if (self.hashed - 1) % self.BODY_HASH_CHECK_EVERY:
            return dkim.canonical_body_hash(data)
        body_hash = dkim.body_hash(dkim.split_message(data)[1])
        if body_hash != dkim.canonical_body_hash(data):
            log.warning(
                "the body of the email for %s is not in DKIM's relaxed canonical form as "
                "written; bodies are canonicalized before hashing from now on",
                person.email,
            )
            self.hash_bodies = False
        return body_hash


class Previews:
    """The dry run's destination: each email as DIR/<email>.html, .txt and .eml; nothing sent,
    nothing recorded."""

    def __init__(self, out: Path, emit: Emit, settings: Settings) -> None:
        self.out, self.emit = out, emit
        self.signer = dkim_signer(settings)  # the .eml as it would go out

    def note(self, outcome: Outcome) -> None:
        self.emit(outcome)

    def take(self, built: Built, new: NewEmail | None = None, resumed: bool = False) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        stem = built.person.email.replace("/", "_").replace("\\", "_")
        html, text = bodies(built.data)
        (self.out / f"{stem}.html").write_text(html, encoding="utf-8")
        (self.out / f"{stem}.txt").write_text(text, encoding="utf-8")
        eml = self.signer.seal(built.data, built.body_hash) if self.signer else built.data
        (self.out / f"{stem}.eml").write_bytes(eml)
        self.emit(Outcome(built.person.email, "previewed", built.papers, len(built.data)))

    def stopping(self) -> bool:
        return False

    def check(self) -> None:
        """Nothing can have failed on the way."""

    def drain(self) -> None:
        """Every preview is written at once."""

    def finish_retries(self) -> None:
        """Nothing is retried."""

    def close(self) -> None:
        """Nothing to close."""
