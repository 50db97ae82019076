"""Clean messages: a real `digest send` (the CLI in a subprocess, the arXiv stand-in serving the
fixture's papers plus a hostile one, the loopback SMTP server), once with one-click unsubscribe
configured and once without, and what arrived checked as a receiving server would:

- Debian's `spamassassin -L -t` (tests/spam.py) scores every email as delivered straight and
  as it arrives through a relay without reverse DNS (where SpamAssassin is stricter about
  hidden or tiny text: NORDNS_LOW_CONTRAST, HTML_FONT_TINY_NORDNS): no rule caused by the
  message adds points;
- each URL is in the HTML and the text part equally often (rspamd's URI_COUNT_ODD), two per
  paper;
- From has a display name, the Message-ID does not contain the From address (rspamd's
  MID_CONTAINS_FROM), the text part's signature separator is "-- ".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from html import unescape

import pytest
from helpers import ADA, GRACE, Digest, parts
from spam import RELAY_WITHOUT_RDNS, scores, through_relay
from standins import (
    ArxivStandin,
    ReceivedMessage,
    SmtpStandin,
    load_papers,
    paper_from_fixture,
    recent,
)

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
HOSTILE_ID = "2511.99999"
BARE_FROM = "digest@example.org"  # the plain installation's DIGEST_FROM: no display name


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ReceivedMessage]]:
    """Every email of two real sends to Ada and Grace (hostile paper included): one
    installation without one-click (DIGEST_FROM a bare address), one with it."""
    papers = load_papers()
    hostile = paper_from_fixture(papers[0], datetime.now(UTC) - timedelta(hours=1))
    hostile.update(
        id=f"{HOSTILE_ID}v1",
        title='Reward Models <script>alert("x")</script> & $O(n^2)$\r\nBcc: victim@evil',
        abstract="We train a reward model. <img src=x onerror=alert(1)> \\emph{free} $$$ "
        "CLICK HERE <a href='http://evil.example'>win</a> " + "w" * 300,
        comment="<b>10 pages</b>\nX-Injected: yes",
        authors=["Eve <eve@evil>", "Mallory\r\nBcc: x@evil"],
    )
    rows = [
        {"email": ADA, "name": "Ada", "keywords": "reward model"},
        {"email": GRACE, "name": "Grace", "keywords": "graph neural network; reward model; agents"},
    ]
    home = tmp_path_factory.mktemp("spam")
    with ArxivStandin([hostile, *recent(papers)]) as arxiv, SmtpStandin() as smtp:
        plain = Digest(home / "plain", arxiv, smtp, {"DIGEST_FROM": BARE_FROM})
        one_click = Digest(
            home / "one-click",
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
            result = installation.run("send")
            assert result.returncode == 0, result.stderr
        messages = list(smtp.messages)
    assert len(messages) == 4
    assert sum(b"List-Unsubscribe-Post" in m.raw for m in messages) == 2  # one-click on two
    assert all(HOSTILE_ID.encode() in m.raw for m in messages)  # the hostile paper in each
    yield messages


def test_no_rule_caused_by_the_message_adds_points(received: list[ReceivedMessage]) -> None:
    raw = [m.raw for m in received]
    results = scores([*raw, *(through_relay(m, RELAY_WITHOUT_RDNS) for m in raw)])

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


_HREF = re.compile(r'href="([^"]+)"')
_ANCHOR = re.compile(r"<a\s.*?</a>", re.S)
_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"https?://[^\s<>()\"']+[^\s<>()\"'.,;:]")
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def links(html: str, text: str, sender: str) -> tuple[Counter[str], Counter[str]]:
    """The URLs a filter finds in each part, as counts: in the HTML the links' targets (a
    mailto: as its address) and URLs written in its text outside links; in the text part the
    URLs, and the sender's address (the HTML's mailto: link)."""
    in_html = Counter(
        re.sub(r"^mailto:([^?]+).*$", r"\1", unescape(href)) for href in _HREF.findall(html)
    )
    body = html[html.index("<body") :]
    in_html.update(_URL.findall(unescape(_TAG.sub(" ", _ANCHOR.sub(" ", body)))))
    in_text = Counter(_URL.findall(text))
    in_text.update(a for a in _ADDRESS.findall(_URL.sub(" ", text)) if a == sender)
    return in_html, in_text


def test_each_link_is_in_both_parts_equally_often(received: list[ReceivedMessage]) -> None:
    for message in received:
        text, html = parts(message.message)
        in_html, in_text = links(html, text, BARE_FROM)
        # The same links in both parts: the message's total is even (rspamd's URI_COUNT_ODD).
        assert in_html == in_text, message.rcpt_tos
        ids = re.findall(r'<div class="paper"', html)
        pdfs = [u for u in in_html if "/pdf/" in u]
        assert len(pdfs) == len(ids) > 0  # each paper in full: its abstract page and its PDF
        assert "read more" not in html


def test_headers_and_text_part_are_clean(received: list[ReceivedMessage]) -> None:
    for message in received:
        email = message.message
        name, address = parseaddr(str(email["From"]))
        assert name == "arXiv digest" and address == BARE_FROM
        message_id = str(email["Message-ID"])
        assert address not in message_id and message_id.endswith("@example.org>")
        text, html = parts(email)
        assert "\n-- \nYou receive this email because" in text
        assert "display:none" not in html.replace(" ", "")  # no hidden preheader
        assert not re.search(r"<span[^>]*\sbgcolor=", html)
        assert not re.search(r"font-size:\s*0", html)  # MJML's zero-font wrappers, removed
