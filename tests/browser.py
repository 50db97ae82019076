"""A real headless browser (Debian's chromium) for tests that must see a page as people do.

    png = screenshot("http://127.0.0.1:8080/unsubscribe/...", tmp_path / "page.png", 800, 900)

No skipping: when chromium is missing, tests fail and say how to install it (`.ci/run` does).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium` (.ci/run does)"
# Flags this machine needs: no sandbox as root in a container, no GPU, and no network of its own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
TIMEOUT = 120


class BrowserMissing(RuntimeError):
    pass


def chromium_path() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"no chromium found (tried {', '.join(CANDIDATES)}): {INSTALL_HINT}")


def _target(url_or_file: str) -> str:
    if "://" in url_or_file:
        return url_or_file
    return Path(url_or_file).resolve().as_uri()


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def screenshot(url_or_file: str, out_png: Path, width: int, height: int) -> Path:
    """Render a URL (or a local file) at width x height CSS pixels into `out_png`."""
    out_png = Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    result = _run(
        [f"--window-size={width},{height}", f"--screenshot={out_png}", _target(url_or_file)]
    )
    if result.returncode != 0 or not out_png.is_file() or out_png.stat().st_size == 0:
        raise RuntimeError(
            f"chromium made no screenshot of {url_or_file} (exit {result.returncode}): "
            f"{result.stderr[-2000:]}"
        )
    return out_png


def dump_dom(url_or_file: str) -> str:
    """The document as the browser built it (after parsing), serialised."""
    result = _run(["--dump-dom", _target(url_or_file)])
    if result.returncode != 0:
        raise RuntimeError(f"chromium could not load {url_or_file}: {result.stderr[-2000:]}")
    return result.stdout


def png_size(png: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def browser() -> str:
    """The chromium executable; fails (never skips) with how to install it when missing."""
    try:
        return chromium_path()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
