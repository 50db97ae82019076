"""`digest status` without a daemon: runs, the mail server's replies, what is owed, JSON, and the
health check's verdict, read from a real database after real `digest send` runs."""

from __future__ import annotations

import json
import re

import pytest
from helpers import ADA, GRACE, Digest


@pytest.fixture
def digest(digest: Digest) -> Digest:
    """The shared installation (Ada and Grace, conftest.py), its send time in Kathmandu."""
    digest.extra_env["DIGEST_TIMEZONE"] = "Asia/Kathmandu"
    return digest


def test_without_a_database_it_says_how_to_get_one_and_creates_nothing(digest: Digest) -> None:
    result = digest.run("status")
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {digest.db_path}: no database yet; `digest run` or `digest send` creates it "
        "(or point DIGEST_DB at yours)\n"
    )
    assert not digest.db_path.exists()


def test_it_shows_the_run_the_servers_reply_and_what_is_owed(digest: Digest) -> None:
    digest.smtp.reject_rcpt[GRACE] = (550, "5.1.1 No such user")
    assert digest.run("send").returncode == 1
    owed = len(
        digest.query(
            "SELECT paper.value FROM emails, json_each(emails.papers) AS paper "
            "WHERE subscriber = ?",
            [GRACE],
        )
    )

    result = digest.run("status")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(
        r"^digest status at \S+ \S+ \+0545 \(send time 07:00 Asia/Kathmandu\)$", out, re.M
    )
    assert "Daemon: never started on this database" in out
    assert re.search(
        r"^  #1 send failed, started \S+ \S+ \+0545: \d+ papers fetched in 1 arXiv "
        r"requests, 1 emails sent, 1 failed$",
        out,
        re.M,
    )
    reply = f"{GRACE}: the mail server refused it: 550 5.1.1 No such user"
    assert f"  run #1 {reply}" in out.split("Failed emails (the mail server's reply):")[1]
    assert re.search(
        rf"^  {re.escape(GRACE)}: {owed} papers, failed since .*: the mail server "
        r"refused it: 550 5.1.1 No such user$",
        out,
        re.M,
    )
    assert ADA not in out.split("Owed")[1]

    found = json.loads(digest.run("status", "--json").stdout)
    [run] = found["runs"]
    assert (run["status"], run["emails_sent"], run["emails_failed"]) == ("failed", 1, 1)
    assert found["failed_emails"] == [
        {
            "run_id": 1,
            "subscriber": GRACE,
            "created_at": found["failed_emails"][0]["created_at"],
            "error": "the mail server refused it: 550 5.1.1 No such user",
        }
    ]
    assert [(o["subscriber"], o["status"], o["papers"]) for o in found["owed"]] == [
        (GRACE, "failed", owed)
    ]
    assert found["next_run"]["reason"] in {"retry", "gave-up"}  # gave-up: near midnight
    assert found["healthy"] is False

    # Once Grace's address works again, nothing is owed.
    del digest.smtp.reject_rcpt[GRACE]
    assert digest.run("send").returncode == 0
    found = json.loads(digest.run("status", "--json").stdout)
    assert found["owed"] == [] and found["runs"][0]["status"] == "ok"
    assert found["next_run"]["reason"] == "done-today"


def test_check_fails_when_no_daemon_ever_ran(digest: Digest) -> None:
    assert digest.run("send").returncode == 0
    result = digest.run("status", "--check")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "Error: the daemon (`digest run`) has never run on this database\n"


def test_it_lists_suspended_subscribers(digest: Digest) -> None:
    digest.extra_env["DIGEST_SUSPEND_AFTER"] = "1"
    digest.smtp.reject_rcpt[GRACE] = (550, "5.1.1 No such user")
    assert digest.run("send").returncode == 1

    result = digest.run("status")

    assert result.returncode == 0, result.stderr
    suspended = result.stdout.split("Suspended (nothing is sent to them):\n")[1]
    assert re.match(
        rf"  {re.escape(GRACE)}: since \S+ \S+ \+0545: .*550 5\.1\.1 No such user.*; "
        rf"`digest subscribers enable {re.escape(GRACE)}` sends to it again$",
        suspended,
    ), suspended
    found = json.loads(digest.run("status", "--json").stdout)
    [entry] = found["suspended"]
    assert entry["subscriber"] == GRACE and "550 5.1.1 No such user" in entry["reason"]
