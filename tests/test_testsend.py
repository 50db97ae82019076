"""`digest send --subscriber EMAIL --to ADDRESS`: one subscriber's digest of what they are owed
now, to any address, Subject marked as a test; nothing recorded, so their own next email still
carries every paper."""

from __future__ import annotations

from helpers import ADA, GRACE, REWARD_MODEL, Digest, abs_ids, matching, messages_to, parts

TESTER = "editor@example.net"


def test_a_test_send_goes_to_the_address_given_and_records_nothing(digest: Digest) -> None:
    result = digest.run("send", "--subscriber", ADA.upper(), "--to", TESTER)

    assert result.returncode == 0, result.stderr
    owed = matching(digest.arxiv.papers, REWARD_MODEL)
    assert f"test email for {ADA} ({len(owed)} papers" in result.stdout
    assert result.stdout.rstrip().endswith(f"sent to {TESTER}; nothing recorded")
    [message] = digest.smtp.messages  # only to the tester: not to Ada, nor Grace
    assert message.rcpt_tos == [TESTER]
    email = message.message
    assert email["To"] == TESTER
    assert email["Subject"].startswith("[test] arXiv digest ")
    text, html = parts(email)
    assert abs_ids(text) == abs_ids(html) == owed
    # Nothing recorded: no run, no email in the outbox, no delivery.
    assert digest.query("SELECT count(*) FROM runs") == [(0,)]
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]
    assert digest.delivered(ADA) == set()

    # Ada's own digest afterwards still carries every paper.
    assert digest.run("send").returncode == 0
    [own] = messages_to(digest.smtp, ADA)
    assert abs_ids(parts(own)[0]) == owed
    assert not own["Subject"].startswith("[test]")
    assert messages_to(digest.smtp, GRACE)


def test_a_test_send_for_someone_not_subscribed_or_refused_says_why(digest: Digest) -> None:
    unknown = digest.run("send", "--subscriber", "nobody@example.org", "--to", TESTER)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"Error: nobody@example.org is not a valid subscriber in {digest.csv_path.name}; "
        "`digest subscribers list` shows who is"
    )
    half = digest.run("send", "--subscriber", ADA)
    assert half.returncode == 2
    assert "a test send takes both --subscriber and --to, no --dry-run" in half.stderr

    digest.smtp.reject_rcpt[TESTER] = (550, "5.1.1 No such user")
    refused = digest.run("send", "--subscriber", ADA, "--to", TESTER)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        f"to {TESTER}: the mail server refused it: 550 5.1.1 No such user"
    )
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]
