"""`digest send` end to end: the real CLI in a subprocess, a real SQLite file, the real `arxiv`
client against a loopback arXiv stand-in, and a loopback SMTP server that parses what arrives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from html.parser import HTMLParser

import pytest
from helpers import (
    ADA,
    GNN,
    GRACE,
    REWARD_MODEL,
    SENDER,
    Digest,
    abs_ids,
    matching,
    messages_to,
    parts,
)
from standins import Fault, base_id, paper_from_fixture

# `digest` (conftest.py): Ada ("reward model") and Grace ("graph neural network; reward model").


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def html_tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element of an HTML document, as a browser's tokenizer sees it."""
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_dry_run_previews_every_email_and_sends_and_records_nothing(digest: Digest) -> None:
    result = digest.run("send", "--dry-run", "--out", "previews")

    assert result.returncode == 0, result.stderr
    previews = digest.home / "previews"
    for address in (ADA, GRACE):
        html = (previews / f"{address}.html").read_text(encoding="utf-8")
        text = (previews / f"{address}.txt").read_text(encoding="utf-8")
        eml = message_from_bytes((previews / f"{address}.eml").read_bytes(), policy=default_policy)
        assert eml["To"] == address
        assert abs_ids(html) == abs_ids(text) and abs_ids(html)
        assert re.search(
            rf"^{re.escape(address)}: \d+ papers, \d+ KB, preview written$", result.stdout, re.M
        )
    assert "nothing sent or recorded" in result.stdout
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]

    # The real send afterwards still delivers everything the preview showed.
    sent = digest.run("send")
    assert sent.returncode == 0, sent.stderr
    preview_ids = abs_ids((previews / f"{ADA}.html").read_text(encoding="utf-8"))
    assert abs_ids(parts(messages_to(digest.smtp, ADA)[0])[1]) == preview_ids


# What a plain send must not import (each is imported where it is used): scikit-learn and scipy
# only for readers with likes, dkimpy and cryptography only with DIGEST_DKIM_KEY, the bounce
# reader (imapclient, flufl.bounce) only by `digest bounces` and the daemon, and the modules of
# other commands. Together they cost every `digest send` ~0.4 s of CPU before it did anything.
NOT_FOR_A_PLAIN_SEND = (
    "scipy",
    "sklearn",
    "numpy.f2py",
    "dkim",
    "dns",
    "cryptography",
    "imapclient",
    "flufl.bounce",
    "schedule",
    "digest.dkim",
    "digest.bounces",
    "digest.mailbox",
    "digest.reports",
    "digest.scheduler",
    "digest.status",
    "digest.testsend",
)
# `digest` itself, noting every module imported by the time it exits.
RUN_AND_LIST_MODULES = """
import json, sys
from digest.cli import main
try:
    main()
finally:
    with open({out!r}, "w", encoding="utf-8") as handle:
        json.dump(sorted(sys.modules), handle)
"""


def modules_imported_by(digest: Digest, *args: str) -> set[str]:
    out = digest.home / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES.format(out=str(out)), *args],
        env=digest.env(),
        cwd=digest.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(out.read_text(encoding="utf-8")))


def test_a_plain_send_imports_only_what_it_uses(digest: Digest) -> None:
    for args in (["--help"], ["send", "--dry-run"], ["send"]):
        modules = modules_imported_by(digest, *args)
        assert {"click", "digest.cli"} <= modules  # what was listed is what ran
        if args != ["--help"]:
            assert {"digest.pipeline", "premailer", "arxiv", "sqlite_utils"} <= modules
        unwanted = {
            name
            for name in modules
            for heavy in NOT_FOR_A_PLAIN_SEND
            if name == heavy or name.startswith(f"{heavy}.")
        }
        assert unwanted == set(), f"digest {' '.join(args)} imported them"
    assert len(digest.smtp.messages) == 2  # the send sent: its whole path was taken


def test_send_delivers_exactly_the_matching_papers_once(digest: Digest) -> None:
    served = digest.arxiv.papers
    expected_ada = matching(served, REWARD_MODEL)
    expected_grace = expected_ada | matching(served, GNN)
    assert len(expected_ada) >= 5  # the fixture is about reward models: a meaningful check

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    [to_ada] = messages_to(digest.smtp, ADA)
    [to_grace] = messages_to(digest.smtp, GRACE)
    for message, expected in ((to_ada, expected_ada), (to_grace, expected_grace)):
        text, html = parts(message)
        assert abs_ids(html) == expected
        assert abs_ids(text) == expected
    assert digest.delivered(ADA) == expected_ada
    assert digest.delivered(GRACE) == expected_grace
    assert "2 emails sent, 0 failed" in result.stdout

    # A second run the same day finds nothing new: no email, nothing recorded twice.
    again = digest.run("send")
    assert again.returncode == 0, again.stderr
    assert len(digest.smtp.messages) == 2
    assert f"{ADA}: nothing new" in again.stdout
    rows = digest.query("SELECT count(*), count(DISTINCT subscriber || paper_id) FROM deliveries")
    assert rows[0][0] == rows[0][1] == len(expected_ada) + len(expected_grace)


def test_a_later_day_delivers_only_the_new_papers(digest: Digest, papers_fixture: list) -> None:
    # Day one: only the older half of the fixture exists.
    now = datetime.now(UTC)
    everything = digest.arxiv.papers
    day_one = [p for p in everything if p["published"] < now - timedelta(hours=40)]
    digest.arxiv.papers = day_one
    assert digest.run("send").returncode == 0
    first = abs_ids(parts(messages_to(digest.smtp, ADA)[0])[1])

    # Day two: the newer papers appear as well.
    digest.arxiv.papers = everything
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    second = abs_ids(parts(messages_to(digest.smtp, ADA)[1])[1])
    new_ids = matching(everything, REWARD_MODEL) - matching(day_one, REWARD_MODEL)
    assert second == new_ids and new_ids
    assert not first & second


def test_a_new_version_of_a_delivered_paper_is_not_delivered_again(digest: Digest) -> None:
    assert digest.run("send").returncode == 0
    delivered = digest.delivered(ADA)
    # arXiv announces v2 of one delivered paper: same id, newer `updated`, same `published`.
    target = next(p for p in digest.arxiv.papers if base_id(p["id"]) in delivered)
    revised = paper_from_fixture(target, target["published"], datetime.now(UTC), version=2)
    revised["title"] = target["title"] + " (revised)"
    digest.arxiv.papers = [revised if p is target else p for p in digest.arxiv.papers]

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert len(digest.smtp.messages) == 2  # nothing new for anyone
    assert digest.query("SELECT version FROM papers WHERE id = ?", [base_id(target["id"])]) == [
        (2,)
    ]


def test_hostile_text_from_arxiv_reaches_the_reader_as_text(
    digest: Digest, papers_fixture: list
) -> None:
    hostile = paper_from_fixture(papers_fixture[0], datetime.now(UTC) - timedelta(hours=1))
    hostile["id"] = "2511.99999v1"
    hostile["title"] = 'Reward Models <script>alert("x")</script> & $O(n^2)$\r\nBcc: victim@evil'
    hostile["abstract"] = (
        'We train a reward model. <img src=x onerror="alert(1)"> <a href="javascript:x">k</a> '
        "with $\\alpha < \\beta$ & friends."
    )
    hostile["comment"] = "<b>10 pages</b>\nX-Injected: yes"
    hostile["authors"] = ["Eve <eve@evil>", "Mallory\r\nBcc: x@evil"]
    digest.arxiv.papers = [hostile]
    digest.write_subscribers(
        'email,name,keywords\nada@example.org,"Ada\nBcc: a@evil","reward model;\nBcc: b@evil"\n'
    )

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    [received] = digest.smtp.messages
    assert received.rcpt_tos == [ADA]
    message = received.message
    headers = {name.lower() for name in message}
    assert not headers & {"bcc", "x-injected"}
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert len(message.get_all(name) or []) == 1, name
        assert "\n" not in message[name] and "\r" not in message[name]
    text, html = parts(message)
    tags = html_tags(html)
    assert not {name for name, _ in tags} & {"script", "img"}
    assert not [attrs for _, attrs in tags if "javascript:" in str(attrs)]
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
    # Its LaTeX reads as text (digest.latex), and that text is escaped like the rest.
    assert "with \u03b1 &lt; \u03b2 &amp; friends" in html and "O(n\u00b2)" in text
    assert '<script>alert("x")</script>' in text  # the text part shows it as the text it is


def test_a_refused_address_does_not_stop_the_others_and_stays_owed(digest: Digest) -> None:
    digest.smtp.reject_rcpt[GRACE] = (550, "5.1.1 No such user")

    result = digest.run("send")

    assert result.returncode == 1
    assert f"Error: {GRACE}: the mail server refused it: 550 5.1.1 No such user" in result.stderr
    assert len(messages_to(digest.smtp, ADA)) == 1
    assert digest.delivered(ADA)
    assert digest.delivered(GRACE) == set()

    # Once the address works again, Grace gets everything she was owed, Ada nothing twice.
    del digest.smtp.reject_rcpt[GRACE]
    retry = digest.run("send")
    assert retry.returncode == 0, retry.stderr
    assert len(messages_to(digest.smtp, GRACE)) == 1
    assert len(messages_to(digest.smtp, ADA)) == 1


def test_sent_messages_are_well_formed(digest: Digest) -> None:
    assert digest.run("send").returncode == 0

    for received in digest.smtp.messages:
        assert b"\r\n" in received.raw and b"\n" not in received.raw.replace(b"\r\n", b"")
        message = received.message
        assert message.get_content_type() == "multipart/alternative"
        kinds = [part.get_content_type() for part in message.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
            assert len(message.get_all(name) or []) == 1, name
        assert message["From"] == SENDER
        assert received.mail_from == "digest@example.org"
        assert message["List-Unsubscribe"] == "<mailto:digest@example.org?subject=unsubscribe>"
        text, html = parts(message)
        assert len(html.encode()) < 102_000
        assert abs_ids(text) == abs_ids(html)
        assert html.lstrip().lower().startswith("<!doctype html")
        assert "fonts.googleapis" not in html  # no web fonts: nothing fetched at open
        assert 'class="hl"' in html  # matched words are highlighted
        assert "You receive this email because" in html and "unsubscribe" in text


def test_a_long_digest_stays_under_the_clipping_size_and_shows_every_delivered_paper(
    digest: Digest, papers_fixture: list
) -> None:
    now = datetime.now(UTC)
    many = []
    for i in range(120):
        base = papers_fixture[i % len(papers_fixture)]
        paper = paper_from_fixture(base, now - timedelta(minutes=10 * (i + 1)))
        paper["id"] = f"2511.{10000 + i}v1"
        paper["title"] = f"Reward model study {i}: {base['title']}"
        many.append(paper)
    digest.arxiv.papers = many
    digest.write_subscribers([{"email": ADA, "name": "Ada", "keywords": "reward model"}])

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    text, html = parts(messages_to(digest.smtp, ADA)[0])
    assert len(html.encode()) <= 95_000
    assert "More new papers" in html  # the rest is listed compactly, not cut silently
    delivered = digest.delivered(ADA)
    assert delivered <= abs_ids(html) and delivered <= abs_ids(text)
    shown_later = {f"2511.{10000 + i}" for i in range(120)} - delivered
    if shown_later:  # whatever did not fit is announced and delivered next time
        assert "will follow in your next digest" in text
        assert digest.run("send").returncode == 0
        assert shown_later <= digest.delivered(ADA)


def test_keywords_are_data_never_query_syntax(digest: Digest, papers_fixture: list) -> None:
    now = datetime.now(UTC)
    titles = {
        "2511.00001v1": "Fast C++ kernels for reward models",
        "2511.00002v1": "A C compiler for the masses",
        "2511.00003v1": "Self-attention without softmax",
        "2511.00004v1": "Reward shaping and reasoning",
    }
    served = []
    for i, (arxiv_id, title) in enumerate(titles.items()):
        paper = paper_from_fixture(papers_fixture[0], now - timedelta(hours=i + 1))
        paper.update(id=arxiv_id, title=title, abstract="Nothing else here.", comment="")
        served.append(paper)
    digest.arxiv.papers = served
    digest.write_subscribers(
        [
            {"email": "cpp@example.org", "keywords": "C++"},
            {"email": "attn@example.org", "keywords": "self-attention"},
            {"email": "or@example.org", "keywords": "reward OR reasoning"},
            {"email": "quote@example.org", "keywords": 'reward" OR "compiler'},
            {"email": "syntax@example.org", "keywords": "title:reward; NEAR(reward shaping); *"},
        ]
    )

    result = digest.run("send")

    # `*` has no words: its row is reported and skipped; the others run normally.
    assert "keyword '*' of syntax@example.org has no letters or digits" in result.stderr
    assert "Traceback" not in result.stderr
    got = {m.rcpt_tos[0]: abs_ids(parts(m.message)[1]) for m in digest.smtp.messages}
    assert got["cpp@example.org"] == {"2511.00001"}  # not the lone "C" of 2511.00002
    assert got["attn@example.org"] == {"2511.00003"}
    assert "or@example.org" not in got  # the phrase "reward or reasoning" is nowhere
    assert "quote@example.org" not in got


def test_stemmed_phrase_matching(digest: Digest, papers_fixture: list) -> None:
    now = datetime.now(UTC)
    titles = [
        "Reward Models are all you need",
        "On reward modeling for LLMs",
        "Rewarding models for good behaviour",
        "Models of reward",
        "Better reasoners via search",
    ]
    served = []
    for i, title in enumerate(titles):
        paper = paper_from_fixture(papers_fixture[0], now - timedelta(hours=i + 1))
        paper.update(id=f"2511.0010{i}v1", title=title, abstract="Nothing else.", comment="")
        served.append(paper)
    digest.arxiv.papers = served
    digest.write_subscribers([{"email": ADA, "keywords": "Reward Model; reasoning"}])

    assert digest.run("send").returncode == 0

    text, html = parts(digest.smtp.messages[0].message)
    assert abs_ids(html) == {"2511.00100", "2511.00101", "2511.00102", "2511.00104"}
    # Sections follow the subscriber's keyword order, each paper once.
    assert text.index("== Reward Model (3) ==") < text.index("== reasoning (1) ==")


def test_bad_rows_are_reported_by_line_and_the_others_still_get_their_digest(
    digest: Digest,
) -> None:
    digest.write_subscribers(
        "email,name,keywords\n"
        "ada@example.org,Ada,reward model\n"
        "not-an-address,Bob,reward model\n"
        "carol@example.org,Carol,\n"
        "ADA@example.org,Ada again,reasoning\n"
    )

    result = digest.run("send")

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert lines == [
        "Error: subscribers.csv:3: 'not-an-address' is not an email address: "
        "An email address must have an @-sign.",
        "Error: subscribers.csv:4: carol@example.org has no keyword; "
        "list phrases separated by ';' in 'keywords'",
        "Error: subscribers.csv:5: ADA@example.org is already listed on line 2; "
        "keep one row per address",
    ]
    assert [m.rcpt_tos for m in digest.smtp.messages] == [[ADA]]


def test_a_failed_fetch_sends_and_records_nothing(digest: Digest) -> None:
    digest.extra_env["DIGEST_ARXIV_RETRIES"] = "0"  # retries: see test_faults.py
    digest.arxiv.faults.append(Fault.http(503))

    result = digest.run("send")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: arXiv answered HTTP 503")
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]
    assert digest.query("SELECT status FROM runs") == [("failed",)]


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (Fault.html_page(), "not an Atom feed"),
        (Fault.empty_feed(total_results=40), "empty page at result 0 of 40"),
        (Fault.malformed(), "not an Atom feed"),
        (Fault.hang(8), "did not answer within 5 s"),
    ],
)
def test_a_bad_answer_from_arxiv_is_never_taken_for_no_papers(
    digest: Digest, fault: Fault, says: str
) -> None:
    digest.extra_env["DIGEST_ARXIV_RETRIES"] = "0"  # retries: see test_faults.py
    digest.arxiv.faults.append(fault)

    result = digest.run("send")

    assert result.returncode == 1
    assert says in result.stderr
    assert digest.smtp.messages == []


def test_arxiv_load_does_not_grow_with_subscribers(digest: Digest) -> None:
    people = [
        {"email": f"r{i}@example.org", "keywords": "reward model; reasoning"} for i in range(40)
    ]
    digest.write_subscribers(people[:1])
    assert digest.run("send", "--dry-run").returncode == 0
    few = len(digest.arxiv.requests)
    digest.write_subscribers(people)
    assert digest.run("send", "--dry-run").returncode == 0
    assert len(digest.arxiv.requests) - few == few
    for request in digest.arxiv.requests:
        assert request.user_agent and request.user_agent.startswith("digest/")
        assert request.params["sortBy"] == "submittedDate"
        assert request.params["sortOrder"] == "descending"


def test_paging_stops_at_the_look_back_window(digest: Digest, papers_fixture: list) -> None:
    now = datetime.now(UTC)
    old = []
    for i in range(900):  # months of older papers behind the new ones
        paper = paper_from_fixture(papers_fixture[i % 50], now - timedelta(days=8, hours=i))
        paper["id"] = f"2401.{10000 + i}v1"
        old.append(paper)
    digest.arxiv.papers = digest.arxiv.papers + old

    assert digest.run("send").returncode == 0

    assert len(digest.arxiv.requests) == 1  # one page of 200 reaches past the window
    assert digest.query("SELECT count(*) FROM papers WHERE id LIKE '2401.%'") == [(0,)]


def test_smtp_login_and_a_refused_login_never_shows_the_password(digest: Digest) -> None:
    digest.smtp.auth = ("digest", "s3cret-Pa55")
    digest.extra_env.update(DIGEST_SMTP_USER="digest", DIGEST_SMTP_PASSWORD="wrong-Pa55")

    refused = digest.run("-v", "send")

    assert refused.returncode == 1
    assert "refused the login for 'digest'" in refused.stderr
    assert "wrong-Pa55" not in refused.stderr + refused.stdout
    assert digest.smtp.messages == []
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]

    digest.extra_env["DIGEST_SMTP_PASSWORD"] = "s3cret-Pa55"
    accepted = digest.run("-v", "send")
    assert accepted.returncode == 0, accepted.stderr
    assert "s3cret-Pa55" not in accepted.stderr + accepted.stdout
    assert {m.login for m in digest.smtp.messages} == {"digest"}


def test_nothing_listening_on_the_smtp_port_is_one_clear_error(digest: Digest) -> None:
    digest.smtp.stop()

    result = digest.run("send")

    assert result.returncode == 1
    assert "Error: cannot reach the mail server at 127.0.0.1:" in result.stderr
    assert "DIGEST_SMTP_HOST" in result.stderr
    assert digest.query("SELECT count(*) FROM deliveries") == [(0,)]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DIGEST_ARXIV_DELAY", "soon", "DIGEST_ARXIV_DELAY='soon' is not valid: use a number"),
        ("DIGEST_SMTP_SECURITY", "tls", "use one of starttls, ssl, none"),
        ("DIGEST_SMTP_PORT", "99999", "use a port number from 1 to 65535"),
        ("DIGEST_FROM", "", "DIGEST_FROM is not set"),
    ],
)
def test_bad_settings_name_the_variable_and_the_fix(
    digest: Digest, name: str, value: str, says: str
) -> None:
    digest.extra_env[name] = value

    result = digest.run("send")

    assert result.returncode == 1
    assert says in result.stderr
    assert result.stderr.startswith("Error: ")
    assert digest.smtp.messages == []
