"""The fast renderer (each paper block and layout rendered once, each email joined from those
pieces) gives byte for byte the email of the straightforward path (`render_reference`: the
whole template through Jinja, MJML and premailer for one subscriber), on real papers and on
hostile ones; and it really is the pieces that made the email, not a silent fallback."""

from __future__ import annotations

import binascii
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree
from standins import load_papers

from digest import feedback_links
from digest.assemble import Renderer
from digest.budget import WHOLE_REACH, fit, fit_holds, largest
from digest.feedback_links import ReaderLinks
from digest.mailer import encoded, qp_part, qp_weight
from digest.match import Hit, author_key, literal_pattern, literal_spans, plan_digest
from digest.models import (
    RECOMMENDED_SECTION,
    Digest,
    EncodedEmail,
    Entry,
    Paper,
    RenderedEmail,
    Section,
    Subscriber,
    TrendingPaper,
)
from digest.piece_links import EmailLinks, _href, _short
from digest.pieces import (
    _PLAIN_ATTR,
    _PLAIN_TEXT,
    PLAIN_URL,
    _html_attr,
    _html_text,
    _html_text_lxml,
)
from digest.render import render_reference

SENDER = "arXiv digest <digest@example.org>"
DAY = "2026-11-22"
KEYWORDS = [
    "reinforcement learning",
    "language model",
    "diffusion",
    "reward model",
    "graph neural network",
    "benchmark",
    "robot",
    "transformer",
    "agents",
    "reasoning",
]
HOSTILE_KEYWORD = "x & <b>\"y\"</b> 'z'"


def seed_papers(minutes_before: Callable[[int], int] = lambda index: index) -> list[Paper]:
    """The fixture papers as Paper values, the i-th published `minutes_before(i)` minutes
    before 2026-11-21 (also used by tests/test_plan_matches.py)."""
    start = datetime(2026, 11, 21, tzinfo=UTC)
    papers = []
    for index, p in enumerate(load_papers()):
        when = start - timedelta(minutes=minutes_before(index))
        papers.append(
            Paper(
                id=p["id"].rsplit("v", 1)[0],
                version=1,
                title=p["title"],
                authors=tuple(p["authors"]),
                abstract=p["abstract"],
                comment=p["comment"] or "",
                categories=tuple(p["categories"]),
                primary_category=p["primary_category"],
                published=when,
                updated=when,
                abs_url=f"https://arxiv.org/abs/{p['id']}",
                pdf_url=f"https://arxiv.org/pdf/{p['id']}",
            )
        )
    return papers


def _papers() -> list[Paper]:
    return seed_papers()


def _hostile(papers: list[Paper]) -> list[Paper]:
    """The same papers with the kinds of text arXiv can send: markup, entities, quotes,
    non-ASCII and emoji, huge words, things that look like our own slot markers."""
    evil = [
        ('<script>alert(1)</script> & </div><div class="paper"> x', 'a "quoted" & <b>bold</b>'),
        (
            "Ünïcödé ✓ 🚀 — “smart” \u2018quotes\u2019 &amp; &lt;",
            "zero\u200bwidth\u00a0nbsp " + "w" * 300,
        ),
        ("@@dgP@@ @@dgsubject@@ </li><li>", "@@dgC@@ </ul> diffusion x" + " y" * 400),
        ("x" * 400, "line\nbreaks\r\nand\ttabs  double  spaces"),
    ]
    out = list(papers)
    for i, (title, abstract) in enumerate(evil):
        p = papers[i]
        out[i] = replace(
            p,
            title=f"{title} {p.title}",
            abstract=f"{abstract} {p.abstract}",
            comment=f'{abstract[:40]} "c"',
        )
    return out


def _hits(papers: list[Paper], keywords: list[str]) -> dict[str, dict[str, Hit]]:
    """Where each keyword occurs literally (an oracle independent of SQLite; enough here)."""
    hits: dict[str, dict[str, Hit]] = {}
    for keyword in keywords:
        pattern = literal_pattern(keyword)
        found = {}
        for paper in papers:
            title, abstract = (
                literal_spans(pattern, paper.title),
                literal_spans(pattern, paper.abstract),
            )
            if title or abstract:
                found[paper.id] = (title, abstract)
        hits[keyword.casefold()] = found
    return hits


def _digests(papers: list[Paper], count: int, *, hostile: bool = False) -> list[Digest]:
    keywords = [*KEYWORDS, "diffusion x", HOSTILE_KEYWORD] if hostile else KEYWORDS
    hits = _hits(papers, keywords)
    by_id = {p.id: p for p in papers}
    trending = (
        TrendingPaper(papers[0].id, "<b>Trending</b> & “one”", 12),
        TrendingPaper("2601.00002", "two", 1),
    )
    digests = []
    memo: dict = {}  # entries shared between readers, as a run's planning shares them
    for n in range(count):
        chosen = tuple(keywords[(n * 7 + k * 3) % len(keywords)] for k in range(1 + n % 5))
        chosen = tuple(dict.fromkeys(chosen))
        authors = (papers[n % len(papers)].authors[0],) if n % 4 == 0 else ()
        person = Subscriber(
            email=f"reader{n}@example.org" if not hostile else f'"o\'n {n}"@example.org',
            keywords=chosen,
            authors=authors,
            weekday=None if n % 3 else n % 7,
        )
        by_author = {author_key(a): [p.id for p in papers if a in p.authors] for a in authors}
        digest = plan_digest(person, hits, by_id, set(), DAY, by_author=by_author, memo=memo)
        if n % 2:
            upvotes = {p.id: 3 + i for i, p in enumerate(papers[:20])}
            digest = replace(digest, trending=trending, upvotes=upvotes)
        if digest.entries:
            digests.append(digest)
    return digests


def _check(
    digests: list[Digest],
    budget: int,
    *,
    unsubscribe: bool = True,
    renderer: Renderer | None = None,
) -> Renderer:
    fresh = renderer is None  # (a given one may have its own reasons to take the slow path)
    renderer = renderer or Renderer(sender=SENDER, budget=budget, verify_every=10**9)
    encoder = Renderer(sender=SENDER, budget=budget, verify_every=10**9)  # the send path's way
    with_cr = 0
    for n, digest in enumerate(digests):
        url = f"https://digest.example.org/u/tok{n}?a=1&b=é é" if unsubscribe and n % 2 else None
        prefs = f"https://digest.example.org/p/{n}?q=\"x\"&r='y'" if url and n % 3 else None
        expected = render_reference(
            digest, sender=SENDER, budget=budget, unsubscribe_url=url, preferences_url=prefs
        )
        joined = renderer.assembled
        got = renderer.render(digest, url, preferences_url=prefs)
        assert got.html == expected.html, f"HTML of email {n} differs"
        assert got.text == expected.text, f"text of email {n} differs"
        assert got == expected
        # ...and as the message carries it, never joined as text: the bodies the mailer
        # makes of the joined email's parts, byte for byte (when `renderer` joined it; else
        # the same text: the whole text's lines break at other places).
        made = encoder.encode(digest, url, preferences_url=prefs)
        assert made == encoded(got) if renderer.assembled > joined else _text(made) == _text(got)
        with_cr += "\r" in got.html + got.text
    if fresh:
        assert encoder.assembled == renderer.assembled  # the same emails from pieces, and
        # all but each layout's first (checked the slow way) and those holding a CR without
        # their text joined at all
        assert encoder.unjoined >= len(digests) - len(encoder._verified) - with_cr > 0
    return renderer


def test_real_papers_every_email_is_assembled_and_identical() -> None:
    digests = _digests(_papers(), 24)
    assert len(digests) >= 20
    assert max(len(d.entries) for d in digests) >= 20  # some emails near a day's size
    renderer = _check(digests, 95_000)
    # Every email came from the pieces (else the comparison above proved nothing).
    assert renderer.assembled == renderer.count == len(digests)
    assert renderer.mismatches == 0


@pytest.mark.parametrize("budget", [40_000, 12_000, 5_000])
def test_over_budget_compact_and_deferred_emails_are_identical(budget: int) -> None:
    digests = _digests(_papers(), 16)
    renderer = _check(digests, budget)
    assert renderer.assembled == renderer.count
    cut = [
        r
        for r in map(Renderer(sender=SENDER, budget=budget).render, digests)
        if r.deferred or r.full_entries < len(r.paper_ids)
    ]
    assert cut  # the budget really made some emails compact or deferred papers


def test_hostile_text_is_identical_and_assembled_even_where_it_looks_like_a_marker() -> None:
    digests = _digests(_hostile(_papers()), 20, hostile=True)
    renderer = _check(digests, 60_000)
    assert renderer.mismatches == 0
    # Text that looks like a slot marker of an earlier design ("@@dgP@@") is just text now:
    # the marks are a fresh random string per run.
    assert any("@@dg" in e.paper.title for d in digests for e in d.entries[:3])
    assert renderer.assembled == renderer.count == len(digests)


def test_text_holding_the_runs_own_marker_takes_the_slow_path() -> None:
    renderer = Renderer(sender=SENDER, budget=95_000, verify_every=10**9)
    papers = _papers()
    papers[0] = replace(papers[0], title=f"{renderer.mark}P@@ reasoning {papers[0].title}")
    digests = _digests(papers, 20)
    _check(digests, 95_000, renderer=renderer)
    marked = [d for d in digests if papers[0].id in d.paper_ids]
    assert marked
    assert renderer.assembled == renderer.count - len(marked)


def test_a_wrong_piece_is_caught_and_the_reference_email_sent() -> None:
    digests = _digests(_papers(), 6)
    renderer = Renderer(sender=SENDER, budget=95_000, verify_every=1)
    first = renderer.render(digests[0])
    # Corrupt what the renderer cached for the first paper, as a bug in the cutting would.
    compact = first.full_entries == 0  # (the form the email shows it in)
    key = next(key for key in renderer.blocks._keys if key[3] == compact)
    entry, piece = renderer.blocks._keys[key]
    wrong = {
        name: ("<p>wrong</p>",) * len(getattr(piece, name)) for name in ("html_texts", "text_texts")
    }
    wrong |= {
        name: (b"<p>wrong</p>=\r\n",) * len(getattr(piece, name))
        for name in ("html_codes", "text_codes")
    }
    renderer.blocks._keys[key] = (entry, replace(piece, **wrong))
    again = renderer.render(digests[0])
    assert again == first == render_reference(digests[0], sender=SENDER, budget=95_000)
    assert renderer.mismatches == 1
    assert "<p>wrong</p>" not in again.html


def test_the_budget_check_at_the_edges_agrees_with_the_whole_search() -> None:
    """`fit_holds` (the sampled emails' check of the budget's choice) says yes to exactly what
    `fit`'s search chooses, for many growing size functions and budgets."""
    rng = random.Random(3)
    for _ in range(300):
        total = rng.randint(0, 12)
        compact_cost = [rng.randint(5, 50) for _ in range(total)]
        # The compact list's own markup; a paper in full adds more than its compact form,
        # enough that more than WHOLE_REACH of them outweigh that markup (budget.LIST_MARKUP).
        markup = rng.choice([0, rng.randint(1, 600)])
        more = markup // WHOLE_REACH + 1
        full_cost = [c + rng.randint(more, more + 350) for c in compact_cost]

        def size(f: int, s: int) -> int:
            listed = markup if s > f else 0  # noqa: B023
            return 100 + listed + sum(full_cost[:f]) + sum(compact_cost[f:s])  # noqa: B023

        budget = rng.randint(50, 3000)
        chosen = fit(size, total, budget)
        asked: list[tuple[int, int]] = []

        def counted(f: int, s: int, asked: list[tuple[int, int]] = asked) -> int:
            asked.append((f, s))
            return size(f, s)

        assert fit_holds(counted, total, budget, *chosen)
        assert len(asked) <= 4
        if total - chosen[0] > WHOLE_REACH:  # all in full is implied not to fit, never asked
            assert (total, total) not in asked
        known = {chosen: size(*chosen)}  # a rendering of the choice made already is not redone
        asked.clear()
        assert fit_holds(counted, total, budget, *chosen, known)
        assert chosen not in asked
        others = {(f, s) for s in range(total + 1) for f in range(s + 1)} - {chosen}
        assert not any(fit_holds(size, total, budget, *other) for other in others)


def test_a_search_from_a_guess_ends_where_the_halving_does() -> None:
    rng = random.Random(5)
    for _ in range(500):
        upper = rng.randint(0, 40)
        edge = rng.randint(-1, upper)  # the largest that fits (-1: none does)

        def fits(n: int) -> bool:
            return n <= edge  # noqa: B023

        asked: list[int] = []
        plain = largest(fits, upper)
        for guess in (-3, 0, edge, edge + 1, edge - 2, rng.randint(0, upper), upper, upper + 5):
            found = largest(lambda n: asked.append(n) or fits(n), upper, guess)  # noqa: B023
            assert found == plain == max(edge, 0)
    near = []
    largest(lambda n: near.append(n) or n <= 30, 100, 30)
    assert len(near) == 2  # a right guess: two sizes, not seven


def test_a_wrong_budget_choice_is_caught_and_the_reference_email_sent() -> None:
    digests = [d for d in _digests(_papers(), 6) if len(d.entries) > 3]
    renderer = Renderer(sender=SENDER, budget=30_000, verify_every=1)
    first = renderer.render(digests[0])
    assert renderer.mismatches == 0 and first.full_entries < len(first.paper_ids)
    # A bug in the sizes (not in the bytes): the first paper counted as far too large.
    key = next(key for key in renderer.blocks._keys if key[3])  # a compact piece
    _, piece = renderer.blocks._keys[key]
    object.__setattr__(piece, "html_size", 10**6)
    again = renderer.render(digests[0])
    assert again == first == render_reference(digests[0], sender=SENDER, budget=30_000)
    assert renderer.mismatches == 1 and not renderer.budget_trusted


def test_pieces_are_filled_per_reader_and_trips_do_not_grow_with_subscribers() -> None:
    papers = _papers()
    digests = _digests(papers, 40)
    renderer = Renderer(sender=SENDER, budget=95_000, verify_every=10**9)
    renderer.prepare(digests)  # as a run does, per batch of subscribers
    _check(digests, 95_000, renderer=renderer)

    def seen(e: Entry, upvotes: int) -> tuple[object, ...]:
        return e.paper.id, e.keywords, e.title_spans, e.abstract_spans, e.authors, upvotes

    distinct = {seen(e, d.upvotes.get(e.paper.id, 0)) for d in digests for e in d.entries}
    # One reader's version of each (in full, compact, or both: only what an email needs),
    # filled once.
    made = [(seen(entry, key[1]), key[3]) for key, (entry, _) in renderer.blocks._keys.items()]
    assert len(made) == len(set(made)) == len(renderer._pieces)
    assert {content for content, _ in made} <= distinct
    assert any(compact for _, compact in made) and not all(compact for _, compact in made)
    assert len(renderer._layouts) < len(digests)
    # The same paper is tagged and highlighted differently for different readers...
    shared = {}
    for d in digests:
        for e in d.entries:
            shared.setdefault(e.paper.id, set()).add((e.keywords, e.title_spans, e.abstract_spans))
    assert max(len(v) for v in shared.values()) >= 3
    # ...and yet each paper went through MJML and premailer once: the trips are one per batch
    # of papers, one prototype and one per layout, whatever the readers' keywords.
    trips = renderer.trips
    assert trips == 1 + 1 + len(renderer._layouts)  # < 250 papers: one batch
    more = _digests(papers, 120)[40:]
    before_layouts = len(renderer._layouts)
    renderer.prepare(more)
    _check(more, 95_000, renderer=renderer)
    assert renderer.trips - trips == len(renderer._layouts) - before_layouts


def test_prepare_finishes_every_block_a_batch_needs_up_front() -> None:
    digests = _digests(_papers(), 30)
    renderer = Renderer(sender=SENDER, budget=95_000, verify_every=10**9)
    renderer.prepare(digests)
    ready, trips = len(renderer._skeletons), renderer.trips
    # one per paper (and upvote count: the badge is part of the block)
    assert ready == len(
        {(e.paper.id, d.upvotes.get(e.paper.id)) for d in digests for e in d.entries}
    )
    assert trips == 1  # every block in one trip through MJML and premailer
    _check(digests, 95_000, renderer=renderer)
    assert len(renderer._skeletons) == ready  # no email had to finish a block of its own
    assert renderer.trips == trips + 1 + len(renderer._layouts)  # the prototype, the layouts
    assert renderer.assembled == renderer.count == len(digests)


# Issue 13: "Recommended for you" and the readers' feedback links -----------------------------


def _recommended(digests: list[Digest], papers: list[Paper], hostile: bool = False) -> list[Digest]:
    """The digests, every other one with a "Recommended for you" section of papers not in its
    keyword sections (each with its own "why", some hostile), some of them only that."""
    out = []
    for n, digest in enumerate(digests):
        if n % 2:
            out.append(digest)
            continue
        shown = set(digest.paper_ids)
        pool = [p for p in papers[n:] if p.id not in shown][: 1 + n % 5]
        why = 'Close to "<b>A & B</b> \u201cé\u201d", which you liked' if hostile else "Close to x"
        entries = tuple(
            Entry(p, (), why=f"{why}; words: w{n}, {p.id}") for p in pool if p.id not in shown
        )
        sections = (*digest.sections, Section(RECOMMENDED_SECTION, entries))
        if n % 6 == 4:
            sections = (Section(RECOMMENDED_SECTION, entries),)  # only recommendations
        out.append(replace(digest, sections=sections))
    return out


def _text(email: EncodedEmail | RenderedEmail) -> tuple[str, str]:
    """The HTML and text of an email as a mail program decodes its bodies."""
    bodies = email if isinstance(email, EncodedEmail) else encoded(email)
    return tuple(  # type: ignore[return-value]
        binascii.a2b_qp(body).decode().replace("\r\n", "\n")
        for body in (bodies.html_body, bodies.text_body)
    )


def _check_links(
    digests: list[Digest], budget: int, public: str, renderer: Renderer | None = None
) -> Renderer:
    renderer = renderer or Renderer(sender=SENDER, budget=budget, verify_every=10**9)
    renderer.prepare(digests, links=True)
    encoder = Renderer(sender=SENDER, budget=budget, verify_every=10**9)  # the send path's way
    for n, digest in enumerate(digests):
        links = ReaderLinks.make(public, "s3cret", digest.subscriber.key)
        url = f"{public}/unsubscribe/tok{n}"
        expected = render_reference(
            digest, sender=SENDER, budget=budget, unsubscribe_url=url, links=links
        )
        got = renderer.render(digest, url, links)
        assert got.html == expected.html, f"HTML of email {n} differs"
        assert got.text == expected.text, f"text of email {n} differs"
        assert got == expected
        assert encoder.encode(digest, url, links) == encoded(got), n
        for pid in got.paper_ids:  # every paper shown carries the reader's two links
            more, less = links.urls(pid)
            assert got.text.count(more) == got.text.count(less) == 1
            assert got.html.count(more) == 1 or "%" in got.html  # non-ASCII: escaped
        assert links.likes in got.text
    return renderer


@pytest.mark.parametrize("budget", [95_000, 30_000, 8_000])
def test_recommended_sections_and_feedback_links_are_assembled_and_identical(
    budget: int,
) -> None:
    papers = _papers()
    digests = _recommended(_digests(papers, 24), papers)
    assert sum(1 for d in digests if any(s.keyword == RECOMMENDED_SECTION for s in d.sections))
    renderer = _check_links(digests, budget, "https://digest.example.org")
    assert renderer.assembled == renderer.count == len(digests)
    assert renderer.mismatches == 0
    # ...and without links the same digests too.
    plain = _check(digests, budget)
    assert plain.assembled == plain.count == len(digests)


def test_recommended_and_links_with_hostile_text_and_public_url() -> None:
    papers = _hostile(_papers())
    digests = _recommended(_digests(papers, 16, hostile=True), papers, hostile=True)
    renderer = _check_links(digests, 60_000, "https://dígest.example.org/a&b/")
    assert renderer.mismatches == 0
    assert renderer.assembled == renderer.count == len(digests)


def test_the_section_shows_in_html_and_text_and_links_only_when_given() -> None:
    papers = _papers()
    digest = _recommended(_digests(papers, 2), papers)[0]
    recommended = digest.sections[-1].entries
    links = ReaderLinks.make("https://d.example.org", "s3cret", digest.subscriber.key)
    email = render_reference(digest, sender=SENDER, budget=10**7, links=links)
    assert f"== {RECOMMENDED_SECTION} ({len(recommended)}) ==" in email.text
    assert f"{RECOMMENDED_SECTION} <span" in email.html
    for entry in recommended:
        assert f"  Why: {entry.why}" in email.text
        assert entry.paper.id in email.paper_ids
    assert ">More like this</a>" in email.html and ">Not for me</a>" in email.html
    assert ">Your likes</a>" in email.html
    bare = render_reference(digest, sender=SENDER, budget=10**7)
    assert "More like this" not in bare.html + bare.text and "Your likes" not in bare.text


def test_a_links_short_end_is_encoded_as_the_mailer_encodes_it() -> None:
    links = ReaderLinks.make("https://d.example.org", "s3cret-0123456789abcdef", "a@b.org")
    for paper_id in ("2401.00001", "hep-th/9901001", "math.AG/0101001"):
        for letter in "mn":
            for tail in (links.tail(paper_id, letter), links.tail(paper_id, letter) + '"'):
                assert _short(tail) == (tail, qp_part(tail), qp_weight(tail))
    for odd in (".x", "From x", "a=b", "x" * 80, "é", 'a"b', '"'):
        assert _short(odd) == (odd, qp_part(odd), qp_weight(odd))


def test_the_budget_counts_a_papers_links_as_they_are_written() -> None:
    """`EmailLinks.weight` (the size the budget adds, without making the MAC) is what the
    written links weigh, for plain and unusual ids and public URLs."""
    for public_url in ("https://d.example.org", "https://dígest.example.org/a&b/"):
        links = ReaderLinks.make(public_url, "s3cret-0123456789abcdef", "a@b.org")
        start = links.base + links.signed + "~"
        mine = EmailLinks(links)
        for paper_id in ("2401.00001", "hep-th/9901001", "math.AG/0101001", "a=b", "x" * 60):
            tails = links.tails(paper_id)
            if mine.plain:
                written = sum(qp_weight(f'"{start}') + qp_weight(t + '"') for t in tails)
            else:
                written = sum(qp_weight(_href(start + t)) for t in tails)
            assert mine.weight(paper_id) == written, (public_url, paper_id)


def test_the_send_paths_link_encodings_are_the_links_encoded() -> None:
    """`EmailLinks.codes` (the links' encodings alone, made from bytes) is exactly what `pair`
    encodes, whether asked one paper at a time or for an email's papers at once, for plain and
    unusual ids and public URLs."""
    ids = ["2401.00001", "hep-th/9901001", "math.AG/0101001", "2401.00001v2", "a=b", "x" * 60]
    ids += ["From.1", ".x", "é1", 'a"b']
    for public_url in ("https://d.example.org", "https://dígest.example.org/a&b/"):
        for key in ("a@b.org", "Ünïcode <x@y.org>"):
            links = ReaderLinks.make(public_url, "s3cret-0123456789abcdef", key)
            expected, at_once, alone = EmailLinks(links), EmailLinks(links), EmailLinks(links)
            at_once.make_codes(ids)
            for paper_id in ids:
                for html in (True, False):
                    want = expected.pair(paper_id, html)[1]
                    assert at_once.codes(paper_id, html) == want, (public_url, paper_id)
                    assert alone.codes(paper_id, html) == want, (public_url, paper_id)


def test_an_emails_links_made_at_once_are_each_papers_own() -> None:
    """`tails_many` (the MACs of an email's papers encoded in one call) gives each paper the
    tails its own MAC gives, and `read` takes every link back to its reader, paper and kind."""
    secret = "s3cret-0123456789abcdef"
    links = ReaderLinks.make("https://d.example.org", secret, "a@b.org")
    ids = ["2401.00001", "hep-th/9901001", "math.AG/0101001", "2401.00001v2", "x" * 60]
    for paper_id, (more, less) in zip(ids, links.tails_many(ids), strict=True):
        own = feedback_links._macs(links.key, "a@b.org", paper_id)
        shown = paper_id.replace("/", "!")
        assert (more, less) == (f"m~{shown}~{own[0]}", f"n~{shown}~{own[1]}")
        for tail, kind in ((more, "like"), (less, "dislike")):
            assert feedback_links.read(secret, f"{links.signed}~{tail}") == (
                "a@b.org",
                paper_id,
                kind,
            )


def test_values_written_as_they_are_are_what_lxml_writes() -> None:
    """The serializer's short cuts (`_html_text`, `_html_attr` for an href: values returned
    as they are, without lxml) agree with lxml itself on every ASCII character alone, on random
    strings of them, and on every real title, abstract and author list."""
    rng = random.Random(5)
    ascii_chars = [chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n"]
    samples = ascii_chars + [
        "".join(rng.choices(ascii_chars, k=rng.randint(0, 60))) for _ in range(3000)
    ]
    for paper in _papers():
        samples += [paper.title, paper.abstract, ", ".join(paper.authors)]
    plain_text = plain_url = plain_attr = 0
    for value in samples:
        if _PLAIN_TEXT.fullmatch(value):
            plain_text += 1
            assert _html_text(value) == _html_text_lxml(value) == value, repr(value)
        if PLAIN_URL.fullmatch(value):
            plain_url += 1
            assert _html_attr("a", "href", value) == _html_attr.__wrapped__("a", "href", value)
            element = etree.Element("a")
            element.set("href", value)
            assert (
                etree.tostring(element, method="html", encoding="unicode")
                == f'<a href="{value}"></a>'
            )
        if _PLAIN_ATTR.fullmatch(value):
            plain_attr += 1
            for tag, attr in (("div", "aria-label"), ("span", "title"), ("img", "alt")):
                element = etree.Element(tag)
                element.set(attr, value)
                end = "" if tag == "img" else f"</{tag}>"  # (img: a void element)
                assert etree.tostring(element, method="html", encoding="unicode") == (
                    f"<{tag} {attr}={_html_attr(tag, attr, value)}>{end}"
                ), repr(value)
    assert plain_text > 1000 and plain_url > 50 and plain_attr > 1000  # the short cuts were tried
