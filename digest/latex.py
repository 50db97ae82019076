# ruff: noqa: RUF001, RUF002 (this module writes Unicode look-alikes of ASCII on purpose)
"""Readable math: the LaTeX arXiv leaves in titles, abstracts and comments as Unicode text.

`PB$^2$` -> `PB²`, `$\\alpha$-divergence` -> `α-divergence`, `\\emph{x}` -> `x`, `$O(n^2)$` ->
`O(n²)`, `$x_{ij}$` -> `xᵢⱼ`, `$W_{\\theta}$` -> `W_θ` (no subscript theta in Unicode).

pylatexenc parses the text and turns macros, accents and symbols into Unicode; what it leaves
as `^`/`_` in math we write with Unicode's superscript and subscript characters, taken from the
Unicode database itself (`<super>`/`<sub>` decompositions), when every character has one.

Text is left exactly as it is when it holds no LaTeX (no backslash command and no `$...$`
math), and when its LaTeX does not parse (an unclosed brace or math): shown as given. A `$`
counts as math only by pandoc's rule (an opening `$` has a non-space right after it, a closing
one a non-space right before it and no digit right after it), so prices like `$5 and $10` stay.
A bare `%`, `&` or a `~` after a space is text in an abstract, never a comment, alignment or
no-break space.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from pylatexenc import latexwalker
from pylatexenc.latex2text import LatexNodes2Text
from pylatexenc.macrospec import MacroSpec
from rapidfuzz.distance import LCSseq

from digest.models import Span

__all__ = ["readable", "readable_spans"]

_START, _END = "\ue000", "\ue001"  # private-use marks around a highlight while converting
_MARKS = _START + _END
_COMMAND = re.compile(r"\\[A-Za-z@]|\\[$%&_#{}^~ ,;:!|\\'\"`=.]")
_BARE = re.compile(r"(?<!\\)([%&])")
_SPACES = re.compile(r"  +")
_TILDE = re.compile(r"(?:^|(?<=\s))~")
# Characters that already read as a superscript, and math symbols that have a usual one.
_SCRIPT_CHAR = re.compile(rf"([\^_])\s*([{_MARKS}]*[^\s\^_{{}}{_MARKS}][{_MARKS}]*)")
_SUPER_AS_IS = {"*": "*", "∗": "*", "′": "′", "″": "″", "‴": "‴", "†": "†", "‡": "‡"}
_SUPER_SYMBOL = {"∘": "°", "°": "°"}


def _script_table(kind: str) -> dict[str, str]:
    """Base character -> its superscript (`kind` "super") or subscript ("sub") form, from the
    Unicode database: letters, digits, + − = ( ) and Greek, in blocks fonts have long covered
    (Basic Multilingual Plane below U+A700; not the Latin-1 ordinal indicators ª º)."""
    table: dict[str, str] = {}
    tag = f"<{kind}>"
    for code in range(0x80, 0xA700):
        char = chr(code)
        if char in "ªº":
            continue
        decomposition = unicodedata.decomposition(char)
        if not decomposition.startswith(tag):
            continue
        parts = decomposition.split()[1:]
        if len(parts) != 1:
            continue
        base = chr(int(parts[0], 16))
        wanted = base.isascii() and (base.isalnum() or base in "+=()")
        if wanted or base == "−" or unicodedata.name(base, "").startswith("GREEK SMALL"):
            table.setdefault(base, char)
    table["-"] = table["−"]
    return table


_SUPER = _script_table("super")
_SUB = _script_table("sub")


def _script(kind: str, text: str) -> str:
    """`text` (already converted) as a superscript (`kind` "^") or subscript ("_")."""
    core = text.strip().translate({ord(m): None for m in _MARKS})
    if not core:
        return text
    table = _SUPER if kind == "^" else _SUB
    if all(c in table for c in core):
        return "".join(table.get(c, c) for c in text.strip() if c != " ")
    if kind == "^" and core in _SUPER_AS_IS:
        return text.strip().replace(core, _SUPER_AS_IS[core])
    if kind == "^" and core in _SUPER_SYMBOL:
        return text.strip().replace(core, _SUPER_SYMBOL[core])
    if len(core) == 1 or core.isalnum():
        return kind + text.strip()
    return f"{kind}({text.strip()})"


def _walker_context() -> latexwalker.LatexContextDb:
    context = latexwalker.get_default_latex_context_db()
    # pylatexenc's text side expects \href's two arguments, its parser does not read them.
    context.add_context_category("digest", macros=[MacroSpec("href", "{{")], prepend=True)
    return context


_CONTEXT = _walker_context()


class _ToText(LatexNodes2Text):
    """pylatexenc's converter, with sub/superscripts in math and unknown commands kept."""

    def __init__(self) -> None:
        super().__init__(math_mode="text", strict_latex_spaces=False)
        self._in_math = 0

    def math_node_to_text(self, node: latexwalker.LatexNode) -> str:
        self._in_math += 1
        try:
            text = self._math_nodes(node.nodelist or [])
        finally:
            self._in_math -= 1
        return _SPACES.sub(" ", text).strip()

    def _math_nodes(self, nodes: Sequence[latexwalker.LatexNode]) -> str:
        out: list[str] = []
        pending = ""  # "^" or "_" whose argument is the next node
        for node in nodes:
            if node is None:
                continue
            if node.isNodeType(latexwalker.LatexCharsNode):
                chars = node.chars
                if pending:
                    if chars[:1].isspace():
                        chars = chars.lstrip()
                    if not chars:
                        continue
                    take = 1
                    while take < len(chars) and chars[take - 1] in _MARKS:
                        take += 1
                    out.append(_script(pending, chars[:take]))
                    chars, pending = chars[take:], ""
                out.append(self._math_chars(chars))
                if chars.endswith(("^", "_")) and not chars.endswith(("\\^", "\\_")):
                    out[-1], pending = out[-1][:-1], chars[-1]
            elif pending:
                out.append(_script(pending, self.node_to_text(node)))
                pending = ""
            else:
                out.append(self.node_to_text(node))
        if pending:
            out.append(pending)
        return "".join(out)

    @staticmethod
    def _math_chars(chars: str) -> str:
        """Chars inside math, with `^x` / `_x` (a single character argument) converted."""

        def one(match: re.Match[str]) -> str:
            return _script(match[1], match[2])

        return _SCRIPT_CHAR.sub(one, chars)

    def macro_node_to_text(self, node: latexwalker.LatexMacroNode) -> str:
        if self.latex_context.get_macro_spec(node.macroname) is None:
            if self._in_math:  # \mathord, \bm, \boldsymbol...: formatting; keep the argument
                return ""
            # A paper's own command, like \mone: keep it readable.
            return "\\" + node.macroname + node.macro_post_space
        text = super().macro_node_to_text(node)
        arguments = node.nodeargd.argnlist if node.nodeargd else []
        if self._in_math and text[-1:].isalpha() and not any(arguments):
            text += node.macro_post_space  # \log n: "log n"
        return text


_CONVERTER = _ToText()


def _math_spans(text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """(math spans as [start, end) including the dollars, indices of literal dollars)."""
    spans: list[tuple[int, int]] = []
    literal: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c != "$":
            i += 1
            continue
        if text.startswith("$$", i):
            close = _closing(text, i + 2, "$$")
            if close != -1:
                spans.append((i, close + 2))
                i = close + 2
                continue
            literal += [i, i + 1]
            i += 2
            continue
        close = _closing(text, i + 1, "$")
        if (
            close != -1
            and not text[i + 1].isspace()
            and not text[close - 1].isspace()
            and not (close + 1 < n and text[close + 1].isdigit())
        ):
            spans.append((i, close + 1))
            i = close + 1
            continue
        literal.append(i)
        i += 1
    return spans, literal


def _closing(text: str, start: int, delimiter: str) -> int:
    """Index of the next unescaped `delimiter` at or after `start`, or -1 (none, or empty)."""
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(delimiter, i):
            return i if i > start else -1
        i += 1
    return -1


def _has_latex(text: str) -> bool:
    if "\\" not in text and "$" not in text:
        return False
    return bool(_COMMAND.search(text)) or bool(_math_spans(text)[0])


def _prepare(text: str) -> str:
    """`text` with what is literal in an abstract escaped for the parser: dollars that are
    not math, bare % and &, a ~ that starts a word."""
    _, literal = _math_spans(text)
    if literal:
        chars = list(text)
        for i in literal:
            chars[i] = "\\$"
        text = "".join(chars)
    text = _BARE.sub(r"\\\1", text)
    return _TILDE.sub(r"\\textasciitilde{}", text)


def _convert(text: str) -> str | None:
    """The readable form of `text`, or None when its LaTeX does not parse."""
    try:
        walker = latexwalker.LatexWalker(
            _prepare(text), latex_context=_CONTEXT, tolerant_parsing=False
        )
        nodes, _, _ = walker.get_latex_nodes()
        return _CONVERTER.nodelist_to_text(nodes)
    except Exception:  # any failure of the parser or converter: show the text as given
        return None


@lru_cache(maxsize=8192)
def readable(text: str) -> str:
    """`text` with its LaTeX turned into readable Unicode; unchanged when it has no LaTeX or
    its LaTeX does not parse. Never raises. Cached (a run shows each paper many times)."""
    if not text or not _has_latex(text):
        return text
    converted = _convert(text)
    return text if converted is None else converted


@lru_cache(maxsize=4096)
def _alignment(text: str) -> tuple[tuple[int, int, int], ...]:
    """Where `text` and `readable(text)` agree: blocks (start in text, start in the readable
    form, length), found once per text. The conversion only rewrites the LaTeX, so the words
    around it line up: a longest common subsequence (rapidfuzz, in C: ~1 ms for an abstract
    where difflib took ~50), each block slid onto the block it can join (`_joined`)."""
    plain = readable(text)
    found = LCSseq.opcodes(text, plain).as_matching_blocks()
    return _joined(text, plain, [(m.a, m.b, m.size) for m in found if m.size])


def _joined(
    text: str, plain: str, blocks: list[tuple[int, int, int]]
) -> tuple[tuple[int, int, int], ...]:
    """`blocks` with each one that the next continues on one side, and that the same characters
    just before the next one on the other side could stand for, moved there and joined: of
    `\\emph{more}` -> `more`, a subsequence may pair the `m` of `emph` with the `m` of `more`;
    the whole word is one block (as difflib's longest-match-first alignment finds it)."""
    out: list[tuple[int, int, int]] = []
    for a, b, n in blocks:
        while out:
            a1, b1, n1 = out[-1]
            if b1 + n1 == b and a > a1 + n1 and text[a1 : a1 + n1] == text[a - n1 : a]:
                out.pop()
                a, b, n = a - n1, b1, n1 + n
            elif a1 + n1 == a and b > b1 + n1 and plain[b1 : b1 + n1] == plain[b - n1 : b]:
                out.pop()
                a, b, n = a1, b - n1, n1 + n
            else:
                break
        out.append((a, b, n))
    return tuple(out)


@lru_cache(maxsize=16384)
def readable_spans(text: str, spans: tuple[Span, ...]) -> tuple[str, tuple[Span, ...]]:
    """`readable(text)` and `spans` (highlights, [start, end) in `text`) moved onto it. A span
    that the conversion rewrote (inside a LaTeX command or formula) is dropped rather than
    misplaced. Cheap per call: each text is aligned with its readable form once."""
    plain = readable(text)
    if plain == text or not spans:
        return plain, spans if plain == text else ()
    blocks = _alignment(text)
    moved: list[Span] = []
    for start, end in sorted(spans):
        for a, b, n in blocks:
            if a <= start and end <= a + n:
                if end > start:
                    moved.append((b + start - a, b + end - a))
                break
    return plain, tuple(moved)
