"""What happens when arXiv or the mail server misbehave: `digest send` in a subprocess against
the loopback stand-ins, faults injected there, and what arrived in the mailboxes checked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from helpers import (
    ADA,
    ADA_ROW,
    ALAN,
    ALAN_ROW,
    GRACE,
    GRACE_ROW,
    Digest,
    abs_ids,
    messages_to,
    owed,
    parts,
)
from standins import Fault, SmtpStandin

from digest.announce import new_papers_expected


@pytest.fixture(params=[True, False], ids=["pipelining", "plain"])
def smtp(request: pytest.FixtureRequest) -> Iterator[SmtpStandin]:
    """The mail server offering PIPELINING (digest's envelope in one write) or not (smtplib's
    own path): every fault is met the same way on both."""
    with SmtpStandin(pipelining=request.param) as standin:
        yield standin


@pytest.fixture
def digest(digest: Digest) -> Digest:
    """The shared installation (Ada and Grace, conftest.py) and a third subscriber, Alan."""
    digest.write_subscribers([ADA_ROW, GRACE_ROW, ALAN_ROW])
    return digest


def received(digest: Digest, address: str) -> list[set[str]]:
    """The papers of each email `address` received, in order."""
    return [abs_ids(parts(m)[1]) for m in messages_to(digest.smtp, address)]


def assert_each_paper_once(digest: Digest, expected: dict[str, set[str]]) -> None:
    for address, papers in expected.items():
        emails = received(digest, address)
        assert set().union(*emails) == papers, address
        assert sum(len(e) for e in emails) == len(papers), f"{address} got a paper twice"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# --- arXiv ------------------------------------------------------------------------------------


def test_arxiv_busy_twice_then_fine_delivers_everything(digest: Digest) -> None:
    digest.arxiv.faults += [Fault.http(503), Fault.http(503)]

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("arXiv answered HTTP 503") == 2
    assert "(retry 2 of 3)" in result.stderr
    assert len(digest.arxiv.requests) == 3
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_arxiv_429_is_asked_again_after_its_retry_after(digest: Digest) -> None:
    digest.extra_env["DIGEST_RETRY_BACKOFF"] = "0.01"
    digest.arxiv.faults.append(Fault.http(429, retry_after=1))

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "arXiv answered HTTP 429" in result.stderr
    assert "asking again in 1 s as asked by Retry-After (retry 1 of 3)" in result.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_a_retry_resumes_paging_where_it_failed(digest: Digest) -> None:
    digest.extra_env["DIGEST_ARXIV_PAGE_SIZE"] = "20"
    digest.arxiv.fault_on_page(40, Fault.empty_feed(total_results=118))

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "empty page at result 40" in result.stderr
    starts = [r.params["start"] for r in digest.arxiv.requests]
    assert starts[:4] == ["0", "20", "40", "40"]  # not from the start again
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ([Fault.http(503)] * 2, "arXiv answered HTTP 503 to http://127.0.0.1:"),
        ([Fault.html_page()] * 2, "arXiv answered something that is not an Atom feed"),
        ([Fault.hang(30)] * 2, "arXiv did not answer within 1 s"),
        ([Fault.malformed()] * 2, "arXiv answered something that is not an Atom feed"),
    ],
    ids=["503", "html", "hang", "malformed"],
)
def test_a_fetch_that_keeps_failing_sends_and_records_nothing_and_the_next_run_catches_up(
    digest: Digest, faults: list[Fault], says: str
) -> None:
    digest.extra_env.update(DIGEST_ARXIV_RETRIES="1", DIGEST_ARXIV_TIMEOUT="1")
    digest.arxiv.faults += faults

    failed = digest.run("send")

    assert failed.returncode == 1
    [line] = error_lines(failed.stderr)
    assert line.startswith(f"Error: {says}") and line.endswith("(gave up after 2 tries)")
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM papers") == [(0,)]
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]
    assert digest.query("SELECT status, message FROM runs") == [("failed", line[7:])]

    digest.extra_env["DIGEST_ARXIV_TIMEOUT"] = "5"
    again = digest.run("send")
    assert again.returncode == 0, again.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_an_empty_page_in_the_middle_fails_the_run_without_a_partial_digest(
    digest: Digest,
) -> None:
    digest.extra_env.update(DIGEST_ARXIV_PAGE_SIZE="20", DIGEST_ARXIV_RETRIES="1")
    for _ in range(2):
        digest.arxiv.fault_on_page(60, Fault.empty_feed(total_results=118))

    failed = digest.run("send")

    assert failed.returncode == 1
    assert error_lines(failed.stderr) == [
        "Error: arXiv answered an empty page at result 60 of 118; that is an arXiv glitch, "
        "not 'no new papers' (gave up after 2 tries)"
    ]
    assert digest.smtp.messages == []  # 60 papers were in hand: none of them went out
    assert digest.query("SELECT count(*) FROM papers") == [(0,)]

    assert digest.run("send").returncode == 0
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


# --- the mail server --------------------------------------------------------------------------


def test_a_4xx_is_tried_again_within_the_run(digest: Digest) -> None:
    digest.smtp.fail_message(1, "451 4.3.0 Mailbox busy, try later")
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: a known order

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "451 4.3.0 Mailbox busy, try later; trying again later in this run" in result.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))
    rows = digest.query("SELECT subscriber, status, attempts FROM emails ORDER BY created_at")
    assert sorted(rows) == [(ADA, "sent", 1), (ALAN, "sent", 1), (GRACE, "sent", 2)]


def test_a_mailbox_that_keeps_answering_4xx_gets_everything_owed_in_its_next_email(
    digest: Digest,
) -> None:
    now = datetime.now(UTC)
    everything = digest.arxiv.papers
    day_one = [p for p in everything if p["published"] < now - timedelta(hours=40)]
    digest.arxiv.papers = day_one
    digest.smtp.reject_rcpt[GRACE] = (450, "4.2.1 Mailbox full")

    first = digest.run("send")

    assert first.returncode == 1
    assert error_lines(first.stderr) == [
        f"Error: {GRACE}: the mail server deferred it: 450 4.2.1 Mailbox full (tried 4 "
        f"times); its papers stay owed and go in the next email"
    ]
    assert messages_to(digest.smtp, GRACE) == []
    assert digest.delivered(GRACE) == set()
    assert digest.query("SELECT status, attempts FROM emails WHERE subscriber = ?", [GRACE]) == [
        ("deferred", 4)
    ]

    # The next day the mailbox works again: one email with both days' papers, nothing twice.
    del digest.smtp.reject_rcpt[GRACE]
    digest.arxiv.papers = everything
    second = digest.run("send")

    assert second.returncode == 0, second.stderr
    [grace_email] = received(digest, GRACE)
    assert grace_email == owed(everything)[GRACE]
    assert owed(day_one)[GRACE] < grace_email
    assert_each_paper_once(digest, owed(everything))


def test_a_5xx_is_recorded_and_repeated_ones_suspend_the_address_until_enabled(
    digest: Digest,
) -> None:
    digest.extra_env["DIGEST_SUSPEND_AFTER"] = "2"
    digest.smtp.reject_rcpt[GRACE] = (550, "5.1.1 No such user")

    first = digest.run("send")

    assert first.returncode == 1
    assert error_lines(first.stderr) == [
        f"Error: {GRACE}: the mail server refused it: 550 5.1.1 No such user"
    ]
    assert digest.query("SELECT status, error FROM emails WHERE subscriber = ?", [GRACE]) == [
        ("failed", "the mail server refused it: 550 5.1.1 No such user")
    ]

    second = digest.run("send")  # the second permanent failure in a row suspends the address
    assert second.returncode == 1
    assert (
        f"Error: {GRACE}: the mail server refused it: 550 5.1.1 No such user; after 2 permanent "
        f"failures in a row the address is suspended: `digest subscribers enable {GRACE}` sends "
        f"to it again"
    ) in second.stderr
    [(since, reason)] = digest.query(
        "SELECT suspended_since, suspended_reason FROM mailboxes WHERE subscriber = ?", [GRACE]
    )
    assert since and "550 5.1.1 No such user" in reason

    # Suspended: not tried, not an error, said on every run; the others are unaffected.
    third = digest.run("send")
    assert third.returncode == 0, third.stderr
    assert f"{GRACE}: suspended since {since}" in third.stdout
    assert digest.query("SELECT count(*) FROM emails WHERE subscriber = ?", [GRACE]) == [(2,)]

    enabled = digest.run("subscribers", "enable", GRACE.upper())
    assert enabled.returncode == 0, enabled.stderr
    assert f"{GRACE.upper()} is enabled again" in enabled.stdout
    again = digest.run("subscribers", "enable", GRACE)
    assert again.returncode == 0 and "is not suspended; nothing changed" in again.stdout

    del digest.smtp.reject_rcpt[GRACE]
    fourth = digest.run("send")
    assert fourth.returncode == 0, fourth.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


@pytest.mark.parametrize(
    "fault",
    [
        lambda smtp: smtp.fail_message(1, "421 4.7.0 Too many messages, closing connection"),
        lambda smtp: smtp.drop_after(1),
    ],
    ids=["421", "dropped"],
)
def test_a_lost_connection_in_the_middle_of_a_batch_reconnects_and_goes_on(
    digest: Digest, fault: object
) -> None:
    fault(digest.smtp)  # type: ignore[operator]
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: a known order

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "closed the connection" in result.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))
    assert len(digest.smtp.messages) == 3


def test_a_refused_sender_stops_the_run_with_one_line_and_marks_nothing(digest: Digest) -> None:
    """MAIL refused (here: the server wants a login digest was not given): the envelope's other
    replies (pipelined or not) change nothing; the run stops, everything stays owed."""
    digest.smtp.auth = ("digest", "secret")  # no DIGEST_SMTP_USER: MAIL gets a 530

    result = digest.run("send")

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "Error: the mail server refused the sender digest@example.org (530 5.7.0 "
        "Authentication required); check DIGEST_FROM"
    ]
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]

    digest.smtp.auth = None
    again = digest.run("send")
    assert again.returncode == 0, again.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_a_refused_login_stops_the_run_with_one_line_and_marks_nothing(digest: Digest) -> None:
    digest.smtp.auth = ("digest", "right")
    digest.extra_env.update(DIGEST_SMTP_USER="digest", DIGEST_SMTP_PASSWORD="wrong")

    refused = digest.run("send")

    assert refused.returncode == 1
    [line] = error_lines(refused.stderr)
    assert "refused the login for 'digest'" in line
    assert digest.arxiv.requests == []  # stopped before asking arXiv
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]
    assert digest.query("SELECT status, message FROM runs") == [("failed", line[7:])]

    digest.extra_env["DIGEST_SMTP_PASSWORD"] = "right"
    assert digest.run("send").returncode == 0
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_nothing_listening_stops_the_run_with_one_line_and_marks_nothing(digest: Digest) -> None:
    digest.smtp.stop()

    result = digest.run("send")

    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: cannot reach the mail server at 127.0.0.1:")
    assert digest.arxiv.requests == []
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]

    digest.smtp.start()
    assert digest.run("send").returncode == 0
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_a_rate_limit_still_sends_everything(digest: Digest) -> None:
    digest.extra_env["DIGEST_SMTP_RATE"] = "20"

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_an_empty_fetch_is_a_warning_only_after_an_announcement(digest: Digest) -> None:
    digest.arxiv.papers = []  # arXiv answers well-formed pages with no results
    expected = new_papers_expected(datetime.now(UTC), None)  # see test_announce_days.py

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert ("Warning: arXiv returned no new papers" in result.stderr) == expected
    assert digest.smtp.messages == []
    [(warning,)] = digest.query("SELECT warning FROM runs")
    assert (warning is not None) == expected


def test_papers_of_a_refused_email_stay_owed_past_the_look_back_window(digest: Digest) -> None:
    digest.smtp.reject_rcpt[GRACE] = (450, "4.2.1 Mailbox full")
    assert digest.run("send").returncode == 1  # deferred through every retry
    owed_to_grace = owed(digest.arxiv.papers)[GRACE]

    # Days later: those papers are older than the window, only the last day's count as new.
    del digest.smtp.reject_rcpt[GRACE]
    digest.extra_env["DIGEST_LOOKBACK_DAYS"] = "1"
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    [grace_email] = received(digest, GRACE)
    assert grace_email == owed_to_grace
    assert len(messages_to(digest.smtp, ADA)) == 1  # Ada had hers: nothing again


def test_an_email_cut_off_on_every_try_stays_pending_and_goes_out_unchanged(
    digest: Digest,
) -> None:
    digest.smtp.reject_rcpt[GRACE] = (421, "4.7.0 Too busy, closing")

    first = digest.run("send")

    assert first.returncode == 1
    assert error_lines(first.stderr) == [
        f"Error: {GRACE}: the mail server closed the connection (421 4.7.0 Too busy, closing) "
        f"(tried 4 times); the email stays pending and goes out again as it is with the next run"
    ]
    [(message_id, attempts)] = digest.query(
        "SELECT message_id, attempts FROM emails WHERE subscriber = ? AND status = 'pending'",
        [GRACE],
    )
    assert attempts == 4
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, ALAN)) == 1

    del digest.smtp.reject_rcpt[GRACE]
    second = digest.run("send")

    assert second.returncode == 0, second.stderr
    assert f"{GRACE}: " in second.stdout and "left pending by an earlier run" in second.stdout
    [to_grace] = messages_to(digest.smtp, GRACE)
    assert to_grace["Message-ID"] == message_id
    assert_each_paper_once(digest, owed(digest.arxiv.papers))


def test_arxiv_asking_for_a_longer_wait_than_a_run_waits_fails_the_run(digest: Digest) -> None:
    digest.arxiv.faults.append(Fault.http(503, retry_after=3600))

    result = digest.run("send")

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "Error: arXiv answered HTTP 503 to http://127.0.0.1:"
        f"{digest.arxiv.port}; it asks to wait 3600 s, longer than a run waits (300 s)"
    ]
    assert digest.smtp.messages == []


def test_an_arxiv_answer_not_worth_retrying_fails_at_once(digest: Digest) -> None:
    digest.arxiv.faults.append(Fault.http(403))

    result = digest.run("send")

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"Error: arXiv answered HTTP 403 to http://127.0.0.1:{digest.arxiv.port}"
    ]
    assert len(digest.arxiv.requests) == 1
