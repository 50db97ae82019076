"""Headless Chromium (Debian's `chromium` + `chromium-driver`), driven by Selenium, for looking at
HTML as a reader's browser does.

Scripts can import it too (the `browser` fixture is the one pytest part)::

    screenshot(previews / "ada@example.org.html", Path("shot.png"), width=375, height=900)
    dom = dump_dom("http://127.0.0.1:8080/unsubscribe/...")  # the document the browser built
    layout = measure(previews / "ada@example.org.html", width=375)
    assert layout.scroll_width <= layout.viewport and not layout.overflowing

Widths are set with the DevTools protocol's device emulation (a headless window cannot be made
narrower than 500 px, a phone is 375). Each call starts its own Chromium with a fresh profile in
a temporary folder and quits it. The network is off: pages can load only local files.
`.ci/run` installs `chromium` and `chromium-driver` when they are missing.
"""

from __future__ import annotations

import base64
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PAGE_LOAD_TIMEOUT = 60  # seconds; a cold start on a busy 2-core machine is slow

# Runs in the loaded page: how wide the document is against the viewport, which visible elements
# reach past the right edge (cut off, or a horizontal scrollbar), font sizes and link boxes.
_PROBE = """
const vw = window.innerWidth, doc = document.documentElement, overflowing = [];
for (const el of document.querySelectorAll("body *")) {
  const r = el.getBoundingClientRect();
  if (r.width > 0 && r.height > 0 && r.right > vw + 1
      && getComputedStyle(el).visibility !== "hidden") {
    overflowing.push({tag: el.tagName.toLowerCase(), cls: String(el.className || ""),
                      right: Math.round(r.right),
                      text: (el.textContent || "").trim().slice(0, 60)});
  }
}
const fonts = [];
for (const el of document.querySelectorAll("p, li, a, span, h1, h2, h3, td, div")) {
  const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  if (own && el.getBoundingClientRect().height > 0) {
    fonts.push(parseFloat(getComputedStyle(el).fontSize));
  }
}
const links = [];
for (const a of document.querySelectorAll("a[href]")) {
  const r = a.getBoundingClientRect();
  if (r.height > 0) {
    links.push({text: (a.textContent || "").trim().slice(0, 40), height: r.height, width: r.width});
  }
}
return {viewport: vw, scroll_width: doc.scrollWidth, height: doc.scrollHeight,
        overflowing: overflowing, font_sizes: fonts, links: links};
"""


class BrowserMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    """What Chromium measured after loading a page at one width."""

    viewport: int  # window.innerWidth: the width the page was laid out for
    scroll_width: int  # document width: more than `viewport` means horizontal scrolling
    height: int  # document height
    overflowing: list[dict[str, Any]]  # visible elements past the right edge
    font_sizes: list[float]  # computed font size of every visible element with its own text
    links: list[dict[str, Any]]  # every visible link: text, height, width (CSS px)


def _which(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(
        f"none of {', '.join(names)} is installed: install Debian's packages "
        "(apt-get install -y chromium chromium-driver), or run .ci/run, which installs them"
    )


@contextmanager
def _browser(width: int, height: int) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _which("chromium", "chromium-browser")
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--mute-audio",
        "--force-device-scale-factor=1",
        # Only local files: a page that tries to fetch anything from the network gets nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=_which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        _emulate(driver, width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _emulate(driver: webdriver.Chrome, width: int, height: int) -> None:
    """A `width` x `height` CSS-pixel screen at scale 1; a touch phone below 500 px."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )


def _url(url_or_file: str | Path) -> str:
    text = str(url_or_file)
    if "://" in text or text.startswith(("data:", "about:")):
        return text
    return Path(text).resolve().as_uri()


def _layout(driver: webdriver.Chrome) -> Layout:
    return Layout(**driver.execute_script(_PROBE))


def measure(url_or_file: str | Path, width: int, height: int = 900) -> Layout:
    """Load the page in a `width`-wide viewport; what the probe script measured."""
    with _browser(width, height) as driver:
        driver.get(_url(url_or_file))
        return _layout(driver)


def screenshot(
    url_or_file: str | Path, out_png: Path, width: int, height: int, *, dark: bool = False
) -> Path:
    """A PNG of the page laid out `width` CSS pixels wide, `height` tall (scale 1).

    `height` 0 means the whole page, however long; `dark` asks for the dark colour scheme.
    """
    out_png = Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with _browser(width, height or 900) as driver:
        if dark:
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
        driver.get(_url(url_or_file))
        if not height:
            height = _layout(driver).height
            _emulate(driver, width, height)
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                "captureBeyondViewport": True,
            },
        )
    out_png.write_bytes(base64.b64decode(shot["data"]))
    return out_png


def dump_dom(url_or_file: str | Path, width: int = 800, height: int = 900) -> str:
    """The document as the browser built it (after parsing and scripts), serialised."""
    with _browser(width, height) as driver:
        driver.get(_url(url_or_file))
        return str(driver.execute_script("return document.documentElement.outerHTML"))


def png_size(png: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def browser() -> str:
    """The chromium executable (and its driver); fails, never skips, saying how to install them."""
    try:
        _which("chromedriver")
        return _which("chromium", "chromium-browser")
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
