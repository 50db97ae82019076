"""`digest send` over several SMTP connections (DIGEST_SMTP_CONNECTIONS): the real CLI in a
subprocess against the loopback SMTP stand-in, which records which connection carried each
message; and the stage timings each run records."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from helpers import Digest, abs_ids, messages_to, parts
from standins import ArxivStandin, Paper, SmtpStandin, _SmtpHandler, base_id

from digest.config import Settings
from digest.pipeline import run_send

PEOPLE = [f"reader{n:02d}@example.org" for n in range(30)]
REWARD_MODEL = re.compile(r"\brewards?[\s-]+model(s|ing|ling|ed|er|ers)?\b", re.IGNORECASE)
WAIT = 60  # seconds: only ever reached when something is broken


class _Connections(_SmtpHandler):
    """The stand-in's handler, also noting which connection (client port) carried each
    accepted message."""

    def __init__(self, standin: SmtpStandin) -> None:
        super().__init__(standin)
        self.carried: list[tuple[str, object]] = []  # (recipient, peer)
        self.hold: threading.Event | None = None  # when set: hold every DATA until released

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.hold is not None and not self.hold.is_set():
            while not self.hold.is_set():
                await asyncio.sleep(0.02)
            if server.transport is None or server.transport.is_closing():
                return "451 4.4.2 Connection lost before the end of the transaction"
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.carried += [(rcpt, session.peer) for rcpt in envelope.rcpt_tos]
        return reply


def watch(smtp: SmtpStandin) -> _Connections:
    assert smtp._controller is not None
    handler = _Connections(smtp)
    smtp._controller.handler = handler  # new connections go through it
    return handler


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {"DIGEST_SMTP_CONNECTIONS": "3"})
    installation.write_subscribers(
        [{"email": address, "keywords": "reward model"} for address in PEOPLE]
    )
    return installation


def expected(papers: list[Paper]) -> set[str]:
    return {
        base_id(p["id"]) for p in papers if REWARD_MODEL.search(p["title"] + " " + p["abstract"])
    }


def test_three_connections_each_carry_several_emails_and_everyone_gets_one(
    digest: Digest,
) -> None:
    handler = watch(digest.smtp)

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    per_connection = Counter(peer for _, peer in handler.carried)
    assert len(per_connection) == 3, per_connection
    assert all(count >= 3 for count in per_connection.values()), per_connection
    owed = expected(digest.arxiv.papers)
    assert len(owed) >= 5
    for address in PEOPLE:
        [message] = messages_to(digest.smtp, address)
        assert abs_ids(parts(message)[1]) == owed
        assert digest.delivered(address) == owed
    assert sorted(r for r, _ in handler.carried) == PEOPLE
    assert digest.query("SELECT status, count(*) FROM emails GROUP BY status") == [("sent", 30)]
    # one line per subscriber, in the order of the file, whatever connection finished first
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == PEOPLE
    assert lines[-1].endswith("; 30 emails sent, 0 failed.")


def test_a_451_for_one_recipient_under_the_pool_defers_only_that_one(digest: Digest) -> None:
    unlucky = PEOPLE[7]
    digest.smtp.reject_rcpt[unlucky] = (451, "4.3.0 Mailbox busy, try later")

    result = digest.run("send")

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: {unlucky}: the mail server deferred it: 451 4.3.0 Mailbox busy, try later "
        f"(tried 4 times); its papers stay owed and go in the next email"
    ]
    assert messages_to(digest.smtp, unlucky) == []
    assert len(digest.smtp.messages) == 29
    rows = dict(digest.query("SELECT subscriber, status FROM emails"))
    assert rows.pop(unlucky) == "deferred"
    assert set(rows.values()) == {"sent"} and len(rows) == 29
    assert digest.delivered(unlucky) == set()
    assert "29 emails sent, 1 failed" in result.stdout


@pytest.mark.parametrize("value", ["0", "17", "two", "1.5"])
def test_a_bad_number_of_connections_is_refused_with_the_setting_named(
    digest: Digest, value: str
) -> None:
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = value

    result = digest.run("send")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: DIGEST_SMTP_CONNECTIONS='{value}' is not valid: use a whole number from 1 to 16"
    )
    assert digest.smtp.messages == []
    assert digest.arxiv.requests == []


def test_each_run_records_its_stage_timings_and_status_shows_the_last(digest: Digest) -> None:
    assert digest.run("send").returncode == 0

    status = digest.run("status", "--json")

    assert status.returncode == 0, status.stderr
    timings = json.loads(status.stdout)["runs"][0]["timings"]
    assert set(timings) == {
        "fetch_s",
        "match_s",
        "build_ms_median",
        "send_s",
        "emails",
        "messages_per_s",
        "avg_email_bytes",
        "peak_rss_mb",
        "blocks_s",
        "assembled",
        "rendered_in_full",
        "mjml_trips",
        "recommend_s",
    }
    assert timings["emails"] == 30
    # Every email was joined from pieces rendered once for the run, none rendered in full.
    assert timings["assembled"] == 30 and timings["rendered_in_full"] == 0
    assert timings["blocks_s"] > 0
    # MJML and premailer: one trip for the papers' blocks, one prototype, one per layout.
    assert 3 <= timings["mjml_trips"] <= 2 + 8
    assert timings["messages_per_s"] == pytest.approx(30 / timings["send_s"], rel=0.01)
    sizes = [len(m.raw) for m in digest.smtp.messages]
    assert abs(timings["avg_email_bytes"] - sum(sizes) / len(sizes)) < 0.02 * max(sizes)
    assert timings["build_ms_median"] > 0 and timings["peak_rss_mb"] > 10
    assert timings["fetch_s"] > 0 and timings["match_s"] > 0
    [(stored,)] = digest.query("SELECT timings FROM runs")
    assert json.loads(str(stored)) == timings


def test_killed_while_three_connections_send_a_normal_run_finishes_with_nothing_lost(
    digest: Digest,
) -> None:
    handler = watch(digest.smtp)
    handler.hold = threading.Event()
    handler.hold.set()
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "send"],
        env=digest.env(),
        cwd=digest.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while len(digest.smtp.messages) < 4:  # let a few through...
            assert process.poll() is None, process.communicate()
            threading.Event().wait(0.01)
        handler.hold.clear()  # ...then every message waits at the end of DATA
        threading.Event().wait(0.3)  # emails are in flight on the connections
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=WAIT)
        before = {m.message["Message-ID"] for m in digest.smtp.messages}
        rows = digest.query("SELECT message_id FROM emails WHERE status = 'pending'")
        pending = {str(row[0]) for row in rows}
    finally:
        handler.hold.set()  # the held sessions find their client gone and take nothing
    assert pending  # what was in flight was committed before it was sent

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "(left pending by an earlier run, same Message-ID)" in result.stdout
    owed = expected(digest.arxiv.papers)
    ids = Counter(m.message["Message-ID"] for m in digest.smtp.messages)
    for address in PEOPLE:
        mine = {m.message["Message-ID"] for m in digest.smtp.messages if address in m.rcpt_tos}
        assert len(mine) == 1, address  # a second copy only ever has the same Message-ID
        assert digest.delivered(address) == owed
    # Only emails accepted before the kill but not yet recorded went twice.
    assert {i for i, n in ids.items() if n > 1} <= before & pending
    assert digest.query("SELECT count(*) FROM emails WHERE status != 'sent'") == [(0,)]


def test_asked_to_stop_under_the_pool_it_finishes_what_is_in_flight_and_owes_the_rest(
    digest: Digest,
) -> None:
    settings = Settings.from_env(digest.env())
    settings = replace(
        settings,
        db_path=digest.db_path,
        subscribers_path=digest.csv_path,
        retry_backoff=0,
    )

    first = run_send(settings, should_stop=lambda: len(digest.smtp.messages) >= 5)

    assert first.stopped and 0 < first.sent < 30
    received = {r for m in digest.smtp.messages for r in m.rcpt_tos}
    assert len(received) == first.sent == len(digest.smtp.messages)  # in flight: finished
    rows = digest.query("SELECT subscriber, status FROM emails")
    assert sorted(rows) == sorted((address, "sent") for address in received)  # recorded
    assert first.left == 30 - first.sent
    [(status, message)] = digest.query("SELECT status, message FROM runs")
    assert status == "stopped" and message == f"stopped before {first.left} of 30 subscribers"

    second = run_send(settings)

    assert second.ok and second.sent == 30 - first.sent
    owed = expected(digest.arxiv.papers)
    for address in PEOPLE:
        [message] = messages_to(digest.smtp, address)
        assert abs_ids(parts(message)[1]) == owed
