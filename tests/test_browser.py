"""The email as a reader's browser shows it: a real digest (the seed papers through the real
pipeline, `digest send --dry-run`, trending on) laid out by headless Chromium at phone (375 px)
and desktop (800 px) widths. No horizontal scrolling, readable type, tappable links."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import measure, screenshot
from helpers import Digest
from standins import ArxivStandin, SmtpStandin, TrendingStandin, daily_paper, paper_from_fixture

ADA = "ada@example.org"
WIDTHS = (375, 800)


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Ada's digest HTML, with a paper built to stretch a layout: a long unbroken URL in its
    comment, a very long word in its title and many authors."""
    from standins import load_papers, recent

    home = tmp_path_factory.mktemp("browser")
    papers = recent(load_papers())
    stretch = paper_from_fixture(papers[0], datetime.now(UTC) - timedelta(minutes=5))
    stretch.update(
        id="2511.55555v1",
        title="Reward Models for Pneumonoultramicroscopicsilicovolcanoconiosis"
        "AndOtherVeryLongUnbrokenWordsThatNoPhoneCanFit",
        comment="Code: https://github.com/example-organisation/a-very-long-repository-name"
        "-that-goes-on-and-on/tree/main/experiments/reward_model_evaluation_suite",
        authors=[f"Author Number{i} Lastname" for i in range(12)],
    )
    with (
        ArxivStandin([stretch, *papers]) as arxiv,
        SmtpStandin() as smtp,
        TrendingStandin([daily_paper(p, 90 - i) for i, p in enumerate(papers[:8])]) as hf,
    ):
        digest = Digest(
            home,
            arxiv,
            smtp,
            {"DIGEST_TRENDING": "huggingface", "DIGEST_TRENDING_URL": hf.url},
        )
        digest.write_subscribers(
            f"email,keywords\n{ADA},reward model; reasoning; graph neural network\n"
        )
        result = digest.run("send", "--dry-run")
        assert result.returncode == 0, result.stderr
    yield home / "previews" / f"{ADA}.html"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_real_digest_fits_the_window_with_readable_type_and_tappable_links(
    preview: Path, width: int
) -> None:
    html = preview.read_text(encoding="utf-8")
    assert "Trending today" in html and "2511.55555" in html  # the page has what we test

    layout = measure(preview, width=width)

    assert layout.viewport == width  # really laid out at this width
    assert layout.scroll_width <= width, f"scrolls sideways: {layout.scroll_width} > {width}"
    assert layout.overflowing == []
    assert min(layout.font_sizes) >= 13
    actions = [link for link in layout.links if link["text"] in ("Abstract", "PDF")]
    assert len(actions) >= 20
    assert min(link["height"] for link in actions) >= 24  # WCAG 2.2 target size (minimum)
    assert min(link["width"] for link in actions) >= 24


def test_the_overflow_check_catches_a_page_that_scrolls_sideways(tmp_path: Path) -> None:
    page = tmp_path / "wide.html"
    page.write_text(
        '<!doctype html><html lang="en"><head><meta name="viewport" '
        'content="width=device-width, initial-scale=1"><title>wide</title></head>'
        '<body><p style="width: 600px">This paragraph is wider than a phone.</p></body></html>',
        encoding="utf-8",
    )
    layout = measure(page, width=375)
    # A phone zooms out to fit what is too wide: the layout viewport grows past 375 px.
    assert layout.viewport > 375 or layout.scroll_width > 375


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def test_the_email_has_an_accessible_structure_and_dark_mode_colours(preview: Path) -> None:
    doc = _Structure()
    doc.feed(preview.read_text(encoding="utf-8"))
    tags = [tag for tag, _ in doc.tags]
    html_attrs = dict(doc.tags)["html"]
    assert html_attrs["lang"] == "en"
    assert tags.count("h1") == 1 and "h2" in tags and "h3" in tags
    assert tags.index("h1") < tags.index("h2") < tags.index("h3")
    assert all(attrs.get("alt") for tag, attrs in doc.tags if tag == "img")
    layout_tables = [attrs for tag, attrs in doc.tags if tag == "table"]
    assert layout_tables and all(a.get("role") == "presentation" for a in layout_tables)
    metas = {a.get("name"): a.get("content") for tag, a in doc.tags if tag == "meta"}
    assert metas["color-scheme"] == "light dark"
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    # premailer kept the dark-mode block (it cannot be inlined) with its overrides.
    dark = "".join(doc.styles)
    assert "@media (prefers-color-scheme: dark)" in dark
    assert "background-color: #161b22 !important" in dark


def test_the_archive_html_page_fits_a_phone(preview: Path) -> None:

    from helpers import Digest as _Digest  # noqa: F401  (same installation as the preview)

    home = preview.parent.parent
    out = home / "archive.html"
    env = {"DIGEST_DB": str(home / "digest.db"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "digest", "archive", "--format", "html", "--out", str(out)],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    layout = measure(out, width=375)
    assert layout.viewport == 375 and layout.scroll_width <= 375
    assert layout.overflowing == []


def test_screenshot_writes_a_png_of_the_asked_size(preview: Path, tmp_path: Path) -> None:
    png = screenshot(preview, tmp_path / "shot.png", width=375, height=700)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (375, 700)
