"""What `digest send` shows while it works: a progress bar with counts on a terminal (a real
pseudo-terminal here), one line per subscriber when its output is not a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Digest
from standins import ArxivStandin, SmtpStandin

PEOPLE = [f"reader{n}@example.org" for n in range(12)]


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {})
    installation.write_subscribers(
        [{"email": address, "keywords": "reward model"} for address in PEOPLE]
    )
    return installation


def run_on_a_terminal(digest: Digest, *args: str) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        env={**digest.env(), "TERM": "xterm", "COLUMNS": "100"},
        cwd=digest.home,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_progress_bar_counts_the_emails(digest: Digest) -> None:
    digest.smtp.reject_rcpt[PEOPLE[3]] = (550, "5.1.1 No such user")

    code, screen = run_on_a_terminal(digest, "send")

    assert code == 1
    assert len(digest.smtp.messages) == 11
    frames = screen.split("\r")
    assert any(re.search(r"Building and sending\s+\[[#-]+\]\s+0/12\b", f) for f in frames)
    assert any(re.search(r"\[#+\]\s+12/12\s+11 sent, 1 failed", f) for f in frames), screen
    assert not re.search(r"^reader\d+@example.org: \d+ papers", screen, re.M)  # no per-line log
    assert "11 emails sent, 1 failed." in screen
    assert f"Error: {PEOPLE[3]}: the mail server refused it: 550 5.1.1 No such user" in screen


def test_not_on_a_terminal_one_line_per_subscriber_and_no_bar(digest: Digest) -> None:
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == PEOPLE
    assert all(re.fullmatch(r"\S+: \d+ papers, \d+ KB, sent", line) for line in lines[:-1])
    assert "Building and sending" not in result.stdout + result.stderr
    assert "\r" not in result.stdout
