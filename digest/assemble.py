"""Render once, assemble per subscriber: the bytes `render.render_reference` gives, fast.

MJML and premailer cost ~20 ms per trip; nearly all of an email is the same for everyone who
gets it. So a run finishes, through the whole template:

- each paper's block once (many papers per trip), with holes where what differs per reader
  goes: the highlighted title and abstract, the keyword tags (and "by <author>" tags);
- each layout once (how many sections; compact list, deferred line, unsubscribe link,
  trending section or not), with holes where a subscriber's own text and paper blocks go;
- one prototype, to learn how the highlight and tag elements come out of premailer.

A reader's version of a block is then filled in as text, serialized exactly as lxml writes it,
and every email is joined from finished pieces. The number of trips depends on the papers and
layouts, never on the subscribers or how their keywords combine (`Renderer.trips`).

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
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from email.utils import parseaddr
from functools import partial
from itertools import accumulate

from markupsafe import Markup

from digest.blocks import (
    _ITEM_END,
    _ITEM_START,
    _PAPER_END,
    _PAPER_START,
    _SENTINEL,
    _VALUES,
    Blocks,
    _compact_range,
    _compact_text,
    _cut,
    _html_attr,
    _html_text,
    _paper_text,
    _Piece,
    _Slow,
)
from digest.feedback_links import ReaderLinks
from digest.mailer import qp_part_cached, qp_size, qp_weight
from digest.models import Digest, RenderedEmail
from digest.piece_links import EmailLinks
from digest.render import (
    _email,
    _fit,
    _strings,
    reference_fits,
    render_at,
    render_reference,
    render_text,
)

log = logging.getLogger(__name__)

_TAG_OPEN = re.compile(r"<(\w+)[^<>]*\s([\w:-]+)=\"$")


_Part = tuple[str, str, Callable[[str], str] | None]


@dataclass(frozen=True)
class _Layout:
    html: tuple[_Part, ...]
    text: tuple[_Part, ...]
    html_literal_size: int  # mailer.qp_weight of every literal part of the HTML together


class Renderer:
    """Renders the emails of one run. `render(digest, unsubscribe_url)` returns exactly what
    `render_reference` returns for the same digest; only the time it takes differs.

    Keep one per run (its caches hold the run's papers, not its subscribers)."""

    def __init__(self, *, sender: str, budget: int, verify_every: int = 1000) -> None:
        self.sender, self.budget, self.verify_every = sender, budget, verify_every
        self.blocks = Blocks()
        self._layouts: dict[tuple[object, ...], _Layout | None] = {}
        self._verified: set[tuple[object, ...]] = set()
        self.count = 0
        self.assembled = 0  # emails joined from pieces (the rest were rendered in full)
        self.mismatches = 0
        self.budget_trusted = True  # until a sample's choice of papers differs (then: slow)

    @property
    def mark(self) -> str:
        return self.blocks.mark

    @property
    def trips(self) -> int:
        """Trips through MJML and premailer so far (reference renderings not counted)."""
        return self.blocks.trips

    @property
    def _pieces(self) -> dict[tuple[int, int], _Piece]:
        """The readers' versions of blocks made so far (a copy, for looking at)."""
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
        self._layouts[layout_key] = None
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
    ) -> tuple[RenderedEmail, tuple[object, ...]]:
        entries = digest.entries
        blocks, upvotes, with_links = self.blocks, digest.upvotes, links is not None
        pieces = [blocks.piece(e, upvotes.get(e.paper.id, 0), with_links) for e in entries]
        ids = [e.paper.id for e in entries]
        mine = EmailLinks(links) if links is not None else None  # this reader's links
        extra = [mine.weight(i) for i in ids] if mine is not None else [0] * len(ids)
        full_sums = [0, *accumulate(p.html_size + x for p, x in zip(pieces, extra, strict=True))]
        compact_sums: list[int] = []
        cache: dict[tuple[int, int], tuple[tuple[object, ...], _Layout, dict[str, str]]] = {}

        strings: dict[int, dict[str, str]] = {}

        def shape(full: int, shown: int) -> tuple[tuple[object, ...], _Layout, dict[str, str]]:
            if (full, shown) not in cache:
                if shown not in strings:
                    strings[shown] = _strings(digest, shown, self.sender)
                cache[full, shown] = self._shape(digest, full, shown, strings[shown], urls, links)
            return cache[full, shown]

        def compact_sizes() -> list[int]:
            if not compact_sums:
                sizes = (p.html_compact_size + x for p, x in zip(pieces, extra, strict=True))
                compact_sums.extend([0, *accumulate(sizes)])
            return compact_sums

        sizes: dict[tuple[int, int], int] = {}

        def size(full: int, shown: int) -> int:  # of the HTML part as encoded, not building it
            if (full, shown) not in sizes:
                sizes[full, shown] = measure(full, shown)
            return sizes[full, shown]

        def measure(full: int, shown: int) -> int:
            _, layout, values = shape(full, shown)
            total = layout.html_literal_size + full_sums[full]
            if shown > full:
                total += compact_sizes()[shown] - compact_sizes()[full]
            for kind, name, encoder in layout.html:
                if kind == "val":
                    assert encoder is not None
                    total += qp_weight(encoder(values[name]))
            return qp_size(total)

        def guess() -> int:  # how many in full: two secant steps on the pieces' sizes
            total = len(entries)
            growth = [f - c for f, c in zip(full_sums, compact_sizes(), strict=True)]

            def step(n: int) -> int:  # from the size at n, what the pieces' growth allows
                room = (self.budget - size(n, total)) * 72 // 75  # (qp_size's soft breaks)
                return min(max(bisect_right(growth, growth[n] + room) - 1, 0), total)

            return step(step(total))

        full, shown = _fit(size, len(entries), self.budget, guess)
        layout_key, layout, values = shape(full, shown)
        bounds = list(accumulate(len(s.entries) for s in digest.sections))
        shown_pieces = list(zip(pieces, ids, strict=True))
        slots: list[list[tuple[_Piece, str]]] = []
        start = 0
        for end in bounds:  # each section's papers shown in full (sections left empty dropped)
            if start < full:
                slots.append(shown_pieces[start : min(end, full)])
            start = end
        compact = shown_pieces[full:shown]
        html, html_qp = _fill(layout.html, values, slots, compact, mine, html=True)
        text, text_qp = _fill(layout.text, values, slots, compact, mine, html=False)
        email = _email(digest, "".join(html), "".join(text), full, shown)
        parts = {"html_parts": tuple(html), "text_parts": tuple(text)}
        encoded = {  # (a part holding a CR is encoded whole instead, as the email package would)
            "html_qp": () if "\r" in email.html else tuple(html_qp),
            "text_qp": () if "\r" in email.text else tuple(text_qp),
        }
        return replace(email, **parts, **encoded), layout_key

    def _shape(
        self,
        digest: Digest,
        full: int,
        shown: int,
        strings: dict[str, str],
        urls: tuple[str | None, str | None],
        links: ReaderLinks | None = None,
    ) -> tuple[tuple[object, ...], _Layout, dict[str, str]]:
        """The layout and values of the email showing the first `shown` entries, the first
        `full` of them in full (`strings`: `render._strings` for `shown`)."""
        values = {name: strings[name] for name in _VALUES}
        start = sections = 0
        for section in digest.sections:
            in_full = min(len(section.entries), max(0, full - start))
            start += len(section.entries)
            if in_full:
                values[f"k{sections}"], values[f"n{sections}"] = section.keyword, str(in_full)
                sections += 1
        unsubscribe_url, preferences_url = urls
        if unsubscribe_url is not None:
            values["unsubscribe"] = unsubscribe_url
        if preferences_url is not None:
            values["preferences"] = preferences_url
        if links is not None:
            values["likes"] = links.likes
        if any(self.blocks.mark in value for value in values.values()):
            raise _Slow
        layout_key = (
            sections,
            shown > full,
            bool(strings["deferred_line"]),
            unsubscribe_url is not None,
            preferences_url is not None,
            digest.trending,
            links is not None,
        )
        return layout_key, self._layout(layout_key), values

    # Paper blocks --------------------------------------------------------------------------

    def _layout(self, key: tuple[object, ...]) -> _Layout:
        if key not in self._layouts:
            try:
                self._layouts[key] = self._make_layout(key)
            except _Slow:
                self._layouts[key] = None
        layout = self._layouts[key]
        if layout is None:
            raise _Slow
        return layout

    def _make_layout(self, key: tuple[object, ...]) -> _Layout:
        sections, compact, deferred, unsubscribe, preferences, trending, likes = key
        assert isinstance(sections, int) and isinstance(trending, tuple)
        slot = replace(
            _SENTINEL, title=Markup(self.blocks.m("slot")), title_text=self.blocks.m("slot")
        )
        context: dict[str, object] = {name: self.blocks.m(name) for name in _VALUES}
        context.update(
            sender_address=parseaddr(self.sender)[1] or self.sender,
            sections=[
                {
                    "keyword": self.blocks.m(f"k{i}"),
                    "count": self.blocks.m(f"n{i}"),
                    "entries": [slot],
                }
                for i in range(sections)
            ],
            compact=[slot] if compact else [],
            deferred_line=self.blocks.m("deferred_line") if deferred else "",
            unsubscribe_url=self.blocks.m("unsubscribe") if unsubscribe else None,
            preferences_url=self.blocks.m("preferences") if preferences else None,
            likes_url=self.blocks.m("likes") if likes else None,
            trending=trending,
        )
        html = self.blocks.trip(context)
        spans = _cut(html, _PAPER_START, _PAPER_END)
        lo, hi = _compact_range(html)
        spans += _cut(html, _ITEM_START, _ITEM_END, lo, hi)
        for at, stop in sorted(spans, reverse=True):
            is_paper = html.startswith(_PAPER_START, at)
            html = html[:at] + self.blocks.m("P" if is_paper else "C") + html[stop:]
        text = render_text(context)
        text = text.replace(_paper_text(slot), self.blocks.m("P"))
        text = text.replace(_compact_text(slot), self.blocks.m("C"))
        html_parts, text_parts = self._parse(html, html=True), self._parse(text, html=False)
        known = {*_VALUES, "unsubscribe", "preferences", "likes"}
        known |= {f"{c}{i}" for c in "kn" for i in range(sections)}
        for parts in (html_parts, text_parts):
            names = [name for kind, name, _ in parts if kind != "lit"]
            if not set(names) <= known | {"P", "C"} or names.count("P") != sections:
                raise _Slow
            if names.count("C") != int(bool(compact)):
                raise _Slow
        literal = sum(qp_weight(text) for kind, text, _ in html_parts if kind == "lit")
        return _Layout(html_parts, text_parts, literal)

    def _parse(self, source: str, *, html: bool) -> tuple[_Part, ...]:
        """A layout's parts: the text between marks, and what each mark stands for."""
        parts: list[_Part] = []
        cursor = 0
        for found in self.blocks.marks.finditer(source):
            start, end, name = found.start(), found.end(), found[1]
            encoder: Callable[[str], str] | None = None
            if name not in ("P", "C"):
                encoder = str
                if html:
                    encoder = _html_text
                    opened = source.rfind("<", 0, start)
                    tag = _TAG_OPEN.match(source, opened, start)
                    if opened > source.rfind(">", 0, start) and tag:
                        # A whole attribute value: the serializer picks its quotes by the value.
                        if source[start - 2 : start] != '="' or source[end : end + 1] != '"':
                            raise _Slow
                        encoder = partial(_html_attr, tag[1], tag[2])
                        start, end = start - 1, end + 1
            parts.append(("lit", source[cursor:start], None))
            parts.append(("val", name, encoder) if encoder else (name, name, None))
            cursor = end
        parts.append(("lit", source[cursor:], None))
        return tuple(parts)


def _fill(
    parts: tuple[_Part, ...],
    values: dict[str, str],
    slots: list[list[tuple[_Piece, str]]],
    compact: list[tuple[_Piece, str]],
    links: EmailLinks | None,
    *,
    html: bool,
) -> tuple[list[str], list[bytes]]:
    """The parts of one email's HTML or text, in order (literals, values, pieces with the
    reader's links), and each part as quoted-printable (a piece's encoding is made once and
    kept with it)."""
    out: list[str] = []
    encoded: list[bytes] = []
    section = 0
    full_kind, compact_kind = ("html", "html_compact") if html else ("text", "text_compact")
    for kind, name, encoder in parts:
        if kind == "lit":
            if name:
                out.append(name)
                encoded.append(qp_part_cached(name))
        elif kind == "val":
            assert encoder is not None
            value = encoder(values[name])
            if value:
                out.append(value)
                encoded.append(qp_part_cached(value))
        else:
            shown = compact if kind == "C" else slots[section]
            section += kind == "P"
            piece_kind = compact_kind if kind == "C" else full_kind
            for piece, paper_id in shown:
                pair = links.pair(paper_id, piece_kind) if links is not None else None
                piece.write(piece_kind, out, encoded, pair)
    return out, encoded
