"""Likes from the start (issue 13): the `likes` column of subscribers.csv, `digest subscribers
like/unlike` through the real CLI, `check` naming a bad id, and the feedback table they fill."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Digest
from standins import ArxivStandin, SmtpStandin

from digest import feedback_store, store
from digest.subscribers import load

ORIGINAL = (
    "email,name,keywords,team\r\n"
    'ada@example.org,"Lovelace, Ada",reward model,"core, infra"\r\n'
    "grace@example.org,Grace,graph neural network,infra\r\n"
)


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {})
    installation.csv_path.write_bytes(ORIGINAL.encode())
    return installation


def feedback_rows(digest: Digest) -> list[tuple[object, ...]]:
    return digest.query("SELECT subscriber, paper_id, kind, source FROM feedback ORDER BY rowid")


def test_like_and_unlike_edit_the_column_and_the_table(digest: Digest) -> None:
    liked = digest.run("subscribers", "like", "ADA@example.org", "2506.13741v2", "2401.00001")
    assert liked.returncode == 0, liked.stderr
    assert liked.stdout == "ADA@example.org likes: 2506.13741; 2401.00001\n"
    # The new column is added at the end; Grace's row keeps its exact text.
    assert digest.csv_path.read_bytes().decode() == (
        "email,name,keywords,team,likes\r\n"
        'ada@example.org,"Lovelace, Ada",reward model,"core, infra",2506.13741; 2401.00001\r\n'
        "grace@example.org,Grace,graph neural network,infra\r\n"
    )
    assert feedback_rows(digest) == [
        ("ada@example.org", "2506.13741", "like", "cli"),
        ("ada@example.org", "2401.00001", "like", "cli"),
    ]
    # Liking again, in another spelling, changes nothing.
    again = digest.run("subscribers", "like", "ada@example.org", "https://arxiv.org/abs/2401.00001")
    assert again.stdout == "ada@example.org likes: 2506.13741; 2401.00001\n"

    gone = digest.run("subscribers", "unlike", "ada@example.org", "2506.13741v1")
    assert (gone.returncode, gone.stdout) == (0, "ada@example.org likes: 2401.00001\n")
    assert feedback_rows(digest) == [("ada@example.org", "2401.00001", "like", "cli")]
    [ada, grace] = load(digest.csv_path)[0]
    assert (ada.likes, grace.likes) == (("2401.00001",), ())


def test_bad_ids_are_refused_with_the_line_and_nothing_is_written(digest: Digest) -> None:
    refused = digest.run("subscribers", "like", "ada@example.org", '2401.00001") OR ti:x')
    assert refused.returncode == 1
    assert refused.stderr == (
        "Error: '2401.00001\") OR ti:x' is not an arXiv id; write ids such as '2506.13741' "
        "or '2506.13741v2'\n"
    )
    assert digest.csv_path.read_bytes().decode() == ORIGINAL
    unknown = digest.run("subscribers", "like", "nobody@example.org", "2401.00001")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "Error: nobody@example.org is not in subscribers.csv; see `digest subscribers list`\n"
    )

    digest.csv_path.write_text(
        "email,keywords,likes\n"
        "ada@example.org,reward model,2401.00001v3; 2506.13741\n"
        "grace@example.org,graph neural network,2401.00001; 24.01\n",
        encoding="utf-8",
    )
    check = digest.run("subscribers", "check")
    assert check.returncode == 1
    assert check.stderr == (
        "Error: subscribers.csv:3: like '24.01' of grace@example.org is not an arXiv id; "
        "write ids such as '2506.13741' or '2506.13741v2', separated by ';'\n"
    )
    before = digest.csv_path.read_bytes()
    edit = digest.run("subscribers", "unlike", "grace@example.org", "2401.00001")
    assert edit.returncode == 1
    assert edit.stderr.startswith("Error: subscribers.csv:3: like '24.01' is not an arXiv id")
    assert digest.csv_path.read_bytes() == before


def test_csv_likes_sync_into_the_table_without_undoing_web_opinions(tmp_path: Path) -> None:
    db = store.open_db(tmp_path / "digest.db")
    feedback_store.record(db, "ada@example.org", "2401.00003", "dislike", "web")
    feedback_store.record(db, "ada@example.org", "2401.00004", "like", "web")
    feedback_store.sync_csv_likes(db, {"ada@example.org": ["2401.00001", "2401.00003"]})
    mine = feedback_store.feedback_many(db, ["ada@example.org"])["ada@example.org"]
    # The web's "not for me" stands against the file; the file's like is added.
    assert sorted(mine.liked) == ["2401.00001", "2401.00004"]
    assert mine.disliked == ("2401.00003",)
    # A like removed from the file by hand is forgotten; the web's like stays.
    feedback_store.sync_csv_likes(db, {"ada@example.org": []})
    mine = feedback_store.feedback_many(db, ["ada@example.org"])["ada@example.org"]
    assert mine.liked == ("2401.00004",)


def test_feedback_of_more_readers_than_one_query_binds(tmp_path: Path) -> None:
    """`feedback_many` reads IN_CHUNK readers per query: 1,201 readers take three, and each
    reader's opinions come back complete."""
    db = store.open_db(tmp_path / "digest.db")
    keys = [f"reader{n:04d}@example.org" for n in range(2 * store.IN_CHUNK + 201)]
    likes = {key: [f"2401.{n:05d}", "2401.99999"] for n, key in enumerate(keys)}
    feedback_store.sync_csv_likes(db, likes)
    feedback_store.record(db, keys[-1], "2401.88888", "dislike", "web")
    found = feedback_store.feedback_many(db, ["nobody@example.org", *keys])
    assert sorted(found) == keys
    assert all(sorted(found[key].liked) == sorted(likes[key]) for key in keys)
    assert found[keys[-1]].disliked == ("2401.88888",)
    assert found[keys[0]].disliked == ()
