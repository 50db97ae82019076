"""Trending papers end to end: the real CLI sends real emails (SMTP stand-in) while the Hugging
Face daily papers API is a loopback stand-in serving the real JSON shape, including a 429, a hang
and garbage. Whatever the trending API does, the digest goes out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ADA, REWARD_MODEL, Digest, abs_ids, messages_to, parts
from standins import (
    ArxivStandin,
    Fault,
    Paper,
    SmtpStandin,
    TrendingStandin,
    base_id,
    daily_paper,
)

from digest.trending import parse

BOB = "bob@example.org"


@pytest.fixture
def hf() -> Iterator[TrendingStandin]:
    with TrendingStandin() as standin:
        yield standin


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin, hf: TrendingStandin) -> Digest:
    installation = Digest(
        tmp_path,
        arxiv,
        smtp,
        {
            "DIGEST_TRENDING": "huggingface",
            "DIGEST_TRENDING_URL": hf.url,
            "DIGEST_TRENDING_TOP": "3",
            "DIGEST_TRENDING_TIMEOUT": "1",
            "DIGEST_TRENDING_RETRIES": "1",
        },
    )
    installation.write_subscribers(
        "email,name,keywords,trending\n"
        f"{ADA},Ada,reward model,\n"  # empty: the default, trending shown
        f"{BOB},Bob,reward model,no\n"
    )
    return installation


def matching(papers: list[Paper]) -> list[Paper]:
    return [p for p in papers if REWARD_MODEL.search(p["title"] + " " + p["abstract"])]


def serve_board(digest: Digest, hf: TrendingStandin) -> dict[str, int]:
    """Five papers trending: two matching reward model, three not; upvotes id -> count."""
    served = digest.arxiv.papers
    matched = matching(served)
    others = [p for p in served if p not in matched]
    chosen = [(matched[3], 12), (others[0], 87), (others[1], 40), (matched[0], 25), (others[2], 3)]
    hf.entries = [daily_paper(p, votes, comments=2) for p, votes in chosen]
    hf.entries.append({"paper": {"title": "no id: skipped"}, "title": "x"})
    return {base_id(p["id"]): votes for p, votes in chosen}


def heading_at(html: str, text: str) -> int:
    found = re.search(rf"<h2[^>]*>{re.escape(text)}", html)
    assert found, f"no <h2> {text!r}"
    return found.start()


def trending_ids(html: str) -> list[str]:
    return re.findall(r'href="https://huggingface\.co/papers/([0-9.]+)"', html)


def test_trending_section_and_badges_from_the_daily_papers_api(
    digest: Digest, hf: TrendingStandin
) -> None:
    votes = serve_board(digest, hf)
    top3 = sorted(votes, key=lambda i: -votes[i])[:3]

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text, html = parts(messages_to(digest.smtp, ADA)[0])
    # (a) Trending today, at the top, the top 3 by upvotes, in order.
    assert heading_at(html, "Trending today") < heading_at(html, "reward model")
    assert trending_ids(html) == top3
    assert f"{votes[top3[0]]} upvotes" in html
    assert text.index("== Trending today") < text.index("== reward model")
    assert re.findall(r"https://huggingface\.co/papers/([0-9.]+)", text) == top3
    # The papers delivered are still exactly the keyword matches (trending adds none).
    expected = {base_id(p["id"]) for p in matching(digest.arxiv.papers)}
    assert abs_ids(html) == expected == digest.delivered(ADA)
    # (b) a badge on each matched paper that is trending, and on no other.
    trending_matches = {pid for pid in votes if pid in expected}
    assert len(trending_matches) == 2
    badged = set(re.findall(r"^\* .*\n  .*\| trending: (\d+) upvotes$", text, re.M))
    assert badged == {str(votes[pid]) for pid in trending_matches}
    for pid in trending_matches:
        block = html[html.index(f'<a href="https://arxiv.org/abs/{pid}"') :]
        block = block[: block.index('class="links"')]
        assert f"{votes[pid]} upvotes" in block
    assert html.count("upvotes on Hugging Face daily papers") == 2

    # Bob opted out of the section (trending=no) but sees the same badges.
    bob_text, bob_html = parts(messages_to(digest.smtp, BOB)[0])
    assert "Trending today" not in bob_html and "Trending today" not in bob_text
    assert trending_ids(bob_html) == []
    assert bob_html.count("upvotes on Hugging Face daily papers") == 2

    # Upvotes stored per arXiv id (entries without an id skipped), the outcome on the run.
    rows = digest.query("SELECT paper_id, upvotes FROM trending")
    assert dict(rows) == votes  # type: ignore[arg-type]
    assert digest.query("SELECT trending FROM runs") == [("5 papers",)]
    [request] = hf.requests
    assert request.path == "/api/daily_papers"
    assert request.user_agent and request.user_agent.startswith("digest/")


def test_a_429_is_retried_and_the_section_still_arrives(
    digest: Digest, hf: TrendingStandin
) -> None:
    votes = serve_board(digest, hf)
    hf.faults = [Fault.http(429, retry_after=0)]

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert [r.fault is not None for r in hf.requests] == [True, False]
    html = parts(messages_to(digest.smtp, ADA)[0])[1]
    assert trending_ids(html) == sorted(votes, key=lambda i: -votes[i])[:3]


@pytest.mark.parametrize(
    ("faults", "why"),
    [
        ([Fault.http(429, retry_after=0)] * 2, "answered HTTP 429 Too Many Requests (2 attempts)"),
        ([Fault.hang(30)] * 2, "no answer within 1 s (2 attempts)"),
        ([Fault(200, b"<html>busy</html>", content_type="text/html")], "is not JSON"),
        ([Fault(200, b'{"error": "x"}', content_type="application/json")], "not a JSON list"),
        ([Fault.http(404)], "answered HTTP 404 Not Found (2 attempts)"),
    ],
    ids=["429-every-time", "hangs", "html", "not-a-list", "404"],
)
def test_a_failing_trending_api_never_blocks_the_digest(
    digest: Digest, hf: TrendingStandin, faults: list[Fault], why: str
) -> None:
    serve_board(digest, hf)
    hf.faults = list(faults)
    expected = {base_id(p["id"]) for p in matching(digest.arxiv.papers)}

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "2 emails sent, 0 failed" in result.stdout
    text, html = parts(messages_to(digest.smtp, ADA)[0])
    assert "Trending today" not in html and "upvote" not in html and "upvote" not in text
    assert abs_ids(html) == expected == digest.delivered(ADA)
    # One log line on standard error, and the failure recorded on the run.
    [line] = result.stderr.splitlines()
    assert "trending papers left out of this run" in line and why in line
    [(outcome,)] = digest.query("SELECT trending FROM runs")
    assert str(outcome).startswith(f"failed: {digest.extra_env['DIGEST_TRENDING_URL']}")
    assert why in str(outcome)
    assert digest.query("SELECT count(*) FROM trending") == [(0,)]


def test_nothing_listening_is_a_failure_like_any_other(digest: Digest, hf: TrendingStandin) -> None:
    hf.close()

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "could not connect (2 attempts)" in result.stderr
    assert len(digest.smtp.messages) == 2


def test_a_failed_fetch_later_the_same_day_keeps_the_earlier_list(
    digest: Digest, hf: TrendingStandin, papers_fixture: list
) -> None:
    votes = serve_board(digest, hf)
    assert digest.run("send").returncode == 0
    # Later that day a new paper matches; the API is rate limiting by then.
    fresh = dict(digest.arxiv.papers[0])
    fresh.update(id="2511.77777v1", title="Reward models, again")
    digest.arxiv.papers = [fresh, *digest.arxiv.papers]
    hf.faults = [Fault.http(429, retry_after=0)] * 2

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    html = parts(messages_to(digest.smtp, ADA)[1])[1]
    assert trending_ids(html) == sorted(votes, key=lambda i: -votes[i])[:3]
    assert abs_ids(html) == {"2511.77777"}


def test_trending_is_off_by_default(digest: Digest, hf: TrendingStandin) -> None:
    serve_board(digest, hf)
    del digest.extra_env["DIGEST_TRENDING"]

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert hf.requests == []
    assert "Trending today" not in parts(messages_to(digest.smtp, ADA)[0])[1]
    assert digest.query("SELECT trending FROM runs") == [(None,)]


def test_bad_trending_settings_and_column_values_say_what_to_use(digest: Digest) -> None:
    digest.extra_env["DIGEST_TRENDING_TOP"] = "0"
    bad_top = digest.run("send", "--dry-run")
    assert bad_top.returncode == 1
    assert bad_top.stderr == (
        "Error: DIGEST_TRENDING_TOP='0' is not valid: use a number greater than 0\n"
    )
    digest.extra_env["DIGEST_TRENDING_TOP"] = "3"
    digest.extra_env["DIGEST_TRENDING"] = "reddit"
    bad_source = digest.run("send", "--dry-run")
    assert bad_source.stderr == (
        "Error: DIGEST_TRENDING='reddit' is not valid: use one of huggingface\n"
    )

    digest.extra_env["DIGEST_TRENDING"] = "huggingface"
    digest.write_subscribers(
        f"email,keywords,trending\n{ADA},reward model,maybe\n{BOB},reward model,off\n"
    )
    bad_cell = digest.run("send")
    assert bad_cell.returncode == 1
    assert bad_cell.stderr.splitlines()[-1] == (
        f"Error: subscribers.csv:2: trending='maybe' for {ADA} is not valid; "
        "use yes or no (or leave it empty)"
    )
    assert [m.rcpt_tos for m in digest.smtp.messages] == [[BOB]]  # the others still get theirs


def test_parse_treats_every_field_as_optional() -> None:
    payload = [
        {"paper": {"id": "2506.13741", "title": "A", "upvotes": 7}},
        {"paper": {"id": "2506.00001v2", "upvotes": "many"}, "title": "  B\n title "},
        {"paper": {"id": "not an id", "upvotes": 99}},
        {"paper": {"id": "2506.13741", "upvotes": 9}},  # the same paper twice: the higher count
        {"id": "hep-th/9901001", "upvotes": True},
        "junk",
        {},
    ]
    papers = parse(payload)
    assert [(p.id, p.title, p.upvotes) for p in papers] == [
        ("2506.13741", "2506.13741", 9),
        ("2506.00001", "B title", 0),
        ("hep-th/9901001", "hep-th/9901001", 0),
    ]


def test_an_email_resent_from_the_outbox_keeps_its_trending_section_and_badges(
    digest: Digest, hf: TrendingStandin
) -> None:
    votes = serve_board(digest, hf)
    top3 = sorted(votes, key=lambda i: -votes[i])[:3]
    digest.smtp.reject_rcpt[ADA] = (421, "4.7.0 Too busy, closing")

    first = digest.run("send")

    assert first.returncode == 1
    assert "the email stays pending" in first.stderr
    [message_id] = [
        row[0]
        for row in digest.query(
            "SELECT message_id FROM emails WHERE subscriber = ? AND status = 'pending'", [ADA]
        )
    ]
    assert messages_to(digest.smtp, ADA) == []

    # The next run rebuilds the pending email from the outbox; the trending API is down now.
    del digest.smtp.reject_rcpt[ADA]
    hf.entries = []
    hf.faults.append(Fault.http(404))
    second = digest.run("send")

    assert second.returncode == 0, second.stderr
    [to_ada] = messages_to(digest.smtp, ADA)
    assert to_ada["Message-ID"] == message_id
    text, html = parts(to_ada)
    assert trending_ids(html) == top3
    assert heading_at(html, "Trending today") < heading_at(html, "reward model")
    assert text.index("== Trending today") < text.index("== reward model")
    expected = {base_id(p["id"]) for p in matching(digest.arxiv.papers)}
    assert abs_ids(html) == expected == digest.delivered(ADA)
    assert html.count("upvotes on Hugging Face daily papers") == 2
