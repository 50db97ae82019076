"""SpamAssassin as a receiving mail server runs it: Debian's `spamassassin -L -t` (local rules
only: no network, no DNS), on real messages.

`score(message)` -> (total points, names of the rules that fired); `scores(messages)` scores
many in one `spamassassin --mbox` process (it spends seconds loading its rules, so the tests
pay that once). `rules(...)` gives each rule's points.

Never runs `sa-update`: without network it leaves an empty rules folder and spamassassin
stops working; Debian's package ships the rules it uses (/usr/share/spamassassin). Bayes and
auto-learning are off and the user preferences file is an empty temporary one, so a score
depends only on the message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

# Received lines a receiving server would add, for scoring a message as it arrives through a
# relay: one with reverse DNS, and one without (the relay shows as "unknown").
RELAY_WITH_RDNS = (
    b"Received: from mail.example.org (mail.example.org [93.184.216.34])\n"
    b"\tby mx.example.net (Postfix) with ESMTPS id 4Q1xYz2AbC\n"
    b"\tfor <reader@example.net>; WHEN\n"
)
RELAY_WITHOUT_RDNS = (
    b"Received: from mail.example.org (unknown [93.184.216.34])\n"
    b"\tby mx.example.net (Postfix) with ESMTPS id 4Q1xYz2AbD\n"
    b"\tfor <reader@example.net>; WHEN\n"
)
_SEPARATOR = re.compile(rb"^From digest-spam-test-(\d+)@example\.invalid .*$", re.M)
_OPTIONS = (
    "report_safe 0",  # headers on the message itself, never wrapped in a report
    "use_bayes 0",
    "bayes_auto_learn 0",
    "add_header all Rules _TESTSSCORES(,)_",
    "add_header all Total _SCORE_",
)


@dataclass(frozen=True)
class Score:
    total: float
    rules: dict[str, float]  # every rule that fired, with its points


def spamassassin() -> str:
    found = shutil.which("spamassassin")
    if not found:
        raise RuntimeError(
            "spamassassin not found: install Debian's package (apt-get install spamassassin; "
            ".ci/run does). Do not run sa-update."
        )
    return found


def scores(messages: Sequence[bytes], timeout: float = 300) -> list[Score]:
    """Each message's score, from one `spamassassin -L -t --mbox` run, in order."""
    if not messages:
        return []
    box = bytearray()
    for n, message in enumerate(messages):
        body = message.replace(b"\r\n", b"\n")
        if re.search(rb"^From ", body, re.M):
            raise ValueError(f"message {n} has a line starting 'From ': not mbox-safe")
        box += b"From digest-spam-test-%d@example.invalid Tue Dec  1 07:00:05 2026\n" % n
        box += body if body.endswith(b"\n") else body + b"\n"
        box += b"\n"
    with tempfile.TemporaryDirectory() as home:
        prefs = Path(home) / "user_prefs"
        prefs.write_text("")
        command = [spamassassin(), "-L", "-t", "--mbox", "-p", str(prefs)]
        for option in _OPTIONS:
            command += ["--cf", option]
        result = subprocess.run(
            command,
            input=bytes(box),
            capture_output=True,
            timeout=timeout,
            check=False,
            env={"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"spamassassin failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    return _parse(result.stdout, len(messages))


def _parse(out: bytes, count: int) -> list[Score]:
    starts = list(_SEPARATOR.finditer(out))
    found: dict[int, Score] = {}
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(out)
        head = out[start.end() : end].split(b"\n\n", 1)[0]
        head = re.sub(rb"\n[ \t]+", b" ", head).decode("utf-8", "replace")  # unfold
        total = re.search(r"^X-Spam-Total: (-?[\d.]+)$", head, re.M)
        listed = re.search(r"^X-Spam-Rules: ?(.*)$", head, re.M)
        if total is None or listed is None:
            raise RuntimeError(f"spamassassin gave no score for message {start[1].decode()}")
        rules = {}
        for item in filter(None, (x.strip() for x in listed[1].split(","))):
            name, _, points = item.partition("=")
            rules[name] = float(points)
        found[int(start[1])] = Score(float(total[1]), rules)
    if sorted(found) != list(range(count)):
        raise RuntimeError(f"spamassassin scored {len(found)} of {count} messages")
    return [found[n] for n in range(count)]


def score(message: bytes) -> tuple[float, list[str]]:
    """(total points, names of the rules that fired) for one message."""
    result = scores([message])[0]
    return result.total, sorted(result.rules)


def rules(message: bytes) -> dict[str, float]:
    """Each rule that fired on `message`, with its points."""
    return scores([message])[0].rules


def through_relay(message: bytes, received: bytes) -> bytes:
    """`message` as a receiving server stores it: its Received line on top, stamped a second
    after the message's own Date (as when the relay took it at once)."""
    found = re.search(rb"^Date: (.+?)\r$", message, re.M)
    sent = parsedate_to_datetime(found[1].decode()) if found else datetime.now(UTC)
    when = format_datetime((sent + timedelta(seconds=1)).astimezone(UTC)).encode()
    return received.replace(b"WHEN", when).replace(b"\n", b"\r\n") + message
