"""No SpamAssassin rule caused by our messages adds points: a real `digest send` (the CLI in a
subprocess, the arXiv stand-in serving the fixture's papers plus hostile ones, the loopback SMTP
server) with one-click unsubscribe configured and without it, and every email that arrived
scored by Debian's `spamassassin -L -t` (tests/spam.py) as delivered straight, and as it
arrives through a relay that has no reverse DNS (where SpamAssassin is stricter about hidden
or tiny text: NORDNS_LOW_CONTRAST, HTML_FONT_TINY_NORDNS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import ADA, GRACE, Digest
from spam import RELAY_WITHOUT_RDNS, scores, through_relay
from standins import ArxivStandin, SmtpStandin, paper_from_fixture

# Rules about how the message reached SpamAssassin, not about what it says; they fire the same
# for any message in these set-ups, so an operator's mail path decides them, not our emails:
SETUP_RULES = {
    "NO_RECEIVED",  # scored as our SMTP server received it: no Received line yet (-0.0)
    "NO_RELAYS",  # ... so no relay either (-0.0)
    "RDNS_NONE",  # the relay has no reverse DNS (the second set-up): fix it in DNS
}
# And one rule about the message that every HTML email fires: SpamAssassin's informational
# 0.001 for "HTML included in message" (a multipart/alternative digest must have HTML).
INFORMATIONAL = {"HTML_MESSAGE"}
HOSTILE_TITLE = 'Reward Models <script>alert("x")</script> & $O(n^2)$\r\nBcc: victim@evil'


@pytest.fixture
def installations(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin, papers_fixture: list):
    """Two installations sending to the same SMTP server: one-click configured and not."""
    hostile = paper_from_fixture(papers_fixture[0], datetime.now(UTC) - timedelta(hours=1))
    hostile.update(
        id="2511.99999v1",
        title=HOSTILE_TITLE,
        abstract="We train a reward model. <img src=x onerror=alert(1)> \\emph{free} $$$ "
        "CLICK HERE <a href='http://evil.example'>win</a> " + "w" * 300,
        comment="<b>10 pages</b>\nX-Injected: yes",
        authors=["Eve <eve@evil>", "Mallory\r\nBcc: x@evil"],
    )
    arxiv.papers = [hostile, *arxiv.papers]
    rows = [
        {"email": ADA, "name": "Ada", "keywords": "reward model"},
        {"email": GRACE, "name": "Grace", "keywords": "graph neural network; reward model; agents"},
    ]
    plain = Digest(tmp_path / "plain", arxiv, smtp, {})
    one_click = Digest(
        tmp_path / "one-click",
        arxiv,
        smtp,
        {
            "DIGEST_PUBLIC_URL": "https://digest.example.org",
            "DIGEST_SECRET": "spam-test-secret-0123456789abcdef",
        },
    )
    for installation in (plain, one_click):
        installation.home.mkdir()
        installation.write_subscribers(rows)
    return plain, one_click


def test_no_rule_caused_by_the_message_adds_points(installations: tuple[Digest, Digest]) -> None:
    plain, one_click = installations
    for installation in (plain, one_click):
        result = installation.run("send")
        assert result.returncode == 0, result.stderr
    smtp = plain.smtp
    received = [m.raw for m in smtp.messages]
    assert len(received) == 4
    assert sum(b"List-Unsubscribe-Post" in m for m in received) == 2  # one-click on two
    assert all(b"2511.99999" in m for m in received)  # the hostile paper is in every email

    checked = [*received, *(through_relay(m, RELAY_WITHOUT_RDNS) for m in received)]
    results = scores(checked)

    problems = []
    for n, result in enumerate(results):
        caused = {
            rule: points
            for rule, points in result.rules.items()
            if points > 0 and rule not in SETUP_RULES | INFORMATIONAL
        }
        if caused:
            problems.append(f"email {n}: {caused} (total {result.total})")
    assert not problems, "rules our messages cause:\n" + "\n".join(problems)
    for result in results:
        assert sum(p for r, p in result.rules.items() if r not in SETUP_RULES) <= 0.001
    # The set-ups really were what they claim: straight, then through a relay without rDNS.
    assert all("NO_RECEIVED" in r.rules for r in results[:4])
    assert all("RDNS_NONE" in r.rules for r in results[4:])
