"""The pure middle: matching rules, query building, shortening, settings."""

from __future__ import annotations

import pytest

from digest.config import Settings
from digest.errors import ConfigError
from digest.fetch import build_queries
from digest.match import fts_phrase, merge_spans, needs_literal, spans_from_highlight
from digest.models import split_version
from digest.render import author_line, highlight, shorten
from digest.subscribers import parse_keywords


def test_keywords_become_plain_phrases() -> None:
    assert fts_phrase("Reward Model") == '"reward model"'
    assert fts_phrase('a" OR "b') == '"a or b"'
    assert fts_phrase("NEAR(x y)") == '"near x y"'
    assert fts_phrase("***") is None
    assert needs_literal("C++") and needs_literal("C#")
    assert not needs_literal("self-attention") and not needs_literal("O'Brien")


def test_queries_pack_keywords_and_never_pass_syntax() -> None:
    queries = build_queries(["reward model", 'x") OR au:"y', "Reward  model"])
    assert queries == [
        'ti:"reward model" OR abs:"reward model" OR ti:"x or au y" OR abs:"x or au y"'
    ]
    many = build_queries([f"keyword number {i}" for i in range(200)], max_chars=1500)
    assert 1 < len(many) < 200
    assert all(len(q) <= 1500 for q in many)
    assert sum(q.count("ti:") for q in many) == 200


def test_highlight_spans_round_trip() -> None:
    marked = "A \x02reward model\x03 and \x02reward models\x03."
    spans = spans_from_highlight(marked)
    text = marked.replace("\x02", "").replace("\x03", "")
    assert [text[a:b] for a, b in spans] == ["reward model", "reward models"]
    assert merge_spans([(0, 3), (5, 9)], [(2, 6)]) == ((0, 9),)
    assert str(highlight("a <b> c", [(2, 5)])) == 'a <span class="hl">&lt;b&gt;</span> c'
    assert str(highlight("abc", [(1, 99)])) == 'a<span class="hl">bc</span>'


def test_shortening() -> None:
    assert shorten("one two three", 100) == "one two three"
    assert shorten("one two three four", 9) == "one two"
    assert author_line(["A", "B"]) == "A, B"
    assert author_line([str(i) for i in range(8)]) == "0, 1, 2, 3, 4 et al. (8 authors)"


def test_ids_lose_their_version() -> None:
    assert split_version("2401.00001v2") == ("2401.00001", 2)
    assert split_version("quant-ph/0201082v1") == ("quant-ph/0201082", 1)
    assert split_version("2401.00001") == ("2401.00001", 1)


def test_keyword_cells() -> None:
    assert parse_keywords(" reward  model ;Reasoning; ;reward model;") == (
        "reward model",
        "Reasoning",
    )


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {"DIGEST_SMTP_PORT": "2525", "DIGEST_SMTP_SECURITY": "SSL", "DIGEST_SEND_AT": "7:05"}
    )
    assert (settings.smtp_port, settings.smtp_security, settings.send_at) == (2525, "ssl", "07:05")
    assert Settings.from_env({"DIGEST_DB": "x.db"}, db_path=None).db_path.name == "x.db"
    with pytest.raises(ConfigError, match="DIGEST_TIMEZONE='Mars/Base' is not valid"):
        Settings.from_env({"DIGEST_TIMEZONE": "Mars/Base"})
    assert "hunter2" not in repr(Settings.from_env({"DIGEST_SMTP_PASSWORD": "hunter2"}))


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("digest@example.org", "arXiv digest <digest@example.org>"),
        ("<digest@example.org>", "arXiv digest <digest@example.org>"),
        ("Lab papers <papers@lab.example>", "Lab papers <papers@lab.example>"),
        ('"Zoë, digest" <d@example.org>', '"Zoë, digest" <d@example.org>'),
    ],
)
def test_from_gets_a_display_name_when_it_has_none(given: str, used: str) -> None:
    assert Settings.from_env({"DIGEST_FROM": given}).from_addr == used


def test_message_ids_do_not_contain_the_from_address() -> None:
    from digest.mailer import new_message_id

    ids = {new_message_id("arXiv digest <digest@example.org>") for _ in range(100)}
    assert len(ids) == 100
    for message_id in ids:
        assert message_id.startswith("<") and message_id.endswith("@example.org>")
        assert "digest@example.org" not in message_id


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_line_starting_with_a_dot_arrives_as_written(pipelining: bool) -> None:
    # The wire-ready check (no line starting with ".") lets a message go as it is; one with
    # such a line takes smtplib's dot-stuffing. Either way the server gets the same lines.
    from standins import SmtpStandin

    from digest.smtp import Messenger, wire_ready

    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\n\r\n"
    plain = head + b"line one\r\n=2E not a dot line\r\nend\r\n"
    dotted = head + b"line one\r\n.a dot line\r\n..two\r\n.\r\nend\r\n"
    assert wire_ready(plain) and not wire_ready(dotted)
    assert not wire_ready(b".starts\r\n") and not wire_ready(b"no line end")
    with SmtpStandin(pipelining=pipelining) as smtp:
        env = {
            "DIGEST_SMTP_HOST": smtp.host,
            "DIGEST_SMTP_PORT": str(smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_FROM": "a@example.org",
        }
        with Messenger(Settings.from_env(env)) as messenger:
            for data in (plain, dotted):
                assert messenger.send(data, "b@example.org").accepted
        assert [m.raw for m in smtp.messages] == [plain, dotted]
