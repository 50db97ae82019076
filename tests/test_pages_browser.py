"""The sign-up, confirmation and preferences pages in real headless Chromium, served by a real
`digest serve`: a reader signs up, confirms and edits their keywords by clicking, on a phone
(375 px) and a desktop (800 px) width; no horizontal scrolling, readable type."""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import _browser, _layout, browser  # noqa: F401  (browser: fixture)
from helpers import Digest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from served import Served
from standins import ArxivStandin, SmtpStandin, free_port
from test_signup import confirmation_link, wait_for

SECRET = "test-secret-0123456789abcdef"
# A keyword long enough to stretch a narrow layout.
LONG = "Pneumonoultramicroscopicsilicovolcanoconiosis-and-other-very-long-unbroken-words"


@pytest.fixture
def served(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[Served]:
    port = free_port()
    digest = Digest(
        tmp_path,
        arxiv,
        smtp,
        {
            "DIGEST_SECRET": SECRET,
            "DIGEST_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DIGEST_SIGNUP": "open",
        },
    )
    digest.write_subscribers("email,keywords\nada@example.org,reward model\n")
    assert digest.run("send", "--dry-run").returncode == 0  # papers for the preview
    server = Served(digest, port)
    yield server
    server.stop()


def shot(driver: object, path: Path) -> None:
    layout = _layout(driver)  # type: ignore[arg-type]
    data = driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Page.captureScreenshot",
        {
            "format": "png",
            "clip": {"x": 0, "y": 0, "width": layout.viewport, "height": layout.height, "scale": 1},
            "captureBeyondViewport": True,
        },
    )
    path.write_bytes(base64.b64decode(data["data"]))
    keep = os.environ.get("DIGEST_KEEP_SCREENSHOTS")
    if keep:  # to look at them: DIGEST_KEEP_SCREENSHOTS=/some/dir pytest ...
        shutil.copy(path, Path(keep) / path.name)


def wait_text(driver: object, text: str) -> None:
    """After a click: wait until the page that follows shows `text`."""
    WebDriverWait(driver, 30).until(lambda d: text in d.page_source)  # type: ignore[arg-type]


def check_layout(driver: object, what: str) -> None:
    layout = _layout(driver)  # type: ignore[arg-type]
    assert layout.scroll_width <= layout.viewport, (what, layout.scroll_width, layout.overflowing)
    assert not layout.overflowing, (what, layout.overflowing)
    assert layout.font_sizes and min(layout.font_sizes) >= 14, (what, sorted(layout.font_sizes)[:5])


@pytest.mark.parametrize("width", [375, 800])
def test_sign_up_confirm_and_edit_preferences_by_clicking(
    served: Served,
    width: int,
    browser: str,  # noqa: F811
) -> None:
    digest = served.digest
    reader = f"reader{width}@example.org"
    out = digest.home
    with _browser(width, 900) as driver:
        driver.get(f"{served.url}/")
        check_layout(driver, "sign-up")
        shot(driver, out / f"signup-{width}.png")
        driver.find_element(By.NAME, "email").send_keys(reader)
        driver.find_element(By.NAME, "keywords").send_keys(f"reward model; {LONG}")
        driver.find_element(By.CSS_SELECTOR, "button.primary").click()
        wait_text(driver, "Check your inbox")
        check_layout(driver, "sign-up sent")

        link = confirmation_link(wait_for(digest.smtp, reader)[0])
        driver.get(link)
        check_layout(driver, "confirm")
        shot(driver, out / f"confirm-{width}.png")
        assert reader not in digest.csv_path.read_text(encoding="utf-8")
        driver.find_element(By.CSS_SELECTOR, "button.primary").click()
        wait_text(driver, "You are subscribed")
        assert f"{reader},reward model; {LONG}" in digest.csv_path.read_text(encoding="utf-8")

        driver.find_element(By.LINK_TEXT, "Your preferences").click()
        wait_text(driver, "Your digest preferences")
        check_layout(driver, "preferences")
        shot(driver, out / f"preferences-{width}.png")
        assert re.search(r"<strong>reward model</strong>: \d+ papers?", driver.page_source)
        box = driver.find_element(By.CSS_SELECTOR, "#keywords input[type=text]")
        box.send_keys("graph neural network")
        driver.find_element(By.CSS_SELECTOR, "#keywords .row button:not([formmethod])").click()
        wait_text(driver, "Added 'graph neural network'")
        check_layout(driver, "preferences after a change")
        row = next(
            line
            for line in digest.csv_path.read_text(encoding="utf-8").splitlines()
            if line.startswith(reader)
        )
        assert row == f"{reader},reward model; {LONG}; graph neural network,daily"
