"""Sign-up on a real `digest serve` with DIGEST_SIGNUP=open: the confirmation email arrives at a
real aiosmtpd server, its link's one button adds the row, the next `digest send` includes
them; the abuse limits hold and nothing tells a stranger who is subscribed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import Digest, messages_to
from served import Served, http
from standins import ArxivStandin, SmtpStandin, free_port

SECRET = "test-secret-0123456789abcdef"
ADA = "ada@example.org"
CSV = "email,name,keywords\nada@example.org,Ada,reward model\n"


def installation(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin, **env: str) -> Digest:
    port = free_port()
    digest = Digest(
        tmp_path,
        arxiv,
        smtp,
        {
            "DIGEST_SECRET": SECRET,
            "DIGEST_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DIGEST_SIGNUP": "open",
            "DIGEST_PORT_FOR_TEST": str(port),
            **env,
        },
    )
    digest.write_subscribers(CSV)
    return digest


@pytest.fixture
def served(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[Served]:
    digest = installation(tmp_path, arxiv, smtp)
    server = Served(digest, int(digest.extra_env["DIGEST_PORT_FOR_TEST"]))
    yield server
    server.stop()


def wait_for(smtp: SmtpStandin, address: str, count: int = 1) -> list[EmailMessage]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = messages_to(smtp, address)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no email to {address} arrived: {[m.rcpt_tos for m in smtp.messages]}")


def sign_up(served: Served, email: str, keywords: str = "reasoning", **more: str):
    return http(f"{served.url}/", {"email": email, "keywords": keywords, "website": "", **more})


def confirmation_link(message: EmailMessage) -> str:
    text = message.get_body(("plain",))
    assert text is not None
    [link] = re.findall(r"http://\S+/confirm/\S+", str(text.get_content()))
    return link


def test_sign_up_confirm_with_one_button_and_get_the_next_digest(served: Served) -> None:
    digest, smtp = served.digest, served.digest.smtp
    status, page, _ = http(f"{served.url}/")
    assert status == 200 and 'name="email"' in page and 'name="website"' in page

    status, page, _ = sign_up(
        served, "Alan@Example.org", "reasoning; chain of thought", frequency="daily"
    )
    assert status == 200 and "Check your inbox" in page
    [email] = wait_for(smtp, "Alan@example.org")
    assert email["Subject"] == "Confirm your arXiv digest subscription"
    link = confirmation_link(email)
    assert digest.csv_path.read_text(encoding="utf-8") == CSV  # nothing before confirming

    # Opening the link (what a link scanner does too) changes nothing; the button confirms.
    status, page, _ = http(link)
    assert status == 200 and "Alan@example.org" in page
    assert page.count("<button") == 1 and "Confirm my subscription" in page
    assert digest.csv_path.read_text(encoding="utf-8") == CSV
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    assert action is not None
    status, page, _ = http(f"{served.url}{action[1]}", {})
    assert status == 200 and "You are subscribed" in page
    assert digest.csv_path.read_text(encoding="utf-8") == (
        "email,name,keywords,frequency\n"
        "ada@example.org,Ada,reward model\n"
        "Alan@example.org,,reasoning; chain of thought,daily\n"
    )
    assert digest.run("subscribers", "check").returncode == 0
    # Confirming again is harmless; a tampered link is refused.
    assert http(f"{served.url}{action[1]}", {})[0] == 200
    assert digest.csv_path.read_text(encoding="utf-8").count("Alan@example.org") == 1
    assert http(link[:-3] + "abc")[0] == 400

    sent = digest.run("send")
    assert sent.returncode == 0, sent.stderr
    assert len(wait_for(smtp, "Alan@example.org", 2)) == 2  # the confirmation and a digest


def test_strangers_learn_nothing_and_floods_are_stopped(served: Served) -> None:
    smtp = served.digest.smtp
    new = sign_up(served, "new@example.org")
    known = sign_up(served, ADA)  # already subscribed: no email, the same answer
    again = sign_up(served, "new@example.org")  # within the hour: no second email
    trap = http(
        f"{served.url}/", {"email": "bot@example.org", "keywords": "x y", "website": "spam"}
    )
    answers = [(s, p.replace(e, "ADDRESS")) for (s, p, _), e in
               [(new, "new@example.org"), (known, ADA), (again, "new@example.org"),
                (trap, "bot@example.org")]]  # fmt: skip
    assert all(answer == answers[0] for answer in answers), "the answers differ"
    assert answers[0][0] == 200
    # A later sign-up's email arriving means the earlier ones were sent (one worker, in order).
    sign_up(served, "last@example.org")
    wait_for(smtp, "last@example.org")
    assert [m.rcpt_tos for m in smtp.messages] == [["new@example.org"], ["last@example.org"]]

    # Bad input is answered on the form, with what to change; nothing is sent.
    status, page, _ = sign_up(served, "not-an-address")
    assert status == 400 and "is not an email address" in page
    status, page, _ = sign_up(served, "x@example.org", categories="computer science")
    assert status == 400 and "is not an arXiv category" in page

    # Per client: 5 sign-ups an hour (4 counted above), then 429.
    assert sign_up(served, "fifth@example.org")[0] == 200
    status, page, _ = sign_up(served, "sixth@example.org")
    assert status == 429 and "Too many sign-ups" in page
    # A forwarded address is not believed unless DIGEST_TRUST_PROXY says so.
    spoofed = http(
        f"{served.url}/",
        {"email": "seventh@example.org", "keywords": "x y"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert spoofed[0] == 429
    wait_for(smtp, "fifth@example.org")
    assert not messages_to(smtp, "sixth@example.org") and not messages_to(smtp, ADA)


def test_behind_a_trusted_proxy_clients_are_told_apart(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    digest = installation(tmp_path, arxiv, smtp, DIGEST_TRUST_PROXY="127.0.0.1")
    server = Served(digest, int(digest.extra_env["DIGEST_PORT_FOR_TEST"]))
    try:
        for n in range(6):
            status, _, _ = http(
                f"{server.url}/",
                {"email": f"user{n}@example.org", "keywords": "x y"},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert status == (200 if n < 5 else 429)
        other = http(
            f"{server.url}/",
            {"email": "other@example.org", "keywords": "x y"},
            headers={"X-Forwarded-For": "198.51.100.8"},
        )
        assert other[0] == 200
    finally:
        assert server.stop() == 0


def test_sign_up_needs_a_public_url(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> None:
    digest = installation(tmp_path, arxiv, smtp)
    del digest.extra_env["DIGEST_PUBLIC_URL"]
    result = digest.run("serve", "--port", "0")
    assert (result.returncode, result.stderr) == (
        1,
        "Error: DIGEST_SIGNUP=open needs DIGEST_PUBLIC_URL (the address of digest serve that "
        "readers reach, e.g. https://example.org/digest): confirmation emails link to it\n",
    )


def test_a_reader_who_unsubscribed_can_sign_up_again(served: Served) -> None:
    digest, smtp = served.digest, served.digest.smtp
    from digest.tokens import make_token

    status, _, _ = http(
        f"{served.url}/unsubscribe/{make_token(SECRET, ADA)}", {"List-Unsubscribe": "One-Click"}
    )
    assert status == 200
    assert digest.query("SELECT subscriber FROM suppressions") == [(ADA,)]
    assert sign_up(served, ADA, "graph neural network")[0] == 200
    page = http(confirmation_link(wait_for(smtp, ADA)[0]))[1]
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    assert action is not None
    status, page, _ = http(f"{served.url}{action[1]}", {})
    assert status == 200 and "You are subscribed" in page
    # Confirming from her inbox lifts the unsubscribe; her row now has what she asked for.
    assert digest.query("SELECT subscriber FROM suppressions") == []
    assert "ada@example.org,Ada,graph neural network" in digest.csv_path.read_text("utf-8")
