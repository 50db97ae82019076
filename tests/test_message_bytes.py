"""`mailer.message_bytes` writes the same email as `build_message` (the email package, kept as
the reference), directly as CRLF bytes: for hostile inputs both parse to the same headers and
the same decoded text and HTML parts, and every line is legal on the wire."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from pathlib import Path

import pytest
from helpers import SENDER, Digest, messages_to, parts
from standins import ArxivStandin, SmtpStandin

from digest.mailer import build_message, message_bytes
from digest.models import RenderedEmail

WHEN = datetime(2026, 11, 29, 7, 0, 5, tzinfo=UTC)
LONG_WORD = "x" * 2000
HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
)

HOSTILE_TEXT = (
    "Plain line\n"
    ".\n"
    "..two dots\n"
    ".leading dot\n"
    "From the start of a line\n"
    "From\n"
    "a=b, c==d, =3D already, =?utf-8?q?not_a_word?=\n"
    "trailing spaces   \n"
    "trailing tab\t\n"
    f"{LONG_WORD}\n"
    f"{'word ' * 60}\n"
    f".{'y' * 74}\n"
    f"From {'z' * 80}\n"
    "Zoë Lefèvre, Ŝtefan, 数学, emoji 🎉🧪 at the end 🎉\n"
    "windows\r\nline\rendings\r\n"
    "\n"
    "last line without newline"
)
HOSTILE_HTML = (
    '<!doctype html>\n<html lang="en"><body style="color:#333">\n'
    f'<p class="a=b">{LONG_WORD}</p>\n'
    ".<b>dot first</b>\n"
    "From here on\n"
    "<p>Zoë 🎉 =?utf-8?b?Zm9v?= &amp; &lt;</p>   \n"
    f"<p>{'<span>é</span>' * 200}</p>"
)


def rendered(subject: str, text: str = HOSTILE_TEXT, html: str = HOSTILE_HTML) -> RenderedEmail:
    return RenderedEmail(subject=subject, html=html, text=text, paper_ids=("2401.00001",))


def cut(text: str, sizes: tuple[int, ...] = (1, 75, 76, 77, 0, 3, 150, 40, 74)) -> list[str]:
    """`text` in parts of awkward sizes (empty ones too), as an assembled email is joined."""
    out, at, n = [], 0, 0
    while at < len(text):
        size = sizes[n % len(sizes)]
        out.append(text[at : at + size])
        at, n = at + size, n + 1
    return out


def joined(text: str, html: str, text_sizes: tuple[int, ...] | None = None) -> RenderedEmail:
    """An email whose bodies come as parts, each quoted-printable encoded on its own."""
    text_parts = cut(text, text_sizes) if text_sizes else cut(text)
    return RenderedEmail(
        subject="Joined",
        html=html,
        text=text,
        paper_ids=("2401.00001",),
        html_parts=tuple(cut(html)),
        text_parts=tuple(text_parts),
    )


PLAIN_TEXT = HOSTILE_TEXT.replace("\r\n", "\n").replace("\r", "\n")


CASES = {
    "plain": (rendered("arXiv digest 29 Nov 2026: 3 new papers on reward model"), {}),
    "long-subject": (
        rendered("arXiv digest 29 Nov 2026: 30 new papers on " + ", ".join(["reward model"] * 30)),
        {},
    ),
    "non-ascii-subject": (
        rendered("arXiv digest: 3 new papers on Zoë Lefèvre, 数学 and 🎉 " * 6),
        {"sender": "Zoë's digest — arXiv <digest@example.org>"},
    ),
    "crlf-in-subject-and-name": (
        rendered("Injected\r\nBcc: victim@example.org\r\n\r\nbody"),
        {"sender": "Evil\r\nBcc: x@example.org <digest@example.org>"},
    ),
    "word-longer-than-a-line": (rendered("digest " + LONG_WORD), {}),
    "encoded-word-look-alike": (rendered("=?utf-8?q?hello?= and a=b ==="), {}),
    "one-click": (
        rendered("Subject"),
        {"unsubscribe_url": "https://digest.example.org/u/" + "t" * 120 + "?a=1&b=2"},
    ),
    "odd-recipient": (rendered("Subject"), {"to": "Ada Lovelace <ADA+digest@Example.org>"}),
    "empty-bodies": (rendered("Subject", text="", html=""), {}),
    # Assembled emails: each part (a paper block, a layout's literal text) encoded once.
    "joined-from-parts": (joined(PLAIN_TEXT, HOSTILE_HTML), {}),
    "joined-parts-ending-lines": (
        joined(PLAIN_TEXT + "end\n", HOSTILE_HTML + " \n.", (11, 1, 76, 2)),
        {},
    ),
    "joined-with-carriage-returns": (joined(HOSTILE_TEXT, HOSTILE_HTML + "\r\n"), {}),
    "joined-full-lines": (  # a part filling its last line; the next starting with a dot
        RenderedEmail(
            subject="Joined",
            html="x" * 75 + "." + ".From y" + "z" * 74 + "=" + "q",
            text="t",
            paper_ids=("2401.00001",),
            html_parts=("x" * 75 + ".", ".From y", "z" * 74 + "=", "q"),
            text_parts=("t",),
        ),
        {},
    ),
}


def both(case: str) -> tuple[bytes, bytes]:
    content, extra = CASES[case]
    args: dict[str, object] = {
        "sender": SENDER,
        "to": "ada@example.org",
        "message_id": "<1700000000.1.digest@example.org>",
        "when": WHEN,
        **extra,
    }
    reference = build_message(content, **args).as_bytes(policy=SMTP)  # type: ignore[arg-type]
    return reference, message_bytes(content, **args)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_email_as_the_email_package_builds(case: str) -> None:
    reference, ours = both(case)
    expected, got = parse(reference), parse(ours)

    assert list(got) == [*(k for k in expected if k != "Content-Type"), "Content-Type"]
    for name in HEADERS:
        assert got.get_all(name) == expected.get_all(name), name
    assert got.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in got.iter_parts()] == ["text/plain", "text/html"]
    for part in got.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert parts(got) == parts(expected)
    assert not got.defects and all(not p.defects for p in got.iter_parts())


@pytest.mark.parametrize("case", list(CASES))
def test_every_line_ends_in_crlf_and_fits_the_wire(case: str) -> None:
    _, ours = both(case)

    assert ours.endswith(b"\r\n")
    lines = ours.split(b"\r\n")[:-1]
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(len(line) <= 998 for line in lines)
    assert ours.isascii()
    head, _, body = ours.partition(b"\r\n\r\n")
    for line in body.split(b"\r\n"):  # quoted-printable lines, and nothing an mbox mangles
        assert len(line) <= 76, line
        assert not line.startswith((b".", b"From ")), line
    for line in head.split(b"\r\n"):  # folded at spaces; longer only for one unsplittable word
        assert len(line) <= 78 or line.strip().count(b" ") <= 1, line


def test_crlf_in_the_subject_and_name_never_makes_a_header() -> None:
    _, ours = both("crlf-in-subject-and-name")
    message = parse(ours)

    assert message.get_all("Bcc") is None
    assert message["Subject"] == "Injected Bcc: victim@example.org body"


def test_the_decoded_text_is_exactly_what_was_rendered_with_unix_line_endings() -> None:
    _, ours = both("plain")
    text, html = (body.replace("\r\n", "\n") for body in parts(parse(ours)))

    assert text == "\n".join(HOSTILE_TEXT.splitlines()) + "\n"
    assert html == HOSTILE_HTML + "\n"


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {})
    installation.write_subscribers(
        "email,name,keywords\n"
        'ada@example.org,"Zoë ""Ada"" Lefèvre",reward model; écriture; reasoning\n'
    )
    return installation


def test_what_arrives_at_the_mail_server_parses_right(digest: Digest) -> None:
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    [arrived] = [m for m in digest.smtp.messages if "ada@example.org" in m.rcpt_tos]
    assert b"\r\n" in arrived.raw and b"\n" not in arrived.raw.replace(b"\r\n", b"")
    [message] = messages_to(digest.smtp, "ada@example.org")
    assert message["To"] == "ada@example.org"
    assert message["From"] == SENDER
    assert message["Subject"].startswith("arXiv digest ")
    assert "reward model" in message["Subject"]
    assert message["Message-ID"]
    [(stored,)] = digest.query("SELECT message_id FROM emails WHERE status = 'sent'")
    assert message["Message-ID"] == stored
    text, html = parts(message)
    assert "== reward model (" in text
    assert html.lstrip().lower().startswith("<!doctype html>")
