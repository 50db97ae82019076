"""`digest bounces` given bad settings, an unreachable or unwilling mailbox, and broken or
hostile messages: clear `Error:` lines that never show the password, and a reader that never
raises on what arrives in the mailbox."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Digest
from imap import Dovecot, free_port
from test_bounces import ENCODED, FIXTURES, PASSWORD

from digest.reports import parse
from digest.verp import verp_address, verp_recipient


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot(password=PASSWORD) as server:
        yield server


def test_mailbox_problems_are_clear_errors_without_the_password(
    digest: Digest, dovecot: Dovecot, tmp_path: Path
) -> None:
    unset = digest.run("bounces")
    assert unset.returncode == 1
    assert unset.stderr == (
        "Error: DIGEST_BOUNCE_MAILBOX is not set: set it to the mailbox bounces and complaints "
        "arrive in, e.g. export DIGEST_BOUNCE_MAILBOX='imaps://USER:PASSWORD@imap.example.org"
        "/INBOX' or the path of a Maildir\n"
    )
    cases = {
        "pop3://u:p@127.0.0.1/": "Error: DIGEST_BOUNCE_MAILBOX=(hidden) is not valid: use an "
        "imaps://USER:PASSWORD@HOST/FOLDER (or imap://) URL or the path of a Maildir\n",
        "imaps://bounces@127.0.0.1/": "Error: DIGEST_BOUNCE_MAILBOX=(hidden) is not valid: the "
        "URL needs a user and a password: imaps://USER:PASSWORD@HOST/FOLDER (write @ in the "
        "user as %40)\n",
        dovecot.url(password="wrong-" + PASSWORD): "Error: the IMAP server at 127.0.0.1:"
        f"{dovecot.port} refused the login for 'bounces@example.org'; check the user and "
        "password in DIGEST_BOUNCE_MAILBOX\n",
        dovecot.url(folder="Bounces"): f"Error: the IMAP server at 127.0.0.1:{dovecot.port} "
        "has no folder 'Bounces' for 'bounces@example.org'",
        f"imap://u:{ENCODED}@127.0.0.1:{free_port()}/": "Error: cannot reach the IMAP server at "
        "127.0.0.1:",
        f"imap://u:{PASSWORD}@127.0.0.1/": "Error: DIGEST_BOUNCE_MAILBOX=(hidden) is not valid: "
        "the URL's port is not a number from 1 to 65535 (write the user's and the password's "
        "special characters %-encoded: / as %2F, @ as %40, : as %3A, a space as %20)\n",
        str(tmp_path / "nowhere"): f"Error: {tmp_path / 'nowhere'}: not a Maildir (no cur/ or "
        "new/ folder); point DIGEST_BOUNCE_MAILBOX at the Maildir folder bounces are delivered "
        "to, or at an imaps:// URL\n",
    }
    for value, error in cases.items():
        digest.extra_env["DIGEST_BOUNCE_MAILBOX"] = value
        result = digest.run("bounces")
        assert result.returncode == 1, value
        assert result.stderr.startswith(error), (value, result.stderr)
        assert result.stdout == ""
        assert PASSWORD not in result.stderr and "p%40ss" not in result.stderr
    # imaps:// with a certificate this machine does not trust
    digest.extra_env["DIGEST_BOUNCE_MAILBOX"] = dovecot.url(secure=True)
    untrusted = digest.run("bounces")
    assert untrusted.returncode == 1
    assert untrusted.stderr.startswith(
        f"Error: TLS with the IMAP server at 127.0.0.1:{dovecot.ssl_port} failed"
    )
    # a failed read shows in `digest status`, the password never does
    shutil.rmtree(tmp_path / "nowhere", ignore_errors=True)
    text = digest.run("status").stdout
    assert re.search(
        r"^Bounces: the last read of imaps://bounces@example\.org@127\.0\.0\.1:\d+/INBOX "
        r"\(.*\) failed: TLS with",
        text,
        re.M,
    )
    assert PASSWORD not in text


def test_reading_a_report_never_raises_on_broken_or_hostile_bytes() -> None:
    samples = [
        b"",
        b"\x00\xff\xfe not a message at all",
        b"Message-ID: =?utf-8?b?w6k=?=\r\nSubject: \xe9\xff\r\n\r\nhello",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; \xff@x\n"
        b"Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550\r\n\r\n injected\n--x",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=y\n\n--y\n"
        b"Content-Type: message/feedback-report\n\n--y--",
    ]
    for path in sorted(FIXTURES.glob("*.eml")):
        data = path.read_bytes()
        samples += [data[: len(data) // 2], data[: len(data) // 5], data.replace(b"\n", b"\r\n")]
        full = parse(data)
        assert parse(data.replace(b"\n", b"\r\n")) == full  # as IMAP serves it
    for raw in samples:
        report = parse(raw)
        for text in (report.detail, report.source, report.recipient, report.status):
            assert "\n" not in text and "\r" not in text
    assert parse(samples[3]).kind == "hard" and parse(samples[4]).kind == "other"


def test_a_verp_address_names_its_recipient_and_nothing_else_does() -> None:
    sender = verp_address("bounces@example.org", "Ada.Lovelace+arxiv@Example.ORG")
    assert sender == "bounces+Ada.Lovelace+arxiv=Example.ORG@example.org"
    assert verp_recipient(sender, "bounces@example.org") == "ada.lovelace+arxiv@example.org"
    for other in (
        "bounces@example.org",
        "bounces+ada@example.org",
        "bounces+ada=example.org@elsewhere.org",
        "other+ada=example.org@example.org",
    ):
        assert verp_recipient(other, "bounces@example.org") is None


def test_with_a_return_path_each_email_goes_out_from_its_verp_address(
    digest: Digest,
) -> None:
    digest.extra_env["DIGEST_RETURN_PATH"] = "bounces@example.org"
    assert digest.run("send").returncode == 0
    senders = {tuple(m.rcpt_tos): m.mail_from for m in digest.smtp.messages}
    assert senders == {
        ("ada@example.org",): "bounces+ada=example.org@example.org",
        ("grace@example.org",): "bounces+grace=example.org@example.org",
    }
    for m in digest.smtp.messages:  # the From header is the sender's, as before
        assert m.message["From"] == "arXiv digest <digest@example.org>"
