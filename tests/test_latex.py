# ruff: noqa: RUF001 (Unicode look-alikes of ASCII are what these tests expect)
"""Readable math (digest.latex): the LaTeX of real arXiv titles, abstracts and comments (from
tests/fixtures/papers.json and the seed READMEs) becomes Unicode text; text without LaTeX, and
LaTeX that does not parse, is left exactly as given."""

from __future__ import annotations

import difflib
import re

import pytest
from standins import load_papers

from digest.latex import _alignment, readable, readable_spans

PAPERS = load_papers()


def fixture_text(needle: str) -> str:
    """The one fixture title, abstract or comment containing `needle` (real arXiv text)."""
    found = [
        p[field]
        for p in PAPERS
        for field in ("title", "abstract", "comment")
        if needle in (p[field] or "")
    ]
    assert len(found) == 1, needle
    return found[0]


@pytest.mark.parametrize(
    ("latex", "wanted"),
    [
        ("PB$^2$: Preference", "PB²: Preference"),
        ("$\\alpha$-divergence", "α-divergence"),
        ("\\emph{x}", "x"),
        ("$O(n^2)$", "O(n²)"),
        ("$x_{ij}$", "xᵢⱼ"),
        ("$x_{t-1}$ and $10^{-3}$", "xₜ₋₁ and 10⁻³"),
        ("$W_{\\theta}$", "W_θ"),  # Unicode has no subscript theta: kept readable
        ("$W_{\\text{KL}}$", "W_KL"),  # nor capital subscripts
        ("$e^{i\\pi}$", "e^iπ"),
        ("$x^{a+b'}$", "x^(a+b')"),
        ("$\\mathbb{R}^d$", "ℝᵈ"),
        ("$90^\\circ$", "90°"),
        ("V$^*$ Bench", "V* Bench"),
        ("$\\mathcal{O}(n \\log n)$", "𝒪(n log n)"),
        ("4.5$\\times$ speedup", "4.5× speedup"),
        ("$\\hat{x}$", "x̂"),
        ("$\\frac{a}{b}$", "a/b"),
        ("$a_i < b_j$", "aᵢ < bⱼ"),
        ("\\'Ecole na\\\"ive", "École naïve"),
        ("\\textbf{Metis-RISE} (\\textbf{R}L)", "Metis-RISE (RL)"),
        ("42.51\\% vs 45.53\\%", "42.51% vs 45.53%"),
        ("at only \\$9 USD", "at only $9 USD"),
        ("a\\_b and \\{set\\}", "a_b and {set}"),
        ("$$E=mc^2$$", "E=mc²"),
        # From the seed READMEs: a paper's own command stays as written; \neq becomes ≠.
        ("model, \\mone, designed", "model, \\mone, designed"),
        ("contradictions (A=B=C\\neq A)", "contradictions (A=B=C≠A)"),
    ],
)
def test_latex_becomes_readable_text(latex: str, wanted: str) -> None:
    assert readable(latex) == wanted


@pytest.mark.parametrize(
    "plain",
    [
        "Pricing: $5 and $10, or $5-$10",  # pandoc's rule: prices are not math
        "US$5 per paper",
        "C++ and 50% of the {braces} ~10x -- faster",
        "x < y & z > w; a_b c^d",  # no backslash command and no $...$: not LaTeX
        "Fig.~3, `code` and 'quotes' \u2014 “smart” 🚀",
        "",
    ],
)
def test_text_without_latex_is_left_exactly_as_it_is(plain: str) -> None:
    assert readable(plain) is plain


@pytest.mark.parametrize(
    "broken",
    [
        "broken {brace \\emph{x}",
        "\\emph{unclosed",
        "an unclosed $$display x^{2}",
        "\\textbf{x} and $x^{2$ oops",
    ],
)
def test_broken_latex_is_shown_as_given_and_never_raises(broken: str) -> None:
    assert readable(broken) == broken


def test_a_bare_percent_ampersand_or_tilde_is_text_not_latex() -> None:
    # In LaTeX % starts a comment and & aligns; in an abstract they are the characters.
    assert readable("$n$ grows 50% faster & more ~2x") == "n grows 50% faster & more ~2x"


def test_real_fixture_titles_abstracts_and_comments() -> None:
    title = fixture_text("PB$^2$")
    assert readable(title).startswith("PB²: Preference Space Exploration")

    emph = readable(fixture_text("\\emph{slightly more robust}"))
    assert "models are slightly more robust than" in emph and "\\emph" not in emph

    lanes = readable(fixture_text("TOP$_{ll}$"))
    assert "+3.1 in DETₗ, +5.3 in TOPₗₗ, +4.9 in TOPₗₜ," in lanes
    assert "\\curve cross-attention" in lanes  # the paper's own macro, kept

    arrows = readable(fixture_text("\\mathord{\\uparrow}"))
    assert "success rate (↑ 7.1%) and navigation efficiency (↑ 12.5%)" in arrows

    bon = readable(fixture_text("Soft Best-of-$n$"))
    assert "Soft Best-of-n sampling" in bon and "parameter λ." in bon
    assert "at a rate of O(1/n) in KL" in bon

    comment = readable(fixture_text("\\href{"))
    assert "available at this https URL. <https://bkhmsi.github.io/" in comment

    reta = readable(fixture_text("\\underline{$\\eta$}"))
    assert "Reliable at η (RETA)" in reta and "top η quantile" in reta

    price = readable(fixture_text("\\$9 USD"))
    assert "at only $9 USD post-training" in price


def test_every_fixture_text_converts_without_leftover_latex() -> None:
    texts = [p[f] or "" for p in PAPERS for f in ("title", "abstract", "comment")]
    for text in texts:
        out = readable(text)
        if "$" not in text and "\\" not in text:
            assert out == text
            continue
        # No math delimiters or text-formatting commands are left for the reader.
        assert not re.search(r"\\(emph|textit|textbf|times|alpha|lambda|eta|hat|mathord)\b", out)
        assert "$^" not in out and "$_" not in out
        # Nothing but LaTeX changed: the words are all still there.
        source = re.sub(r"\\[A-Za-z]+|[{}$]", "", text.replace("}{", " "))
        words = set(re.findall(r"[A-Za-z]{4,}", source))
        assert words <= set(re.findall(r"[A-Za-z]{4,}", out)), text[:60]


def test_highlights_move_with_the_text() -> None:
    text = "A \\emph{reward model} for $\\alpha$ and reward models"
    first, second = text.index("reward model"), text.rindex("reward model")
    spans = ((first, first + 12), (second, second + 13))
    out, moved = readable_spans(text, spans)
    assert out == "A reward model for α and reward models"
    assert [out[a:b] for a, b in moved] == ["reward model", "reward models"]


def test_highlights_on_text_without_latex_are_untouched() -> None:
    text = "Reward models at $5 each"
    assert readable_spans(text, ((0, 6),)) == (text, ((0, 6),))


def test_a_highlight_the_conversion_cannot_follow_is_dropped_not_misplaced() -> None:
    text = "The $\\alpha$ value"
    out, moved = readable_spans(text, ((6, 9),))  # inside the command name "\alpha"
    assert out == "The α value"
    assert all(out[a:b] for a, b in moved)  # never an empty or shifted highlight
    assert moved in ((), ((4, 5),))


def test_the_alignment_is_difflibs_on_every_real_text_with_latex() -> None:
    """Highlights move onto the readable text through `_alignment` (a longest common
    subsequence, joined): on the seed papers it finds exactly difflib's blocks, 1000x faster."""
    texts = [
        text
        for paper in load_papers()
        for text in (paper["title"], paper["abstract"], paper["comment"] or "")
        if readable(text) != text
    ]
    assert len(texts) >= 15
    for text in texts:
        matcher = difflib.SequenceMatcher(None, text, readable(text), autojunk=False)
        expected = tuple((a, b, n) for a, b, n in matcher.get_matching_blocks() if n)
        assert _alignment(text) == expected, text
