"""A pending email with recommendations, left by a real `digest send` killed mid-send, goes out
again with the next run as the same email: same Message-ID, same papers in the same order, the
same "Recommended for you" section with the same why lines; and what the outbox records as
delivered is what the email shows.

The kill comes at the worst moment (test_crash.py's gate): the mail server has taken Ada's
email, and its 250 never reached `digest send`. So the reader has the first copy, and the copy
the next run sends is compared with it byte for byte in its text and HTML parts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import abs_ids, messages_to, parts
from standins import ArxivStandin, SmtpStandin
from test_crash import Gate, gate_smtp, kill, start
from test_send_recommended import ADA, GRACE, HEADING, SECRET, install, likes_of, section


def in_order(text: str) -> list[str]:
    """The ids of the papers of an email's text part, in its order."""
    return re.findall(r"Abstract: https://arxiv\.org/abs/([0-9]{4}\.[0-9]{4,5})", text)


def test_a_resumed_email_keeps_its_recommendations_and_its_order(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    env = {"DIGEST_PUBLIC_URL": "http://127.0.0.1:9", "DIGEST_SECRET": SECRET}
    digest = install(tmp_path / "d", arxiv, smtp, env, likes_of(arxiv.papers))
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: Ada's email first
    gate = Gate("accepted", 0)
    gate_smtp(smtp, gate)
    process = start(digest, "send")
    assert gate.reached.wait(60), process.communicate()
    kill(process)  # the server has Ada's email; the run never heard its 250
    gate.release()

    [first] = messages_to(smtp, ADA)
    message_id = first["Message-ID"]
    [(status, committed)] = digest.query(
        "SELECT status, papers FROM emails WHERE subscriber = ?", [ADA]
    )
    assert status == "pending"
    first_text, first_html = parts(first)
    recommended = section(first_text)
    assert recommended, "the first attempt has a Recommended for you section"
    shown = abs_ids(first_text)
    assert json.loads(str(committed)) == in_order(first_text)  # the outbox: what it shows

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "(left pending by an earlier run, same Message-ID)" in result.stdout
    copies = [m for m in messages_to(smtp, ADA) if m["Message-ID"] == message_id]
    assert len(copies) == 2  # the first attempt and the resumed one
    again = copies[1]
    text, html = parts(again)
    assert section(text) == recommended
    assert text == first_text and html == first_html  # the same email, in the same order
    [(status, papers, why)] = digest.query(
        "SELECT status, papers, recommended FROM emails WHERE message_id = ?", [message_id]
    )
    assert status == "sent" and json.loads(str(papers)) == in_order(text)
    assert list(json.loads(str(why))) == recommended
    assert all(f"  Why: {line}" in text for line in json.loads(str(why)).values())
    # Whatever else this run sent her (more recommendations, new papers) repeats none of them.
    others = [m for m in messages_to(smtp, ADA) if m["Message-ID"] != message_id]
    assert all(not abs_ids(parts(m)[0]) & shown for m in others)
    assert shown <= digest.delivered(ADA)
    assert messages_to(smtp, GRACE)  # the run went on to the others

    # The next run recommends none of them again: they were delivered.
    smtp.messages.clear()
    assert digest.run("send").returncode == 0
    later = [section(parts(m)[0]) for m in messages_to(smtp, ADA)]
    assert not set(recommended) & {pid for ids in later for pid in ids}
    assert HEADING in first_text
