"""categories / exclude / authors / frequency change which papers arrive: the real `digest send`
against the arXiv and SMTP stand-ins, with oracles computed from the served papers."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import REWARD_MODEL, Digest, abs_ids, matching, messages_to, parts
from standins import ArxivStandin, SmtpStandin, base_id, paper_from_fixture

BENCHMARK = re.compile(r"\bbenchmark(s|ing|ed)?\b", re.IGNORECASE)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    # A budget large enough that every paper is shown in full, under its section.
    return Digest(tmp_path, arxiv, smtp, {"DIGEST_HTML_BUDGET": "5000000"})


def plain(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def received(digest: Digest, address: str) -> set[str]:
    [message] = messages_to(digest.smtp, address)
    text, html = parts(message)
    assert abs_ids(text) == abs_ids(html)
    return abs_ids(html)


def test_categories_and_exclude_narrow_the_keyword_matches(digest: Digest) -> None:
    served = digest.arxiv.papers
    reward = matching(served, REWARD_MODEL)
    in_cl_or_stat = {
        base_id(p["id"])
        for p in served
        if any(c == "cs.CL" or c.startswith("stat.") for c in p["categories"])
    }
    expected_categories = reward & in_cl_or_stat
    expected_exclude = reward - matching(served, BENCHMARK)
    # Meaningful: each filter removes some papers and keeps some.
    assert expected_categories and expected_categories != reward
    assert expected_exclude and expected_exclude != reward
    digest.write_subscribers(
        [
            {
                "email": "all@example.org",
                "keywords": "reward model",
                "categories": "",
                "exclude": "",
            },
            {"email": "cat@example.org", "keywords": "reward model", "categories": "cs.CL; stat.*"},
            {"email": "ex@example.org", "keywords": "reward model", "exclude": "benchmark"},
        ]
    )

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert received(digest, "all@example.org") == reward
    assert received(digest, "cat@example.org") == expected_categories
    assert received(digest, "ex@example.org") == expected_exclude
    assert digest.delivered("cat@example.org") == expected_categories


def test_followed_authors_are_included_whatever_the_keywords_and_marked(digest: Digest) -> None:
    served = digest.arxiv.papers
    by_zoe = {base_id(p["id"]) for p in served if "zoe lefevre" in map(plain, p["authors"])}
    reward = matching(served, REWARD_MODEL)
    assert by_zoe - reward and by_zoe & reward  # some of her papers match, some do not
    digest.write_subscribers(
        [
            # Written without accents; arXiv writes "Zoë Lefèvre".
            {"email": "ada@example.org", "keywords": "reward model", "authors": "Zoe Lefevre"},
            {"email": "bob@example.org", "keywords": "reward model", "authors": "zoë lefèvre"},
        ]
    )

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert received(digest, "ada@example.org") == reward | by_zoe
    assert received(digest, "bob@example.org") == reward | by_zoe
    text, _ = parts(messages_to(digest.smtp, "ada@example.org")[0])
    # Her papers without a keyword come in their own section, each marked with her name.
    section = text.split("== Authors you follow (")[1]
    assert int(section.split(")")[0]) == len(by_zoe - reward)
    assert abs_ids(section) == by_zoe - reward
    assert section.count("matched: by Zoe Lefevre") == len(by_zoe - reward)
    # The fetch asked arXiv for her once, in the same query as the keyword: no request per
    # subscriber.
    queries = {r.params["search_query"] for r in digest.arxiv.requests}
    assert queries == {'ti:"reward model" OR abs:"reward model" OR au:"zoe lefevre"'}


def test_weekly_subscribers_get_everything_owed_on_their_day_only(digest: Digest) -> None:
    now = datetime.now(UTC)
    served = digest.arxiv.papers
    # Three reward-model papers were published 10 days ago: past the daily look-back (7 days),
    # within a week plus the look-back.
    old = [p for p in served if REWARD_MODEL.search(p["title"] + " " + p["abstract"])][-3:]
    redated = {id(p): paper_from_fixture(p, now - timedelta(days=10)) for p in old}
    digest.arxiv.papers = [redated.get(id(p), p) for p in served]
    old_ids = {base_id(p["id"]) for p in old}
    reward = matching(digest.arxiv.papers, REWARD_MODEL)
    today, tomorrow = DAYS[now.weekday()], DAYS[(now.weekday() + 1) % 7]
    digest.write_subscribers(
        [
            {"email": f"{who}@example.org", "keywords": "reward model", "frequency": frequency}
            for who, frequency in [
                ("daily", ""),
                ("week", f"weekly:{today}"),
                ("later", f"weekly:{tomorrow}"),
            ]
        ]
    )

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert received(digest, "daily@example.org") == reward - old_ids
    assert received(digest, "week@example.org") == reward
    assert messages_to(digest.smtp, "later@example.org") == []
    day_name = {
        "mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday",
        "fri": "Friday", "sat": "Saturday", "sun": "Sunday",
    }[tomorrow]  # fmt: skip
    assert f"later@example.org: not due today (weekly on {day_name})" in result.stdout
    assert digest.delivered("later@example.org") == set()
    text, _ = parts(messages_to(digest.smtp, "week@example.org")[0])
    assert "subscribed to a weekly arXiv digest" in text


def test_the_weekly_window_reaches_back_to_the_last_email() -> None:
    from digest.match import owed_since
    from digest.models import Subscriber

    now = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # a Monday
    daily = Subscriber("a@example.org", ("x",))
    weekly = Subscriber("b@example.org", ("x",), weekday=0)
    day = timedelta(days=1)

    assert owed_since(daily, now, 7, now - 3 * day) == now - 7 * day
    assert owed_since(weekly, now, 7, None) == now - 14 * day  # first email: a week + look-back
    assert owed_since(weekly, now, 7, now - 7 * day) == now - 14 * day
    # The service did not run last Monday: two weeks are owed, with the same slack.
    assert owed_since(weekly, now, 7, now - 14 * day) == now - 21 * day
    # After months without an email, at most 35 days past the look-back.
    assert owed_since(weekly, now, 7, now - 200 * day) == now - 42 * day


def test_authors_and_categories_never_become_query_syntax() -> None:
    from digest.fetch import build_queries
    from digest.subscribers import check_row

    queries = build_queries(["reward model"], authors=['Li Wei") OR cat:"cs.*', "Zoë Lefèvre"])
    assert queries == [
        'ti:"reward model" OR abs:"reward model" OR au:"li wei or cat cs" OR au:"zoe lefevre"'
    ]
    for bad in ('cs.CL" OR ti:"x', "cs.CL)", "cs:CL", "CS.CL", "cs.C*", "*"):
        problem = check_row({"email": "a@example.org", "keywords": "x", "categories": bad})
        assert problem and "is not an arXiv category" in problem, bad
    for good in ("cs.CL", "cs.*", "hep-th", "math.AG", "stat"):
        assert check_row({"email": "a@example.org", "keywords": "x", "categories": good}) is None
