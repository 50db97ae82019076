"""`digest bounces` as an operator runs it: a real subprocess (`python -m digest bounces`)
reading a real Dovecot IMAP server on loopback (tests/imap.py) or a Maildir. The DSNs are
Postfix's own: live from a Postfix instance of the test's own (tests/postfix.py) that bounces a
real digest, and recorded ones (tests/fixtures/bounces/, see its README: hard, soft, VERP,
unattributable) next to an RFC 5965 abuse report and a qmail notice, about emails a real
`digest send` sent; then `digest status` and the next `digest send`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import ADA, ADA_ROW, ALAN, ALAN_ROW, GRACE, GRACE_ROW, Digest, messages_to, owed
from imap import Dovecot, free_port
from postfix import Postfix

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
PASSWORD = "s3cret/p@ss word"
ENCODED = quote(PASSWORD, safe="")
UNKNOWN_ADA = 'ada@example.org: hard bounce 5.1.1 (unknown user: "ada"): suspended; '
LATER: dict[int, list[dict[str, object]]] = {}  # every paper, for each `three` installation
ENABLE = "`digest subscribers enable {0}` sends to it again"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot(password=PASSWORD) as server:
        yield server


@pytest.fixture
def three(digest: Digest) -> Digest:
    """Ada, Grace and Alan, each sent one digest of the first half of the papers."""
    LATER[id(digest)] = digest.arxiv.papers
    digest.arxiv.papers = digest.arxiv.papers[len(digest.arxiv.papers) // 2 :]  # older half
    digest.write_subscribers([ADA_ROW, GRACE_ROW, ALAN_ROW])
    sent = digest.run("send")
    assert sent.returncode == 0, sent.stderr
    for address in (ADA, GRACE, ALAN):
        assert len(messages_to(digest.smtp, address)) == 1
    return digest


def message_id(digest: Digest, address: str) -> str:
    rows = digest.query("SELECT message_id FROM emails WHERE subscriber = ?", [address])
    assert len(rows) == 1
    return str(rows[0][0])


def fixture(name: str, digest: Digest | None = None, **placeholders: str) -> bytes:
    """A fixture with PLACEHOLDER-<KEY> replaced by the Message-ID of that subscriber's email."""
    data = (FIXTURES / name).read_bytes()
    for key, address in placeholders.items():
        assert digest is not None
        placeholder = f"<PLACEHOLDER-{key.upper()}@digest.test>".encode()
        assert placeholder in data
        data = data.replace(placeholder, message_id(digest, address).encode())
    return data


def test_bounces_and_a_complaint_over_imaps_suspend_count_and_the_next_send_skips(
    three: Digest, dovecot: Dovecot
) -> None:
    digest = three
    dovecot.append(
        fixture("postfix-hard.eml", digest, hard=ADA),
        fixture("postfix-soft.eml", digest, soft=GRACE),
        fixture("arf-complaint.eml", digest, complaint=ALAN),
        fixture("postfix-unattributable.eml"),
    )
    digest.extra_env.update(
        DIGEST_BOUNCE_MAILBOX=dovecot.url(secure=True), SSL_CERT_FILE=str(dovecot.cert)
    )
    shown = f"imaps://bounces@example.org@127.0.0.1:{dovecot.ssl_port}/INBOX"

    result = digest.run("bounces")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Read 4 new messages from {shown}: 1 hard bounce, 1 soft bounce, 1 complaint, "
        "1 not attributed, 0 other messages.",
        UNKNOWN_ADA + ENABLE.format(ADA),
        "grace@example.org: soft bounce 4.4.1 (connect to 127.0.0.1[127.0.0.1]:9: Connection "
        "refused): counted, 1 soft bounce so far",
        "alan@example.org: complaint (abuse, reported by ExampleFBL/2.1): suspended; "
        + ENABLE.format(ALAN),
    ]
    assert result.stderr.splitlines() == [
        "Warning: not attributed: a hard bounce for stranger@example.org names no email of ours "
        "(no Message-ID from the outbox, no VERP return path); nothing suspended (From: Mail "
        "Delivery System <MAILER-DAEMON@example.org>, Subject: Undelivered Mail Returned to "
        "Sender)"
    ]
    for secret in (PASSWORD, "s3cret", "p%40ss"):
        assert secret not in result.stdout + result.stderr
    # every message is marked processed on the server
    assert all("$DigestProcessed" in flags and "\\Seen" in flags for flags in dovecot.flags())
    assert len(dovecot.flags()) == 4

    # Run twice: nothing is read or counted again.
    again = digest.run("bounces")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == (
        f"Read 0 new messages from {shown}: 0 hard bounces, 0 soft bounces, 0 complaints, "
        "0 not attributed, 0 other messages.\n"
    )

    status = digest.run("status")
    assert status.returncode == 0, status.stderr
    text = status.stdout
    assert re.search(
        r"^  ada@example\.org: since .*: hard bounce 5\.1\.1: unknown user: \"ada\" \(read "
        r"\d{4}-\d\d-\d\d from the bounce mailbox\); `digest subscribers enable ada@example\.org`",
        text,
        re.M,
    )
    assert re.search(
        r"^  alan@example\.org: since .*: complaint \(abuse, reported by Exam", text, re.M
    )
    assert re.search(rf"^Bounces \(last read .*, {re.escape(shown)}\):$", text, re.M)
    assert "  1 hard, 1 soft, 1 complaints, 1 not attributed" in text.splitlines()
    assert "  Soft bounces per address: grace@example.org 1" in text.splitlines()
    assert re.search(
        r"not attributed \(stranger@example\.org\): hard 5\.1\.1: .*\[not attributed\]", text
    )
    assert PASSWORD not in text
    found = json.loads(digest.run("status", "--json").stdout)["bounces"]
    assert found["counts"] == {
        "hard": 1,
        "soft": 1,
        "complaint": 1,
        "other": 0,
        "not_attributed": 1,
    }
    assert found["soft_by_address"] == {GRACE: 1}
    assert found["last_check"]["status"] == "ok" and found["last_check"]["messages"] == 0

    # The next send skips the suspended addresses and still sends to Grace.
    digest.arxiv.papers = LATER[id(digest)]
    expected = owed(digest.arxiv.papers)
    for address in (ADA, GRACE, ALAN):
        assert expected[address] - digest.delivered(address), f"{address} has nothing new"
    sent = digest.run("send")
    assert sent.returncode == 0, sent.stderr
    assert re.search(
        r"^ada@example\.org: suspended since .*hard bounce 5\.1\.1.*nothing sent", sent.stdout, re.M
    )
    assert re.search(
        r"^alan@example\.org: suspended since .*complaint.*nothing sent", sent.stdout, re.M
    )
    assert len(messages_to(digest.smtp, GRACE)) == 2
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, ALAN)) == 1

    # Enabled again, Ada gets what she is owed, the papers held back included.
    enabled = digest.run("subscribers", "enable", ADA)
    assert enabled.returncode == 0 and "is enabled again" in enabled.stdout
    assert digest.run("send").returncode == 0
    assert len(messages_to(digest.smtp, ADA)) == 2
    assert digest.delivered(ADA) == expected[ADA]


def test_a_real_postfix_bounce_of_a_real_digest_read_over_imap_suspends_the_address(
    digest: Digest, dovecot: Dovecot
) -> None:
    """The whole way: `digest send` hands both digests to Postfix, which delivers Grace's and
    bounces Ada's (no such user) with a DSN to the envelope sender, delivered into Dovecot's
    Maildir; `digest bounces` reads it over IMAP and suspends Ada."""
    grace_box = dovecot.root / "grace"  # a folder Postfix (as nobody) can reach
    with Postfix({"digest": dovecot.maildir, "grace": grace_box}) as postfix:
        digest.extra_env.update(
            DIGEST_SMTP_HOST="127.0.0.1",
            DIGEST_SMTP_PORT=str(postfix.port),
            DIGEST_BOUNCE_MAILBOX=dovecot.url(),
        )
        sent = digest.run("send")
        assert sent.returncode == 0, sent.stderr
        assert "2 emails sent, 0 failed" in sent.stdout  # Postfix accepted both
        deadline = time.monotonic() + 60
        while not list((dovecot.maildir / "new").iterdir()) or not list(
            (grace_box / "new").iterdir()
        ):
            assert time.monotonic() < deadline, postfix.log()
            time.sleep(0.1)
    (delivered,) = (grace_box / "new").iterdir()
    assert message_id(digest, GRACE).encode() in delivered.read_bytes()

    result = digest.run("bounces")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == [UNKNOWN_ADA + ENABLE.format(ADA)]
    assert digest.query("SELECT message_id, attributed_by FROM bounces") == [
        (message_id(digest, ADA), "Message-ID")
    ]
    text = digest.run("status").stdout
    assert re.search(
        r"^  ada@example\.org: since .*: hard bounce 5\.1\.1: unknown user", text, re.M
    )
    assert "grace@example.org: since" not in text


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    box = tmp_path / "bounces"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    return box


def deliver(box: Path, name: str, data: bytes) -> Path:
    path = box / "new" / name
    path.write_bytes(data)
    return path


def test_in_a_maildir_a_verp_bounce_and_a_non_standard_one_are_attributed(
    three: Digest, maildir: Path
) -> None:
    digest = three
    # Postfix gave this DSN's original a Message-ID of its own: only the VERP address names Alan.
    deliver(maildir, "1764579277.V801I1.mx", fixture("postfix-verp.eml"))
    # qmail's plain-text notice: the original's Message-ID is only quoted in the text.
    deliver(maildir, "1764579278.V801I3.mx", fixture("qmail-hard.eml", digest, qmail=ADA))
    processed = deliver(maildir, "1764579200.V801I2.mx", fixture("postfix-unattributable.eml"))
    processed.rename(maildir / "cur" / f"{processed.name}:2,S")  # read before: left alone
    digest.extra_env.update(
        DIGEST_BOUNCE_MAILBOX=str(maildir), DIGEST_RETURN_PATH="bounces@example.org"
    )

    result = digest.run("bounces")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"Read 2 new messages from {maildir}: 2 hard bounces, 0 soft bounces, 0 complaints, "
        "0 not attributed, 0 other messages.",
        'alan@example.org: hard bounce 5.1.1 (unknown user: "alan"): suspended; '
        + ENABLE.format(ALAN),
        "ada@example.org: hard bounce 5.1.1 (non-standard report: failure notice): suspended; "
        + ENABLE.format(ADA),
    ]
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == [
        "1764579200.V801I2.mx:2,S",
        "1764579277.V801I1.mx:2,S",
        "1764579278.V801I3.mx:2,S",
    ]
    assert list((maildir / "new").iterdir()) == []
    again = digest.run("bounces")
    assert again.stdout.startswith(f"Read 0 new messages from {maildir}: ")
    rows = digest.query("SELECT subscriber, kind, attributed_by, action FROM bounces ORDER BY 1")
    assert rows == [(ADA, "hard", "Message-ID", "suspended"), (ALAN, "hard", "VERP", "suspended")]


def test_without_a_return_path_setting_a_verp_only_bounce_suspends_no_one(
    three: Digest, maildir: Path
) -> None:
    digest = three
    deliver(maildir, "1764579277.V801I1.mx", fixture("postfix-verp.eml"))
    digest.extra_env.update(DIGEST_BOUNCE_MAILBOX=str(maildir))

    result = digest.run("bounces")

    assert result.returncode == 0
    assert "1 not attributed" in result.stdout
    assert result.stderr.startswith("Warning: not attributed: a hard bounce for alan@example.org")
    assert digest.query("SELECT count(*) FROM mailboxes WHERE suspended_since IS NOT NULL") == [
        (0,)
    ]
    assert "suspended since" not in digest.run("send").stdout


def test_two_readers_at_once_count_each_soft_bounce_exactly_once(
    three: Digest, maildir: Path
) -> None:
    digest = three
    soft = fixture("postfix-soft.eml", digest, soft=GRACE)
    for n in range(30):  # thirty distinct delay warnings (each its own DSN Message-Id)
        data = soft.replace(b"@mx.example.org>", f".{n}@mx.example.org>".encode(), 1)
        deliver(maildir, f"17645792{n:02d}.V801I{n}.mx", data)
    digest.extra_env.update(DIGEST_BOUNCE_MAILBOX=str(maildir))

    readers = [
        subprocess.Popen(
            [sys.executable, "-m", "digest", "bounces"],
            env=digest.env(),
            cwd=digest.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [reader.communicate(timeout=120) for reader in readers]

    assert [reader.returncode for reader in readers] == [0, 0], outputs
    new = [int(re.match(r"Read (\d+) new", out).group(1)) for out, _err in outputs]  # type: ignore[union-attr]
    assert sum(new) == 30
    assert digest.query(
        "SELECT count(*) FROM bounces WHERE subscriber = ? AND kind = 'soft'", [GRACE]
    ) == [(30,)]
    assert len(list((maildir / "cur").iterdir())) == 30
    assert json.loads(digest.run("status", "--json").stdout)["bounces"]["soft_by_address"] == {
        GRACE: 30
    }
    assert "suspended" not in digest.run("send").stdout  # soft bounces are counted, not acted on


def test_the_daemon_reads_bounces_before_sending_and_a_failing_mailbox_never_blocks_the_send(
    digest: Digest, maildir: Path, tmp_path: Path
) -> None:
    from test_daemon import Daemon, zone_away_from_midnight

    zone, local = zone_away_from_midnight(timedelta(0))
    send_at = (local - timedelta(hours=1)).strftime("%H:%M")
    deliver(maildir, "1764579200.V801I2.mx", fixture("postfix-unattributable.eml"))
    digest.extra_env.update(
        DIGEST_SEND_AT=send_at, DIGEST_TIMEZONE=zone, DIGEST_BOUNCE_MAILBOX=str(maildir)
    )
    daemon = Daemon(digest, {})
    try:
        read = daemon.wait_for(r"Read 1 new message from .*, 1 not attributed")
        daemon.wait_for(r"not attributed: a hard bounce for stranger@example\.org")
        daemon.wait_for(r"run \d+ ok: .* 2 emails sent, 0 failed")
        first_read = next(i for i, line in enumerate(daemon.lines) if read.re.search(line))
        first_send = next(i for i, line in enumerate(daemon.lines) if "emails sent" in line)
        assert first_read < first_send
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert [p.name for p in (maildir / "cur").iterdir()] == ["1764579200.V801I2.mx:2,S"]

    # An IMAP server that is not there: logged, and the day's emails go out all the same.
    papers_db = digest.db_path
    papers_db.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{papers_db}{extra}").unlink(missing_ok=True)
    digest.smtp.messages.clear()
    digest.extra_env["DIGEST_BOUNCE_MAILBOX"] = f"imap://bounces:{ENCODED}@127.0.0.1:{free_port()}/"
    daemon = Daemon(digest, {})
    try:
        daemon.wait_for(
            r"ERROR digest\.bounces: reading bounces failed \(sending anyway\): cannot reach the "
            r"IMAP server at 127\.0\.0\.1:\d+"
        )
        daemon.wait_for(r"run \d+ ok: .* 2 emails sent, 0 failed")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert PASSWORD not in daemon.log and ENCODED not in daemon.log
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, GRACE)) == 1
