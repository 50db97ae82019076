"""No edit of subscribers.csv is lost: web pages and CLI commands, all at once, against a real
`digest serve` subprocess and real `digest subscribers` processes. Every edit answered as done
is in the file afterwards."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from helpers import Digest
from served import Served, http
from standins import ArxivStandin, SmtpStandin

from digest import roster
from digest.document import address_key
from digest.subscribers import load, parse_keywords
from digest.tokens import make_token

SECRET = "test-secret-0123456789abcdef"
PEOPLE = [f"reader{i}@example.org" for i in range(10)]
TOPICS = ["graph", "reward", "quantum", "protein", "galaxy", "neutrino"]


def keywords_of(i: int) -> list[str]:
    return [f"{topic} {i}" for topic in TOPICS]


@pytest.fixture
def served(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[Served]:
    digest = Digest(tmp_path, arxiv, smtp, {"DIGEST_SECRET": SECRET})
    rows = [f"{email},Reader {i},{'; '.join(keywords_of(i))}" for i, email in enumerate(PEOPLE)]
    digest.write_subscribers("email,name,keywords\n" + "\n".join(rows) + "\n")
    server = Served(digest)
    yield server
    server.stop()


def test_fifty_web_edits_and_ten_cli_edits_at_once_are_all_kept(served: Served) -> None:
    digest = served.digest
    # 50 removals over 10 subscribers (5 of 6 keywords each) through the web page, while
    # `digest subscribers keywords add` runs 10 times (one new keyword per subscriber).
    removals = [(i, keywords_of(i)[k]) for i in range(10) for k in range(1, 6)]
    start = threading.Barrier(len(removals) + 1)

    def remove(job: tuple[int, str]) -> tuple[int, str, int, str]:
        i, keyword = job
        token = make_token(SECRET, PEOPLE[i])
        start.wait()
        status, body, _ = http(
            f"{served.url}/unsubscribe/{token}/keywords/remove", {"keyword": keyword}
        )
        return i, keyword, status, body

    with ThreadPoolExecutor(len(removals)) as pool:
        answers = [pool.submit(remove, job) for job in removals]
        start.wait()
        cli = [add_keyword(digest, email, f"added {i}") for i, email in enumerate(PEOPLE)]
        results = [answer.result() for answer in answers]
    outcomes = [(process.wait(timeout=120), process.communicate()) for process in cli]

    done_web = [(i, k) for i, k, status, body in results if status == 200 and "Removed" in body]
    done_cli = [i for i, (code, _) in enumerate(outcomes) if code == 0]
    # Every edit was applied (the lock makes them wait their turn; none had to be refused).
    assert len(done_web) == 50, [(s, b[:300]) for _, _, s, b in results if s != 200]
    assert len(done_cli) == 10, outcomes

    people, problems = load(digest.csv_path)
    assert problems == []
    by_email = {p.email: p.keywords for p in people}
    assert sorted(by_email) == sorted(PEOPLE)
    for i, keyword in done_web:
        assert keyword not in by_email[PEOPLE[i]], (PEOPLE[i], keyword)
    for i in done_cli:
        assert f"added {i}" in by_email[PEOPLE[i]]
    for i, email in enumerate(PEOPLE):
        assert sorted(by_email[email]) == sorted([keywords_of(i)[0], f"added {i}"])


def add_keyword(digest: Digest, email: str, keyword: str) -> subprocess.Popen[str]:
    command = ["subscribers", "keywords", "add", email, keyword]
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *command],
        env=digest.env(),
        cwd=digest.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_edits_in_threads_of_one_process_are_all_kept(tmp_path: Path) -> None:
    """The same lock works between threads (the web server's) as between processes."""
    path = tmp_path / "subscribers.csv"
    path.write_text("email,keywords\nada@example.org,start\n", encoding="utf-8")
    added = [f"topic {n}" for n in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: roster.change_keywords(path, "ada@example.org", "add", [k]), added))
    [ada], _ = load(path)
    assert sorted(ada.keywords) == sorted(["start", *added])
    # Another process reading the file sees the same (the cache is only a cache).
    assert parse_keywords(path.read_text().splitlines()[1].split(",", 1)[1]) == ada.keywords


def test_the_fast_address_key_agrees_with_email_validator() -> None:
    addresses = [
        "ada@example.org", " Ada@Example.ORG ", "a.b+tag@sub.example.co.uk", "x_y-z@a-b.org",
        "o'brien@example.ie", "weird!#$%&'*+/=?^_`{|}~-@example.org", "a..b@example.org",
        ".a@example.org", "a@example", "a@-example.org", "a@example..org", "a@xn--bcher-kva.de",
        "A@XN--BCHER-KVA.DE", "zoë@example.org", "ada@bücher.de", '"quoted"@example.org',
        "no-at-sign", "", "a@b@c.org", "ÅNGSTRÖM@EXAMPLE.ORG", "ada@EXAMPLE.org.",
    ]  # fmt: skip
    for raw in addresses:
        expected = raw.strip()
        with contextlib.suppress(EmailNotValidError):
            expected = validate_email(expected, check_deliverability=False).normalized
        assert address_key(raw) == expected.casefold(), raw
