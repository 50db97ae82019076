"""The "More like this" / "Not for me" links (issue 13): `digest serve` as a real process on
127.0.0.1 over real HTTP, the feedback table of the real database, subscribers.csv on disk.

A GET (what a mail scanner does) changes nothing; the POST records; undo and "your likes"
work; forged or altered tokens are refused with a 400 and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Digest
from itsdangerous import URLSafeSerializer
from markupsafe import escape
from standins import ArxivStandin, SmtpStandin, base_id, free_port
from test_unsubscribe import Served, http

from digest import store
from digest.config import Settings
from digest.feedback import feedback_urls, likes_url
from digest.fetch import fetch_ids
from digest.subscribers import load
from digest.tokens import make_token

ADA = "ada@example.org"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def served(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[tuple[Digest, list]]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    digest = Digest(tmp_path, arxiv, smtp, {"DIGEST_PUBLIC_URL": public, "DIGEST_SECRET": SECRET})
    ids = [base_id(p["id"]) for p in arxiv.papers[:4]]
    digest.write_subscribers(
        f"email,name,keywords,likes\n{ADA},Ada,reward model,{ids[0]}\n"
        "grace@example.org,Grace,graph neural network,\n"
    )
    papers = fetch_ids(ids, url=arxiv.url, delay=0, timeout=5).papers
    db = store.open_db(digest.db_path)
    store.save_papers(db, papers)
    db.conn.close()
    server = Served(digest, port)
    try:
        yield digest, sorted(papers, key=lambda p: ids.index(p.id))
    finally:
        server.stop()


def rows(digest: Digest) -> list[tuple[object, ...]]:
    return digest.query("SELECT subscriber, paper_id, kind, source FROM feedback ORDER BY rowid")


def test_get_shows_post_records_undo_and_likes(served: tuple[Digest, list]) -> None:
    digest, papers = served
    settings = Settings.from_env(digest.env())
    [ada, _] = load(digest.csv_path)[0]
    more, less = feedback_urls(settings, ada, papers[1].id) or ("", "")
    assert more.startswith(settings.public_url + "/feedback/") and less != more

    # A GET shows the paper (escaped) and one button, and records nothing.
    status, page, headers = http(more)
    assert status == 200
    assert str(escape(papers[1].title)) in page
    assert page.count("<button") == 1 and ">More like this</button>" in page
    assert headers["Referrer-Policy"] == "no-referrer"
    assert http(less)[0] == 200 and ">Not for me</button>" in http(less)[1]
    assert rows(digest) == []

    # The POST records it; the page offers undo and links to "your likes".
    status, page, _ = http(more, {})
    assert status == 200 and "Thanks: papers like this one will be recommended" in page
    assert rows(digest) == [(ADA, papers[1].id, "like", "web")]
    assert 'action="/feedback/' in page and "/undo" in page and ">Undo</button>" in page
    assert 'href="/likes/' in page
    assert http(more)[1].count(">More like this</button>") == 0  # done: no second button
    status, page, _ = http(more, {})  # again: still one row
    assert rows(digest) == [(ADA, papers[1].id, "like", "web")]

    # Undo takes it back.
    status, page, _ = http(more + "/undo", {})
    assert status == 200 and "Undone." in page
    assert rows(digest) == []

    # "Not for me" on another paper; then liking the same paper replaces the opinion.
    _, less2 = feedback_urls(settings, ada, papers[2].id) or ("", "")
    http(less2, {})
    assert rows(digest) == [(ADA, papers[2].id, "dislike", "web")]
    more2, _ = feedback_urls(settings, ada, papers[2].id) or ("", "")
    http(more2, {})
    assert rows(digest) == [(ADA, papers[2].id, "like", "web")]

    # "Your likes": the web's like and the one from the likes column; removing the latter
    # edits subscribers.csv (only Ada's likes cell).
    mine = likes_url(settings, ada) or ""
    status, page, _ = http(mine)
    assert status == 200
    assert f"https://arxiv.org/abs/{papers[2].id}" in page
    assert f"https://arxiv.org/abs/{papers[0].id}" in page
    assert page.count(">Remove</button>") == 2
    status, page, _ = http(mine + "/remove", {"paper": papers[0].id})
    assert status == 200 and "Removed from your likes." in page
    assert digest.csv_path.read_text(encoding="utf-8") == (
        f"email,name,keywords,likes\n{ADA},Ada,reward model,\n"
        "grace@example.org,Grace,graph neural network,\n"
    )
    status, page, _ = http(mine + "/remove", {"paper": papers[2].id})
    assert "Removed from your likes." in page and rows(digest) == []
    assert "No liked papers yet." in http(mine)[1]
    status, page, _ = http(mine + "/remove", {"paper": "2401.00001"})
    assert "That paper is not one of your likes." in page


def test_forged_and_altered_tokens_are_refused(served: tuple[Digest, list]) -> None:
    digest, papers = served
    settings = Settings.from_env(digest.env())
    [ada, _] = load(digest.csv_path)[0]
    more, _ = feedback_urls(settings, ada, papers[1].id) or ("", "")
    base, token = more.rsplit("/", 1)
    payload, _, signature = token.rpartition(".")
    other_key = URLSafeSerializer("not-the-secret-at-all", salt="digest.feedback")
    forged = [
        f"{base}/{payload}.{signature[:-2]}xx",  # altered signature
        f"{base}/{payload[:-1]}A.{signature}",  # altered payload
        f"{base}/" + other_key.dumps([ADA, papers[1].id, "like"]),  # not our key
        f"{base}/" + make_token(SECRET, ADA),  # an unsubscribe token: another purpose
        f"{base}/garbage",
        f"{settings.public_url}/likes/{token}",  # a feedback token is no likes token
        f"{settings.public_url}/likes/garbage",
    ]
    for bad in forged:
        for data in (None, {}, {"paper": papers[1].id}):
            url = bad + "/remove" if "/likes/" in bad and data is not None else bad
            status, page, _ = http(url, data)
            assert status == 400, (url, data)
            assert "This link is not valid" in page
        status, _, _ = http(bad + "/undo", {})
        assert status in (400, 404, 405)
    assert rows(digest) == []


def test_no_links_without_public_url_and_secret(served: tuple[Digest, list]) -> None:
    digest, papers = served
    [ada, _] = load(digest.csv_path)[0]
    env = digest.env()
    for missing in ("DIGEST_PUBLIC_URL", "DIGEST_SECRET"):
        settings = Settings.from_env({k: v for k, v in env.items() if k != missing})
        assert feedback_urls(settings, ada, papers[0].id) is None
        assert likes_url(settings, ada) is None
