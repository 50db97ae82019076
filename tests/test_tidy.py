"""tidy.without_zero_fonts on MJML's real output: every zero font size (column wrappers,
Outlook ghost cells) is gone, and nothing else changed."""

from __future__ import annotations

import re

from mjml import mjml2html

from digest.tidy import without_zero_fonts

SOURCE = """<mjml><mj-body>
<mj-section><mj-column><mj-text>font-size:0px; is only text here</mj-text></mj-column></mj-section>
<mj-section><mj-column><mj-text font-size="14px">second</mj-text></mj-column></mj-section>
</mj-body></mjml>"""
ZERO = re.compile(r"font-size:\s*0(px)?\b")


def test_mjml_zero_fonts_are_removed_and_nothing_else() -> None:
    html = mjml2html(SOURCE, fonts={}, disable_comments=True)
    assert len(ZERO.findall(html)) >= 4  # what MJML writes: wrappers and ghost cells
    cleaned = without_zero_fonts(html)
    styles = re.findall(r'style="([^"]*)"', cleaned)
    assert not any(ZERO.search(style) for style in styles)
    assert "font-size:0px; is only text here" in cleaned  # text is not a style attribute
    assert "font-size:14px" in cleaned and "font-size:13px" in cleaned  # real sizes stay
    # Exactly those declarations went (MJML writes them all as "font-size:0px;").
    text = "font-size:0px; is only"
    expected = html.replace(text, "\0").replace("font-size:0px;", "").replace("\0", text)
    assert cleaned == expected


def test_html_without_zero_fonts_is_returned_as_is() -> None:
    html = '<p style="font-size:10px">x</p>'
    assert without_zero_fonts(html) is html
    assert without_zero_fonts('<td style="font-size: 0; padding:1px">') == (
        '<td style="padding:1px">'
    )
