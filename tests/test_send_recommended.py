"""Issue 13 wired into a real `digest send`: the CLI in a subprocess, a real SQLite file, the
real `arxiv` client against the loopback arXiv stand-in, a loopback SMTP server, and for the
links a real `digest serve` over HTTP.

The oracle is the seed papers' own topics (tests/fixtures/papers.json: each came from the
arXiv search of "Reasoning" or of "Reward Model"): a reader who likes reasoning papers and
follows a keyword of neither topic is recommended reasoning papers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REASONING, Digest, abs_ids, matching, messages_to, parts
from standins import ArxivStandin, Paper, SmtpStandin, base_id, free_port
from test_unsubscribe import Served, http

ADA, GRACE = "ada@example.org", "grace@example.org"
SECRET = "test-secret-0123456789abcdef"
HEADING = "== Recommended for you ("
KEYWORD = "diffusion"


def topic(papers: list[Paper], name: str) -> set[str]:
    """Ids of the seed papers found by arXiv's search for `name` only."""
    return {base_id(p["id"]) for p in papers if p["keywords"] == [name]}


def section(text: str) -> list[str]:
    """The ids in the text part's "Recommended for you" section, in order."""
    if HEADING not in text:
        return []
    rest = text.split(HEADING, 1)[1].split("\n-- \n", 1)[0].split("\n== ", 1)[0]
    return list(dict.fromkeys(re.findall(r"https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})", rest)))


def likes_of(papers: list[Paper], name: str = "Reasoning") -> list[str]:
    """Five papers of the seed topic `name` (the oldest: the likes the reader gave earlier)."""
    found = topic(papers, name)
    return [base_id(p["id"]) for p in reversed(papers) if base_id(p["id"]) in found][:5]


def install(
    home: Path, arxiv: ArxivStandin, smtp: SmtpStandin, env: dict[str, str], likes: list[str]
) -> Digest:
    home.mkdir()
    digest = Digest(home, arxiv, smtp, {"DIGEST_HTML_BUDGET": "5000000", **env})
    digest.write_subscribers(
        f"email,name,keywords,likes\n{ADA},Ada,{KEYWORD},{';'.join(likes)}\n"
        f"{GRACE},Grace,reward model,\n"
    )
    return digest


@pytest.fixture
def public() -> Iterator[dict[str, str]]:
    port = free_port()
    yield {"DIGEST_PUBLIC_URL": f"http://127.0.0.1:{port}", "DIGEST_SECRET": SECRET}


def test_send_recommends_the_liked_topic_never_twice_and_leaves_others_unchanged(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin, public: dict[str, str]
) -> None:
    papers = arxiv.papers
    liked = likes_of(papers)
    reasoning = topic(papers, "Reasoning")
    about_reasoning = matching(papers, REASONING)
    with_likes = install(tmp_path / "likes", arxiv, smtp, public, liked)

    result = with_likes.run("send")

    assert result.returncode == 0, result.stderr
    # The liked papers the empty database lacked came by id, in one batched request.
    by_id = [r for r in arxiv.requests if r.params.get("id_list")]
    assert len(by_id) == 1 and set(by_id[0].params["id_list"].split(",")) >= set(liked)
    # ...and the newest papers of the liked papers' categories came with the search.
    searched = " ".join(r.params.get("search_query", "") for r in arxiv.requests)
    assert "cat:" in searched
    [ada] = messages_to(smtp, ADA)
    text, html = parts(ada)
    recommended = section(text)
    assert 1 <= len(recommended) <= 5  # DIGEST_RECOMMEND_TOP
    # The liked topic: every one is about reasoning, nearly all from the seeds' own search for
    # it (a reward-model paper on reasoners may come too); a random pick of the pool would be
    # half reward-model papers.
    assert set(recommended) <= about_reasoning
    assert len(set(recommended) & reasoning) >= len(recommended) - 1
    assert not set(recommended) & set(liked)
    assert "Recommended for you" in html and html.count("Why: Close to") >= len(recommended)
    assert text.count("  Why: Close to ") == len(recommended)
    keyword_ids = abs_ids(text.split(HEADING, 1)[0])
    assert keyword_ids and not keyword_ids & set(recommended)  # not in her keyword sections
    assert set(recommended) <= with_likes.delivered(ADA)  # recorded as delivered
    assert abs_ids(html) == abs_ids(text)

    # A second run (same papers still new): nothing recommended again.
    smtp.messages.clear()
    assert with_likes.run("send").returncode == 0
    second = [section(parts(m)[0]) for m in messages_to(smtp, ADA)]
    assert not set(recommended) & {pid for ids in second for pid in ids}
    assert all(set(ids) <= about_reasoning for ids in second)
    again = with_likes.query(
        "SELECT paper.value, count(*) FROM emails, json_each(emails.papers) AS paper "
        "WHERE subscriber = ? GROUP BY paper.value HAVING count(*) > 1",
        [ADA],
    )
    assert again == []

    # Grace has no likes: her email is exactly what an installation without any likes sends.
    smtp.messages.clear()
    without = install(tmp_path / "none", arxiv, smtp, public, [])
    assert without.run("send").returncode == 0
    grace_alone = parts(messages_to(smtp, GRACE)[0])
    ada_alone = parts(messages_to(smtp, ADA)[0])[0]
    assert HEADING not in ada_alone
    # Her keyword section, ordered by her model, still holds every keyword match.
    assert abs_ids(ada_alone) == keyword_ids
    smtp.messages.clear()
    fresh = install(tmp_path / "again", arxiv, smtp, public, liked)
    assert fresh.run("send").returncode == 0
    grace_with_ada_liking = parts(messages_to(smtp, GRACE)[0])
    assert grace_with_ada_liking == grace_alone
    assert HEADING not in grace_alone[0] and "Why: " not in grace_alone[0] + grace_alone[1]
    assert "Recommended for you <span" not in grace_alone[1]
    ada_plain = parts(messages_to(smtp, ADA)[0])[0]
    assert section(ada_plain) == recommended  # the same papers on the same data: deterministic


def test_links_in_the_email_work_against_digest_serve(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin, public: dict[str, str]
) -> None:
    digest = install(tmp_path / "d", arxiv, smtp, public, likes_of(arxiv.papers))
    assert digest.run("send").returncode == 0
    text, html = parts(messages_to(smtp, GRACE)[0])
    more = re.findall(r"More like this: (\S+)", text)
    less = re.findall(r"Not for me: (\S+)", text)
    ids = re.findall(r"Abstract: https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})", text)
    assert len(more) == len(less) == len(ids) > 1  # on every paper
    for url in more + less:
        assert f'href="{url}"' in html  # the same links in the HTML part
    [likes] = re.findall(r"Your likes \(what .* is learned from\): (\S+)", text)
    assert f'href="{likes}"' in html

    def rows() -> list[tuple[object, ...]]:
        return digest.query(
            "SELECT subscriber, paper_id, kind FROM feedback WHERE source = 'web' ORDER BY rowid"
        )

    server = Served(digest, int(public["DIGEST_PUBLIC_URL"].rsplit(":", 1)[1]))
    try:
        status, page, _ = http(more[1])  # a GET (a mail scanner) shows the paper, records nothing
        assert status == 200 and ">More like this</button>" in page and ids[1] in page
        assert rows() == []
        assert http(more[1], {})[0] == 200  # the button's POST records it
        assert http(less[0], {})[0] == 200
        assert rows() == [(GRACE, ids[1], "like"), (GRACE, ids[0], "dislike")]
        # Altered: another paper's id, another kind, another reader: all refused.
        other = more[1].replace(ids[1], ids[2])
        kind = more[1].replace("~m~", "~n~")
        ada_more = re.findall(r"More like this: (\S+)", parts(messages_to(smtp, ADA)[0])[0])[0]
        reader = ada_more.rpartition("/")[2].split("~")[0]
        swapped = more[1].rsplit("/", 1)[0] + "/" + reader + "~" + more[1].split("~", 1)[1]
        for bad in (other, kind, swapped, more[1][:-3] + "abc"):
            assert http(bad)[0] == 400 and http(bad, {})[0] == 400
        assert rows() == [(GRACE, ids[1], "like"), (GRACE, ids[0], "dislike")]
        status, page, _ = http(likes)
        assert status == 200 and f"https://arxiv.org/abs/{ids[1]}" in page
    finally:
        server.stop()


def test_a_readers_keyword_section_comes_best_first_by_their_likes(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    """Ada follows "reasoning" (papers of both seed topics match it) and likes reward-model
    papers: in her section the reward-model ones move up; none is dropped."""
    liked = likes_of(arxiv.papers, "Reward Model")
    wanted = topic(arxiv.papers, "Reward Model")

    def section_order(likes: list[str], name: str) -> list[str]:
        home = tmp_path / name
        home.mkdir()
        digest = Digest(home, arxiv, smtp, {"DIGEST_HTML_BUDGET": "5000000"})
        digest.write_subscribers(
            f"email,name,keywords,likes\n{ADA},Ada,reasoning,{';'.join(likes)}\n"
        )
        assert digest.run("send", "--dry-run").returncode == 0
        text = (home / "previews" / f"{ADA}.txt").read_text(encoding="utf-8")
        text = text.split(HEADING, 1)[0]
        return re.findall(r"Abstract: https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})", text)

    by_date, by_model = section_order([], "plain"), section_order(liked, "liked")
    assert sorted(by_date) == sorted(by_model) and by_date != by_model

    def mean_rank(order: list[str]) -> float:
        ranks = [n for n, pid in enumerate(order) if pid in wanted]
        return sum(ranks) / len(ranks)

    assert 3 <= len([p for p in by_date if p in wanted]) < len(by_date) - 3
    assert mean_rank(by_model) < mean_rank(by_date) - 10  # 23 against 49 of 82 papers here
