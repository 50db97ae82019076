"""kill -9 in the middle of a fast send to 500 subscribers, three times, then a normal run.

Nothing in digest is slowed or gated: `digest send` sends as fast as it can over
DIGEST_SMTP_CONNECTIONS=2 to a real aiosmtpd server (the SMTP stand-in's, with a handler that
takes STORE_S to store each message, as a mail server writing its queue file does, and records
its recipients and bytes; Message-IDs and papers are read afterwards), and the test kills the
process with SIGKILL each time the server has taken some more messages since the process
started, at an unlucky moment: the first within UNLUCKY_S at which the server holds more of
this process's emails than the database file records as sent plus one per connection (kill
at once if there is none). After a last run to the end, the mailboxes must show that:

- every subscriber got every paper owed (worked out from the served papers with the regex
  oracles of helpers.py, not by digest's matching);
- a paper reached a subscriber twice only as the same email sent again (same Message-ID),
  never in two different emails;
- such repeated emails number at most kills x connections: at a kill at most one email per
  connection can be accepted by the server without digest having recorded it as sent.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from email.message import EmailMessage
from itertools import combinations
from typing import Any

import pytest
from helpers import REASONING, REWARD_MODEL, Digest, abs_ids, matching, parts

WAIT = 60  # seconds: only ever reached when something is broken
SUBSCRIBERS = 500
CONNECTIONS = 2
KILLS = 3
MORE = 60  # messages the server takes from a `digest send` before it is killed
UNLUCKY_S = 1.0  # then the longest wait for an unlucky moment to kill it
STORE_S = 0.03  # the server's time to store a message before it answers 250
SERVED = 40  # the newest fixture papers served: emails of ~5-30 papers keep the test quick

PHRASES = {"reward model": REWARD_MODEL, "reasoning": REASONING}
# Every non-empty combination of the phrases, subscribers taking them in turn.
CHOICES = [c for n in range(1, len(PHRASES) + 1) for c in combinations(PHRASES, n)]


class Recorder:
    """An aiosmtpd handler keeping (recipients, bytes) of every message it accepts, taking
    STORE_S to store each one before it answers 250."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(STORE_S)
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or b"")))
        return "250 OK"


@pytest.fixture
def recorder(digest: Digest) -> Recorder:
    """Every message the installation's SMTP server accepts from now on."""
    recorder = Recorder()
    assert digest.smtp._controller is not None
    digest.smtp._controller.handler = recorder  # used by every new connection
    return recorder


def parse(raw: bytes) -> EmailMessage:
    lf = raw.replace(b"\r\n", b"\n")
    return email.message_from_bytes(lf, policy=email.policy.default)  # type: ignore[return-value]


def rows() -> list[dict[str, str]]:
    return [
        {
            "email": f"reader{i:03d}@example.org",
            "name": f"Reader {i}",
            "keywords": "; ".join(CHOICES[i % len(CHOICES)]),
        }
        for i in range(SUBSCRIBERS)
    ]


def start(digest: Digest) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "send"],
        env=digest.env(),
        cwd=digest.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def recorded_sent(digest: Digest) -> int:
    """Emails the database file records as sent (read while `digest send` writes it)."""
    try:
        return int(digest.query("SELECT count(*) FROM emails WHERE status = 'sent'")[0][0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def kill_after_more(
    digest: Digest, recorder: Recorder, process: subprocess.Popen[bytes], more: int
) -> None:
    """SIGKILL `process` once the server has taken `more` messages since now, at the first
    moment (within UNLUCKY_S) it holds more of them than are recorded as sent + CONNECTIONS."""
    received, sent = len(recorder.messages), recorded_sent(digest)
    deadline = time.monotonic() + WAIT
    while len(recorder.messages) < received + more:
        assert process.poll() is None, f"the run ended before the kill: {process.communicate()}"
        assert time.monotonic() < deadline, "the server got no more messages"
        threading.Event().wait(0.002)
    deadline = time.monotonic() + UNLUCKY_S
    while time.monotonic() < deadline and process.poll() is None:
        taken = len(recorder.messages) - received  # read first: the gap is not overstated
        unrecorded = taken - (recorded_sent(digest) - sent)
        if unrecorded > CONNECTIONS:
            break
        threading.Event().wait(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=WAIT)
    assert process.returncode == -signal.SIGKILL


def test_three_kills_mid_send_lose_nothing_and_repeat_at_most_one_email_per_connection(
    digest: Digest, recorder: Recorder
) -> None:
    digest.write_subscribers(rows())
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = str(CONNECTIONS)
    digest.arxiv.papers = papers = digest.arxiv.papers[:SERVED]
    owed = {
        row["email"]: matching(papers, *(PHRASES[k] for k in row["keywords"].split("; ")))
        for row in rows()
    }
    assert all(owed.values())  # every subscriber is owed something: every one gets an email

    for _ in range(KILLS):
        kill_after_more(digest, recorder, start(digest), MORE)
    assert len(recorder.messages) < SUBSCRIBERS  # the kills were in the middle of the send
    result = digest.run("send")
    assert result.returncode == 0, result.stderr

    # Per subscriber: the emails received (by Message-ID) and which papers each one carried.
    copies: dict[str, Counter[str]] = defaultdict(Counter)
    carried: dict[str, dict[str, set[str]]] = defaultdict(dict)
    for [to], raw in recorder.messages:
        message = parse(raw)
        message_id = message["Message-ID"]
        assert message_id, f"an email to {to} without a Message-ID"
        copies[to][message_id] += 1
        papers_in = abs_ids(parts(message)[1])
        assert carried[to].setdefault(message_id, papers_in) == papers_in, (
            f"two emails to {to} with the Message-ID {message_id} carry different papers"
        )
    for address, papers_owed in owed.items():
        emails = carried[address]
        got = [paper for ids in emails.values() for paper in ids]
        assert set(got) == papers_owed, f"{address}: missing {sorted(papers_owed - set(got))}"
        repeated = sorted(p for p, n in Counter(got).items() if n > 1)
        assert not repeated, f"{address} got {repeated} in two different emails"
    duplicates = sum(n - 1 for per in copies.values() for n in per.values())
    assert duplicates <= KILLS * CONNECTIONS, (
        f"{duplicates} emails arrived twice (same Message-ID) after {KILLS} kills with "
        f"{CONNECTIONS} connections: at most {KILLS * CONNECTIONS} can be in flight"
    )
