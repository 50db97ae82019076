"""Unsubscribe that sticks: the links in real emails, `digest serve` as a real process on
127.0.0.1 spoken to over real HTTP, the suppression in the database, `digest send` afterwards,
and the page rendered by a real headless browser; and the links' tokens, made cheaply, byte for
byte what itsdangerous makes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from browser import browser, dump_dom, png_size, screenshot  # noqa: F401  (browser: fixture)
from helpers import Digest, abs_ids, messages_to, parts
from standins import ArxivStandin, SmtpStandin, free_port

ADA = "ada@example.org"
GRACE = "grace@example.org"
SECRET = "test-secret-0123456789abcdef"
CSV = (
    "email,name,keywords,team\n"
    "ada@example.org,Ada,reward model; reasoning; language model,core\n"
    "grace@example.org,Grace,graph neural network,infra\n"
)


class Served:
    """`digest serve` running as a subprocess on 127.0.0.1."""

    def __init__(self, digest: Digest, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=digest.env(),
            cwd=digest.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it listens (or dies)
        if not line.startswith("Serving on "):
            self.stop()
            raise AssertionError(f"digest serve did not start: {line!r} {self.stderr}")
        self.url = line.split()[-1]
        self.stderr = ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        _, self.stderr = self.process.communicate(timeout=30)


def http(url: str, data: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of a GET, or of a form POST when `data` is given."""
    body = urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture
def setup(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Iterator[tuple[Digest, str]]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    digest = Digest(
        tmp_path,
        arxiv,
        smtp,
        {"DIGEST_PUBLIC_URL": public, "DIGEST_SECRET": SECRET, "DIGEST_HTML_BUDGET": "5000000"},
    )
    digest.write_subscribers(CSV)
    served = Served(digest, port)
    try:
        assert served.url == public
        yield digest, public
    finally:
        served.stop()


def now() -> datetime:
    return datetime.now(UTC)


def suppressions(digest: Digest) -> list[tuple[object, ...]]:
    return digest.query("SELECT subscriber, source FROM suppressions")


def test_one_click_unsubscribe_sticks_until_resubscribe(setup: tuple[Digest, str]) -> None:
    digest, public = setup
    # Day one: only the older papers exist; the newer ones appear after she unsubscribes.
    everything = digest.arxiv.papers
    digest.arxiv.papers = [p for p in everything if p["published"] < now() - timedelta(hours=40)]
    first = digest.run("send")
    assert first.returncode == 0, first.stderr
    [email] = messages_to(digest.smtp, ADA)
    first_ids = abs_ids(parts(email)[1])
    assert first_ids

    # The email's headers and both parts carry Ada's personal link (RFC 8058 one-click).
    links = re.findall(r"<([^>]+)>", email["List-Unsubscribe"])
    assert links[0].startswith(f"{public}/unsubscribe/")
    assert links[1] == "mailto:digest@example.org?subject=unsubscribe"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = links[0]
    text, html = parts(email)
    assert f"Unsubscribe or remove a keyword: {link}" in text
    assert f'href="{link}"' in html
    [to_grace] = messages_to(digest.smtp, GRACE)
    assert re.findall(r"<([^>]+)>", to_grace["List-Unsubscribe"])[0] != link

    # A GET (what a link scanner does) shows the page and changes nothing.
    status, page, headers = http(link)
    assert status == 200
    assert ADA in page
    for keyword in ("reward model", "reasoning", "language model"):
        assert f"<span>{keyword}</span>" in page
    assert '<button type="submit" class="danger">Unsubscribe</button>' in page
    assert headers["Referrer-Policy"] == "no-referrer"
    assert suppressions(digest) == []

    # Forged and altered tokens are refused, by GET and by POST, and change nothing.
    token = link.rsplit("/", 1)[1]
    payload, _, signature = token.rpartition(".")
    from itsdangerous import URLSafeSerializer

    forged = [
        f"{public}/unsubscribe/{payload}.{signature[:-2]}xx",  # altered signature
        f"{public}/unsubscribe/{token.replace(payload, payload[:-1] + 'A')}",  # altered payload
        # Grace's address signed with a key that is not ours.
        f"{public}/unsubscribe/"
        + URLSafeSerializer("not-the-secret-at-all", salt="digest.unsubscribe").dumps(GRACE),
        f"{public}/unsubscribe/garbage",
    ]
    for bad in forged:
        for data in (None, {"List-Unsubscribe": "One-Click"}):
            status, page, _ = http(bad, data)
            assert status == 400, bad
            assert "This link is not valid" in page
    assert suppressions(digest) == []

    # The page removes one keyword from subscribers.csv, leaving the rest of the file alone.
    status, page, _ = http(f"{link}/keywords/remove", {"keyword": "reasoning"})
    assert status == 200
    assert "Removed &#39;reasoning&#39;" in page
    assert digest.csv_path.read_text(encoding="utf-8") == CSV.replace("; reasoning", "")

    # The one-click POST a mail client sends unsubscribes at once; repeating it is harmless.
    status, page, _ = http(link, {"List-Unsubscribe": "One-Click"})
    assert (status, "You are unsubscribed." in page) == (200, True)
    status, page, _ = http(link, {"List-Unsubscribe": "One-Click"})
    assert (status, "You were already unsubscribed." in page) == (200, True)
    assert suppressions(digest) == [(ADA, "web")]
    status, page, _ = http(link)
    assert status == 200 and "You will receive no more digests" in page
    assert "Unsubscribe</button>" not in page

    listing = digest.run("subscribers", "list")
    assert re.search(rf"^{ADA} .* unsubscribed, daily$", listing.stdout, re.M), listing.stdout

    # New papers appear. Removing her row and pasting it back does not re-subscribe her.
    digest.arxiv.papers = everything
    assert digest.run("subscribers", "remove", ADA).returncode == 0
    digest.csv_path.write_text(
        digest.csv_path.read_text(encoding="utf-8") + f"{ADA},Ada,reward model,core\n",
        encoding="utf-8",
    )
    skipped = digest.run("send")
    assert skipped.returncode == 0, skipped.stderr
    assert f"{ADA}: unsubscribed, skipped" in skipped.stdout
    assert len(messages_to(digest.smtp, ADA)) == 1

    # `resubscribe` does, on purpose.
    again = digest.run("subscribers", "resubscribe", ADA)
    assert (again.returncode, again.stdout) == (0, f"{ADA} is subscribed again\n")
    assert suppressions(digest) == []
    back = digest.run("send")
    assert back.returncode == 0, back.stderr
    second = abs_ids(parts(messages_to(digest.smtp, ADA)[1])[1])
    assert second and not second & first_ids  # what was owed meanwhile, nothing twice
    assert digest.delivered(ADA) == first_ids | second


def test_the_page_in_a_real_browser(setup: tuple[Digest, str], browser: str) -> None:  # noqa: F811
    digest, _ = setup
    assert digest.run("send").returncode == 0
    [email] = messages_to(digest.smtp, ADA)
    link = re.findall(r"<([^>]+)>", email["List-Unsubscribe"])[0]

    dom = dump_dom(link)
    png = screenshot(link, digest.home / "unsubscribe-page.png", 800, 700)

    # What the browser built: the address, each keyword with its button, the unsubscribe form.
    assert ADA in dom
    assert dom.count(">Remove</button>") == 3
    assert re.search(r'<form method="post" action="/unsubscribe/[^"]+">', dom)
    assert png_size(png) == (800, 700)
    assert png.stat().st_size > 10_000  # a rendered page, not a blank one
    # Loading the page in a browser unsubscribed nobody.
    assert suppressions(digest) == []
    keep = os.environ.get("DIGEST_KEEP_SCREENSHOTS")
    if keep:  # to look at it: DIGEST_KEEP_SCREENSHOTS=/some/dir pytest ...
        shutil.copy(png, Path(keep) / png.name)


def test_serve_needs_a_secret_and_send_falls_back_to_mailto(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    digest = Digest(tmp_path, arxiv, smtp, {"DIGEST_PUBLIC_URL": "https://digest.example.org"})
    digest.write_subscribers(CSV)

    refused = digest.run("serve", "--port", "0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: DIGEST_SECRET is not set: `digest serve` needs it")

    sent = digest.run("send")
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == (
        "Warning: DIGEST_PUBLIC_URL is set but DIGEST_SECRET is not, so emails carry only a "
        "mailto: unsubscribe link; set DIGEST_SECRET (the same value for `digest serve`) to add "
        "one-click unsubscribe links\n"
    )
    [email] = messages_to(smtp, ADA)
    assert email["List-Unsubscribe"] == "<mailto:digest@example.org?subject=unsubscribe>"
    assert email["List-Unsubscribe-Post"] is None
    assert "reply to this email or write to digest@example.org" in parts(email)[0]

    short = Digest(tmp_path, arxiv, smtp, {"DIGEST_SECRET": "short"}).run("serve")
    assert (short.returncode, short.stderr) == (
        1,
        "Error: DIGEST_SECRET=(hidden) is not valid: use at least 16 random characters, e.g. "
        "the output of python3 -c 'import secrets; print(secrets.token_urlsafe(32))'\n",
    )


def _adversarial_keys() -> list[str]:
    """Keys whose payloads itsdangerous zlib-compresses, or just does not (the compressed JSON
    one byte short of winning, `len(compressed) == len(json) - 1`), or that JSON escapes."""
    keys = ["", "a", "é", "\x00", '"', "\\", "\u2028", "😀" * 9, "a" * 60 + "@x.org", "A" * 400]
    keys += ["ab" * r + "@x.org" for r in range(1, 40)]
    keys += ["ü" * r + "@bücher.de" for r in range(1, 30)]
    keys += [f"{'x' * r}.{'x' * r}@{'x' * r}.org" for r in range(1, 25)]
    keys += [("ada.lovelace" * r)[: 20 + r] + "@example.org" for r in range(1, 12)]
    return keys


def test_tokens_are_itsdangerous_own_bytes_for_every_key_and_salt() -> None:
    """The four tokens of an email, made cheaply, are what `URLSafeSerializer(secret,
    salt=salt).dumps(key)` makes, for random and adversarial keys, with two secrets in turn;
    and the readers (`read_token`, `feedback_links.read`, the likes page's `loads`) read them."""
    import random
    import zlib

    from itsdangerous import URLSafeSerializer

    from digest import feedback_links
    from digest.feedback_links import LIKES_SALT, READER_SALT, likes_token, reader_token
    from digest.tokens import PREFERENCES_SALT, SALT, make_token, read_token

    rng = random.Random(2024)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz0123456789.-_+@",
        "ab@.",  # few letters: long repeats that compress
        "".join(map(chr, range(32, 127))),
        "äöüßéèçñøåłżšđ中文字😀\u2028\x7f\x00\t\"\\'",
    ]
    keys = [
        "".join(rng.choices(rng.choice(alphabets), k=rng.choice([rng.randint(1, 40), 90])))
        for _ in range(2000)
    ] + _adversarial_keys()

    def compressed(key: str) -> int:
        """How much shorter zlib makes the key's JSON (itsdangerous uses it from 2 up)."""
        json = URLSafeSerializer("s").serializer.dumps(key).encode()
        return len(json) - len(zlib.compress(json))

    gains = {compressed(key) for key in keys}
    assert {1, 2} <= gains, "the keys must include both sides of the rule's edge"
    assert any(gain > 2 for gain in gains) and any(gain < 0 for gain in gains)

    secrets = ["test-secret-0123456789abcdef", "another-secret-fedcba9876543210"]
    salts = (SALT, READER_SALT, LIKES_SALT, PREFERENCES_SALT)
    library = {(s, salt): URLSafeSerializer(s, salt=salt) for s in secrets for salt in salts}
    checked = 0
    for i, key in enumerate(keys):
        secret = secrets[i % 2]
        made = {  # in the order an email makes them
            SALT: make_token(secret, key),
            READER_SALT: reader_token(secret, key),
            LIKES_SALT: likes_token(secret, key),
            PREFERENCES_SALT: make_token(secret, key, PREFERENCES_SALT),
        }
        for salt, token in made.items():
            assert token == library[secret, salt].dumps(key), (key, salt)
            assert library[secret, salt].loads(token) == key
            assert token.startswith(".") == (compressed(key) > 1)
            checked += 1
        if key:
            assert read_token(secret, made[SALT]) == key
            assert read_token(secret, made[PREFERENCES_SALT], PREFERENCES_SALT) == key
            assert read_token(secret, made[READER_SALT]) is None  # another page's token
            assert read_token(secrets[1 - i % 2], made[SALT]) is None  # another secret's
            link = feedback_links.token(secret, key, "2401.00001", "like")
            assert link.startswith(made[READER_SALT] + "~")
            assert feedback_links.read(secret, link) == (key, "2401.00001", "like")
    assert checked == 4 * len(keys) > 8000
