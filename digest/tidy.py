"""One documented clean-up of MJML's output: its zero font sizes.

MJML writes `font-size:0px` on every column wrapper (so that whitespace between inline-block
columns takes no room in old WebKit) and on every Outlook "ghost table" cell, and has no option
to leave it out (mjml issues #1045, #2062, #2410: "nothing we can do"). Spam filters read a zero
or tiny font as hidden text: SpamAssassin's HTML_FONT_TINY_NORDNS (+1.0 when the relay has no
reverse DNS), rspamd's ZERO_FONT. Our layout has a single column per section, so the hack has
nothing to do; `without_zero_fonts` drops those declarations from the style attributes (also
inside the Outlook conditional comments), which is what MJML's users do.

Call it on mjml2html's output, before premailer (render.render_html), so the reference
rendering and the pieces the fast assembly joins both come from the same cleaned HTML.
Only style attributes change: text from arXiv is escaped by then (a `"` is `&#34;`), so no
paper's text can look like an attribute here.
"""

from __future__ import annotations

import re

_STYLE = re.compile(r'(\sstyle=")([^"]*)(")')
_ZERO_FONT = re.compile(r"(?:^|(?<=;))\s*font-size\s*:\s*0(?:\.0+)?(?:px|pt|em|rem|%)?\s*(?:;|$)")


def without_zero_fonts(html: str) -> str:
    """`html` with every `font-size:0` / `font-size:0px` declaration removed from its style
    attributes; nothing else changes."""
    if "font-size:0" not in html and "font-size: 0" not in html:
        return html

    def clean(match: re.Match[str]) -> str:
        declarations = _ZERO_FONT.sub("", match[2]).lstrip()
        return match[1] + declarations + match[3]

    return _STYLE.sub(clean, html)
