"""Render once, assemble per subscriber: the bytes `render.render_reference` gives, fast.

MJML and premailer cost ~20 ms per trip; nearly all of an email is the same for everyone who
gets it. So a run finishes, through the whole template:

- each paper's block once (many papers per trip), with holes where what differs per reader
  goes: the highlighted title and abstract, the keyword tags (and "by <author>" tags);
- each layout once (how many sections; compact list, deferred line, unsubscribe link,
  trending section or not), with holes where a subscriber's own text and paper blocks go;
- one prototype, to learn how the highlight and tag elements come out of premailer.

A reader's version of a block is then filled in as text, serialized exactly as lxml writes it,
and every email is joined from finished pieces. The parts: digest/blocks.py finishes the
blocks (their strings: digest/pieces.py), digest/layouts.py the layouts and the joining,
digest/budget.py the choice of how many papers fit, digest/piece_links.py the reader's links;
here, the email of one digest and the safety nets. The number of trips depends on the papers and
layouts, never on the subscribers or how their keywords combine (`Renderer.trips`). The send
path asks `Renderer.encode`: the same email as the message carries it, only the pieces'
quoted-printable parts joined (never the HTML and text themselves).

Safety nets: the first email of each layout, and every `verify_every`-th email, is also
rendered the reference way at the same choice of papers and compared byte for byte; a
difference logs a warning and that layout goes the slow way for the rest of the run. For every
`verify_every`-th email the budget's choice is also checked against the reference renderings at
its edges (`render.reference_fits`); a difference sends every later email the slow way. Text
that the HTML parser would rewrite (control characters) and any unexpected error take the
reference path for that email.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import replace
from itertools import accumulate, chain

from digest.blocks import Blocks
from digest.budget import LIST_MARKUP, largest
from digest.feedback_links import ReaderLinks
from digest.layouts import Layout, Layouts, fill
from digest.mailer import encoded, join_qp, qp_size, qp_weight
from digest.models import Digest, EncodedEmail, RenderedEmail
from digest.piece_links import EmailLinks
from digest.pieces import _Piece, _Slow
from digest.render import (
    _email,
    reference_fits,
    render_at,
    render_reference,
    strings_of,
)

log = logging.getLogger(__name__)


AHEAD = 8  # compact pieces made at a time while looking for where the budget ends


def _no_links(paper_id: str) -> int:
    return 0


class Renderer:
    """Renders the emails of one run. `render(digest, unsubscribe_url)` returns exactly what
    `render_reference` returns for the same digest; only the time it takes differs.

    Keep one per run (its caches hold the run's papers, not its subscribers)."""

    def __init__(self, *, sender: str, budget: int, verify_every: int = 1000) -> None:
        self.sender, self.budget, self.verify_every = sender, budget, verify_every
        self.blocks = Blocks()
        self.layouts = Layouts(self.blocks, sender)
        self._verified: set[tuple[object, ...]] = set()
        self.count = 0
        self.assembled = 0  # emails joined from pieces (the rest were rendered in full)
        self.unjoined = 0  # ...of them by `encode` without joining their text (not checked)
        self.mismatches = 0
        self.budget_trusted = True  # until a sample's choice of papers differs (then: slow)
        self._whole = True  # the last email showed every paper in full
        # The largest weight whose quoted-printable size is within the budget.
        self._room = largest(lambda weight: qp_size(weight) <= budget, budget)

    @property
    def mark(self) -> str:
        return self.blocks.mark

    @property
    def trips(self) -> int:
        """Trips through MJML and premailer so far (reference renderings not counted)."""
        return self.blocks.trips

    @property
    def _layouts(self) -> dict[tuple[object, ...], Layout | None]:
        return self.layouts.made

    @property
    def _pieces(self) -> dict[tuple[int, int, bool, bool], _Piece]:
        """The readers' versions of blocks made so far, by (entry, upvotes, links, compact):
        a copy, for looking at."""
        return {key: piece for key, (_, piece) in self.blocks._keys.items()}

    @property
    def _skeletons(self) -> dict[tuple[str, int, int], object]:
        return self.blocks.skeletons  # type: ignore[return-value]

    def prepare(self, digests: Iterable[Digest], links: bool = False) -> None:
        """Finish, in a few trips, the blocks these digests need (see `Blocks.prepare`;
        `links`: with the readers' feedback links)."""
        self.blocks.prepare(digests, links)

    def render(
        self,
        digest: Digest,
        unsubscribe_url: str | None = None,
        links: ReaderLinks | None = None,
        *,
        preferences_url: str | None = None,
    ) -> RenderedEmail:
        """The email; `links`: the reader's feedback links, on every paper and in the footer;
        `preferences_url`: their preferences page, in the footer."""
        self.count += 1
        urls = (unsubscribe_url, preferences_url)
        if not self.budget_trusted:
            return self._reference(digest, urls, links)
        try:
            email, layout_key = self._assemble(digest, urls, links)
            assert isinstance(email, RenderedEmail)
        except _Slow:
            return self._reference(digest, urls, links)
        except Exception:  # a bug here must cost speed, never an email
            log.exception("assembling the email for %s failed", digest.subscriber.email)
            return self._reference(digest, urls, links)
        check = self.count % self.verify_every == 0  # a sample: the budget's choice too
        if check or layout_key not in self._verified:  # and the first email of each layout:
            # the reference at the same choice of papers (one trip)
            reference: RenderedEmail | None = render_at(
                digest,
                email.full_entries,
                len(email.paper_ids),
                sender=self.sender,
                unsubscribe_url=unsubscribe_url,
                preferences_url=preferences_url,
                links=links,
            )
        else:
            reference = None
        if reference is not None:
            if reference != email:
                self._mismatch(digest, layout_key, reference, email)
                return reference
            self._verified.add(layout_key)
        if check and not reference_fits(
            digest,
            email.full_entries,
            len(email.paper_ids),
            sender=self.sender,
            budget=self.budget,
            unsubscribe_url=unsubscribe_url,
            preferences_url=preferences_url,
            links=links,
            html=reference.html if reference is not None else None,
        ):
            log.warning(
                "the budget search for %s chose differently from the full rendering's; "
                "emails are rendered in full from now on",
                digest.subscriber.email,
            )
            self.mismatches += 1
            self.budget_trusted = False
            return self._reference(digest, urls, links)
        self.assembled += 1
        return email

    def encode(
        self,
        digest: Digest,
        unsubscribe_url: str | None = None,
        links: ReaderLinks | None = None,
        *,
        preferences_url: str | None = None,
    ) -> EncodedEmail:
        """`render`'s email as the message carries it (mailer.encoded), made without joining
        its HTML and text: what the send path needs. The emails `render` checks (each
        layout's first, every `verify_every`-th) are made by `render`, checks and all."""
        urls = (unsubscribe_url, preferences_url)
        if self.budget_trusted and (self.count + 1) % self.verify_every:
            try:
                email, layout_key = self._assemble(digest, urls, links, joined=False)
            except _Slow:
                pass
            except Exception:  # a bug here must cost speed, never an email
                log.exception("encoding the email for %s failed", digest.subscriber.email)
            else:
                if layout_key in self._verified:
                    assert isinstance(email, EncodedEmail)
                    self.count += 1
                    self.assembled += 1
                    self.unjoined += 1
                    return email
        return encoded(self.render(digest, unsubscribe_url, links, preferences_url=preferences_url))

    def _reference(
        self,
        digest: Digest,
        urls: tuple[str | None, str | None],
        links: ReaderLinks | None,
    ) -> RenderedEmail:
        return render_reference(
            digest,
            sender=self.sender,
            budget=self.budget,
            unsubscribe_url=urls[0],
            preferences_url=urls[1],
            links=links,
        )

    def _mismatch(
        self,
        digest: Digest,
        layout_key: tuple[object, ...],
        reference: RenderedEmail,
        email: RenderedEmail,
    ) -> None:
        self.mismatches += 1
        self.layouts.forget(layout_key)
        where = next(
            (i for i, (a, b) in enumerate(zip(reference.html, email.html, strict=False)) if a != b),
            min(len(reference.html), len(email.html)),
        )
        log.warning(
            "the assembled email for %s differs from the full rendering (HTML from character "
            "%d: %r, expected %r); emails of this layout are rendered in full from now on",
            digest.subscriber.email,
            where,
            email.html[where : where + 60],
            reference.html[where : where + 60],
        )

    def _assemble(
        self,
        digest: Digest,
        urls: tuple[str | None, str | None],
        links: ReaderLinks | None,
        joined: bool = True,
    ) -> tuple[RenderedEmail | EncodedEmail, tuple[object, ...]]:
        """The email joined from pieces and its layout's key; not `joined`: only as the
        message carries it (`encode`)."""
        entries = digest.entries
        total = len(entries)
        pieces_of, upvotes, with_links = self.blocks.pieces, digest.upvotes, links is not None
        ids = digest.paper_ids
        mine = EmailLinks(links) if links is not None else None  # this reader's links
        weight = mine.weight if mine is not None else _no_links  # what a paper's links add
        # Each paper's piece in full and compact, made only as far as the choice looks: most
        # emails at the budget show every paper compact, and defer the last ones.
        fulls: list[_Piece] = []
        compacts: list[_Piece] = []
        full_sums, compact_sums = [0], [0]  # their HTML sizes (with the links), summed

        def made(n: int, pieces: list[_Piece], sums: list[int], compact: bool) -> list[int]:
            at = len(pieces)
            if at < n:
                more = pieces_of(entries[at:n], upvotes, with_links, compact)
                pieces += more
                sizes = [one.html_size + weight(i) for one, i in zip(more, ids[at:n], strict=True)]
                sums += accumulate(sizes, initial=sums.pop())
            return sums

        cache: dict[tuple[int, int], tuple[tuple[object, ...], Layout, dict[str, str]]] = {}
        strings: dict[int, dict[str, str]] = {}
        strings_at = strings_of(digest, self.sender)

        def shape(full: int, shown: int) -> tuple[tuple[object, ...], Layout, dict[str, str]]:
            if (full, shown) not in cache:
                if shown not in strings:
                    strings[shown] = strings_at(shown)
                cache[full, shown] = self.layouts.shape(
                    digest, full, shown, strings[shown], urls, links
                )
            return cache[full, shown]

        weights: dict[tuple[object, str], int] = {}  # of the values as written, by encoder

        def around(full: int, shown: int) -> int:  # the HTML's weight but the pieces'
            _, layout, values = shape(full, shown)
            total = layout.html_literal_size
            for name, encoder in layout.html_values:
                value = values[name]
                weight = weights.get((encoder, value))
                if weight is None:
                    weight = weights[encoder, value] = qp_weight(encoder(value))
                total += weight
            return total

        sizes: dict[tuple[int, int], int] = {}

        def size(full: int, shown: int) -> int:  # of the HTML part as encoded, not building it
            if (full, shown) not in sizes:
                pieces = made(full, fulls, full_sums, False)[full]
                if shown > full:
                    sums = made(shown, compacts, compact_sums, True)
                    pieces += sums[shown] - sums[full]
                sizes[full, shown] = qp_size(around(full, shown) + pieces)
            return sizes[full, shown]

        def step(n: int, growth: list[int], at: int, upper: int) -> int:
            # from the size `at` n, what the pieces' `growth` allows (qp_size's soft breaks)
            room = (self.budget - at) * 72 // 75
            return min(max(bisect_right(growth, growth[n] + room) - 1, 0), upper)

        def whole_fits(f: int, compact: list[int]) -> bool:
            # Every paper in full, when the first f in full with the rest compact are over
            # the budget: it can fit all the same, without the compact list's own markup
            # (budget.LIST_MARKUP), unless the papers from f on add more than that in full
            # (then it weighs at least what the first f in full did). A paper's full form
            # holds its compact one (title and link): full pieces are made only that far.
            # (`compact`: every paper's compact piece sizes, summed.)
            growth = 0
            while f < total:
                sums = made(f + 1, fulls, full_sums, False)
                growth += sums[f + 1] - sums[f] - (compact[f + 1] - compact[f])
                if growth >= LIST_MARKUP:
                    return False
                f += 1
            return size(total, total) <= self.budget

        def choose() -> tuple[int, int]:
            # `fit`'s answer, with pieces made only as far as it looks: everything in full
            # first when the last email fitted so (what fit() asks first).
            if self._whole and size(total, total) <= self.budget:
                return total, total
            # The all-compact email of the first k papers, grown until it is over the budget:
            # then none fits in full, fewer than k are shown, and nothing past k is made.
            base = around(0, total)  # (no paper in full: the least around the pieces)
            k = 0
            while k < total - 1:  # (a few pieces at a time: the first k whose sum is over)
                ahead = min(k + AHEAD, total - 1)
                sums = made(ahead, compacts, compact_sums, True)
                k = bisect_right(sums, self._room - base, k + 1, ahead + 1)
                if k <= ahead and size(0, k) > self.budget:
                    near = step(k, sums, size(0, k), k - 1)
                    near = step(near, sums, size(0, near), k - 1)
                    return 0, largest(lambda n: size(0, n) <= self.budget, k - 1, near)
                k = min(k, ahead)
            # Every paper compact is near the budget or under it: the first f in full, grown
            # until over the budget, so full pieces past the answer are never made.
            compact = made(total, compacts, compact_sums, True)
            over = total
            for f in range(1, total + 1):
                sums = made(f, fulls, full_sums, False)
                quick = base + sums[f] + compact[total] - compact[f]
                if qp_size(quick) > self.budget and size(f, total) > self.budget:
                    over = f
                    break
            if whole_fits(over, compact):
                return total, total
            full = largest(lambda n: size(n, total) <= self.budget, over, over - 1)
            if full > 0 or size(0, total) <= self.budget:
                return full, total
            return 0, largest(lambda n: size(0, n) <= self.budget, total)

        full, shown = choose()
        self._whole = full == total  # (the next email most likely fits the same way)
        key, layout, values = shape(full, shown)
        made(full, fulls, full_sums, False)
        made(shown, compacts, compact_sums, True)
        bounds = list(accumulate(len(s.entries) for s in digest.sections))
        in_full = list(zip(fulls, ids, strict=False))
        slots: list[list[tuple[_Piece, str]]] = []
        start = 0
        for end in bounds:  # each section's papers shown in full (sections left empty dropped)
            if start < full:
                slots.append(in_full[start : min(end, full)])
            start = end
        compact = list(zip(compacts[full:shown], ids[full:shown], strict=True))
        if mine is not None:  # (their encodings alone, for the message)
            (mine.make if joined else mine.make_codes)(ids[:shown])
        if not joined:  # only as the message carries it
            _, html_qp = fill(layout.html, values, slots, compact, mine, html=True, strings=False)
            _, text_qp = fill(layout.text, values, slots, compact, mine, html=False, strings=False)
            # A CR in a piece's text or a value: the part is encoded whole instead, as the
            # email package would (`render`'s way; the HTML holds none).
            shown_pieces = chain(compact, *slots)
            if any(p.cr for p, _ in shown_pieces) or any("\r" in v for v in values.values()):
                raise _Slow
            html_body, text_body = join_qp(html_qp), join_qp(text_qp)
            subject = values["subject"]  # (render.strings_of's subject_line, made once)
            return EncodedEmail(subject, html_body, text_body, ids[:shown], full, ids[shown:]), key
        html, html_qp = fill(layout.html, values, slots, compact, mine, html=True)
        text, text_qp = fill(layout.text, values, slots, compact, mine, html=False)
        email = _email(digest, "".join(html), "".join(text), full, shown)
        parts = {"html_parts": tuple(html), "text_parts": tuple(text)}
        codes = {  # (a part holding a CR is encoded whole instead, as the email package would)
            "html_qp": () if "\r" in email.html else tuple(html_qp),
            "text_qp": () if "\r" in email.text else tuple(text_qp),
        }
        return replace(email, **parts, **codes), key
