"""The preferences page of a real `digest serve`: every change lands in subscribers.csv under the
rules of `digest subscribers check`, a refused one changes nothing, GET changes nothing, and the
preview lists the papers of the last week in the database that the keywords match."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import GNN, REWARD_MODEL, Digest, matching
from served import Served, http
from standins import ArxivStandin, SmtpStandin, free_port

from digest.config import Settings
from digest.models import Subscriber
from digest.tokens import preferences_url

SECRET = "test-secret-0123456789abcdef"
ADA = "ada@example.org"
CSV = "email,name,keywords\nada@example.org,Ada,reward model\ngrace@example.org,Grace,graphs\n"


@pytest.fixture
def served(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[Served]:
    port = free_port()
    digest = Digest(
        tmp_path,
        arxiv,
        smtp,
        {"DIGEST_SECRET": SECRET, "DIGEST_PUBLIC_URL": f"http://127.0.0.1:{port}"},
    )
    digest.write_subscribers(CSV)
    # The papers of the last days, in the database (a dry run fetches and records them).
    assert digest.run("send", "--dry-run").returncode == 0
    server = Served(digest, port)
    yield server
    server.stop()


def ada_url(served: Served) -> str:
    url = preferences_url(Settings.from_env(served.digest.env()), Subscriber(ADA, ("x",)))
    assert url is not None
    return url


def row(digest: Digest) -> str:
    return digest.csv_path.read_text(encoding="utf-8").splitlines()[1]


def section_count(page: str, heading: str) -> int:
    found = re.search(rf"<strong>{re.escape(heading)}</strong>: (\d+) papers?", page)
    return int(found[1]) if found else 0


def test_preferences_url_needs_a_public_url_and_a_secret() -> None:
    ada = Subscriber(ADA, ("x",))
    assert preferences_url(Settings(), ada) is None
    assert preferences_url(Settings(public_url="https://d.example.org"), ada) is None
    url = preferences_url(Settings(public_url="https://d.example.org/digest", secret=SECRET), ada)
    assert url is not None and url.startswith("https://d.example.org/digest/preferences/")


def test_every_change_lands_in_the_file_and_bad_ones_change_nothing(served: Served) -> None:
    digest = served.digest
    url = ada_url(served)
    papers = digest.arxiv.papers
    status, page, headers = http(url)
    assert status == 200
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "<span>reward model</span>" in page
    # The preview: the papers of the last week her keyword matches (the oracle's count).
    assert section_count(page, "reward model") == len(matching(papers, REWARD_MODEL)) > 0
    # Trying a keyword previews it without saving anything.
    before = digest.csv_path.read_bytes()
    status, page, _ = http(f"{url}?value=graph+neural+network")
    assert status == 200
    assert section_count(page, "graph neural network") == len(matching(papers, GNN)) > 0
    assert digest.csv_path.read_bytes() == before

    steps = [
        ("keywords/add", "graph neural network; reasoning", "Added"),
        ("keywords/remove", "reasoning", "Removed"),
        ("exclude/add", "survey", "Added"),
        ("categories/add", "cs.LG; cs.*", "Added"),
        ("categories/remove", "cs.*", "Removed"),
        ("authors/add", "Zoë Lefèvre", "Added"),
    ]
    for path, value, answer in steps:
        status, page, _ = http(f"{url}/{path}", {"value": value})
        assert status == 200 and f"{answer} &#39;{value}&#39;" in page, (path, page[-800:])
    status, page, _ = http(f"{url}/settings", {"frequency": "weekly:mon"})  # trending unticked
    assert status == 200 and "Saved." in page
    assert row(digest) == (
        "ada@example.org,Ada,reward model; graph neural network,survey,cs.LG,Zoë Lefèvre,"
        "weekly:mon,no"
    )
    assert digest.csv_path.read_text(encoding="utf-8").splitlines()[0] == (
        "email,name,keywords,exclude,categories,authors,frequency,trending"
    )
    assert digest.run("subscribers", "check").returncode == 0
    status, page, _ = http(url)
    assert '<option value="weekly:mon" selected>' in page
    assert 'name="trending" value="yes">' in page  # shown unticked

    # Refused: each says why, and the file stays as it was.
    kept = digest.csv_path.read_bytes()
    refusals = [
        ("categories/add", "computer science", "is not an arXiv category"),
        ("keywords/add", "+++", "has no letters or digits"),
        ("authors/add", "!!!", "has no letters"),
        ("exclude/remove", "nothing like this", "has no exclude phrase"),
        ("keywords/remove", "reward model; graph neural network", "your only keyword"),
    ]
    for path, value, reason in refusals:
        status, page, _ = http(f"{url}/{path}", {"value": value})
        assert status == 409 and reason in page, (path, page[-800:])
    status, page, _ = http(f"{url}/settings", {"frequency": "fortnightly"})
    assert status == 409 and "is not a frequency" in page
    assert digest.csv_path.read_bytes() == kept

    # A token for another page, or forged, is refused.
    token = url.rsplit("/", 1)[1]
    for bad in (url.replace(token, token[:-2] + "xx"), url.replace("/preferences/", "/x/")):
        assert http(bad)[0] in (400, 404)
    unsubscribe_token = re.search(r'action="/unsubscribe/([^"]+)"', http(url)[1])
    assert unsubscribe_token is not None
    assert http(f"{served.url}/preferences/{unsubscribe_token[1]}")[0] == 400

    # The unsubscribe button works from this page too.
    status, page, _ = http(
        f"{served.url}/unsubscribe/{unsubscribe_token[1]}", {"List-Unsubscribe": "One-Click"}
    )
    assert status == 200 and "You are unsubscribed." in page
    assert digest.query("SELECT subscriber FROM suppressions") == [(ADA,)]
    assert "You are unsubscribed: no digests are sent" in http(url)[1]
