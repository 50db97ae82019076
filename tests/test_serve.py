"""`digest serve` as the internet sees it: a real subprocess on 127.0.0.1, real HTTP and raw
sockets. No version banner, timeouts, a body limit, a path prefix behind a reverse proxy, the
400 page for any token that is not ours, no token in the logs, SIGTERM exits 0."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Digest
from itsdangerous import URLSafeSerializer
from served import Served, http
from standins import ArxivStandin, SmtpStandin, free_port

from digest.tokens import SALT, make_token

SECRET = "test-secret-0123456789abcdef"
ADA = "ada@example.org"
CSV = "email,name,keywords\nada@example.org,Ada,reward model; reasoning\n"


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    installation = Digest(tmp_path, arxiv, smtp, {"DIGEST_SECRET": SECRET})
    installation.write_subscribers(CSV)
    return installation


@pytest.fixture
def served(digest: Digest) -> Iterator[Served]:
    server = Served(digest, verbose=True)
    yield server
    server.stop()


def test_healthz_no_banner_and_sigterm_exits_cleanly(digest: Digest) -> None:
    server = Served(digest)
    status, body, headers = http(f"{server.url}/healthz")
    assert (status, body) == (200, "ok")
    assert headers["Content-Type"].startswith("text/plain")
    assert "Server" not in headers
    for status, _, headers in (http(f"{server.url}/nothing-here"), http(f"{server.url}/")):
        assert status == 404
        assert "Server" not in headers and "erkzeug" not in str(headers)
    assert server.stop() == 0, server.stderr
    assert "Traceback" not in server.stderr


def test_a_body_over_the_limit_is_refused_and_never_echoed(served: Served) -> None:
    link = f"{served.url}/unsubscribe/{make_token(SECRET, ADA)}/keywords/remove"
    # Over the limit by a little: the body is all sent before the answer (a megabyte still in
    # flight when the server closes can make the kernel reset the connection before the client
    # reads the 413).
    status, body, _ = http(link, {"keyword": "x" * 20_000})
    assert status == 413
    assert "xxxxxxxxxx" not in body
    # Within the limit but long: the answer quotes at most MAX_FIELD characters of it.
    status, body, _ = http(link, {"keyword": "y" * 10_000})
    assert status == 409
    assert "y" * 1001 not in body and "y" * 1000 in body
    assert served.digest.csv_path.read_text(encoding="utf-8") == CSV


def test_idle_connections_are_closed(digest: Digest) -> None:
    digest.extra_env["DIGEST_SERVE_TIMEOUT"] = "2"
    server = Served(digest)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=15) for _ in range(30)]
        started = time.monotonic()
        for sock in idle:  # each one: the server closes it (recv gives b"" at once)
            assert sock.recv(1) == b""
            sock.close()
        assert time.monotonic() - started < 12
        # It still serves.
        assert http(f"{server.url}/healthz")[:2] == (200, "ok")
    finally:
        assert server.stop() == 0


def test_tokens_with_our_signature_but_a_bad_payload_get_the_400_page(served: Served) -> None:
    signer = URLSafeSerializer(SECRET, salt=SALT).make_signer(SALT)
    bad = [
        signer.sign(b"not-base64-json").decode(),
        signer.sign(b"eyJub3QiOiAianNvbg").decode(),  # base64 of a cut JSON text
        URLSafeSerializer(SECRET, salt=SALT).dumps({"a": "dict"}),
        URLSafeSerializer(SECRET, salt=SALT).dumps(""),
        make_token(SECRET, ADA, "digest.preferences"),  # a token for another page
    ]
    for token in bad:
        for path in ("unsubscribe", "unsubscribe/{}/keywords/remove"):
            url = (
                f"{served.url}/{path.format(token)}"
                if "{" in path
                else f"{served.url}/{path}/{token}"
            )
            for data in (None, {"List-Unsubscribe": "One-Click", "keyword": "reasoning"}):
                if data is None and "keywords" in url:
                    continue
                status, body, _ = http(url, data)
                assert status == 400, (token, url, status)
                assert "This link is not valid" in body
    assert served.digest.query("SELECT count(*) FROM suppressions") == [(0,)]


def test_no_token_in_the_logs(served: Served) -> None:
    digest = served.digest
    token = make_token(SECRET, ADA)
    base = f"{served.url}/unsubscribe/{token}"
    assert http(base)[0] == 200
    assert http(f"{base}/keywords/remove", {"keyword": "reasoning"})[0] == 200
    assert http(f"{base}/keywords/remove", {"keyword": "nope"})[0] == 409
    # A failure inside a request (the subscribers file turned into a folder) is logged with
    # its route, not its path.
    digest.csv_path.unlink()
    digest.csv_path.mkdir()
    assert http(base)[0] == 500
    assert http(base, {"List-Unsubscribe": "One-Click"})[0] == 500
    digest.csv_path.rmdir()
    digest.csv_path.write_text(CSV, encoding="utf-8")
    assert served.stop() == 0
    log = served.stderr
    assert "unsubscribed ada@example.org (new)" in log  # -v logging was on
    assert "Exception on /unsubscribe/<token> [GET]" in log
    assert token not in log
    assert token.split(".")[0] not in log  # not even the payload (the address in base64)


def test_behind_a_reverse_proxy_under_a_path(
    tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}/digest"
    digest = Digest(tmp_path, arxiv, smtp, {"DIGEST_SECRET": SECRET, "DIGEST_PUBLIC_URL": public})
    digest.write_subscribers(CSV)
    server = Served(digest, port)
    try:
        token = make_token(SECRET, ADA)
        # Proxies that pass the prefix on and ones that strip it: both reach the page, whose
        # forms point under the public path.
        for url in (f"{public}/unsubscribe/{token}", f"{server.url}/unsubscribe/{token}"):
            status, body, _ = http(url)
            assert status == 200, url
            assert f'action="/digest/unsubscribe/{token}/keywords/remove"' in body
            assert f'<form method="post" action="/digest/unsubscribe/{token}">' in body
        status, body, _ = http(
            f"{public}/unsubscribe/{token}/keywords/remove", {"keyword": "reasoning"}
        )
        assert status == 200 and "Removed" in body
        sent = digest.run("send")
        assert sent.returncode == 0, sent.stderr
        [message] = smtp.messages
        assert f"<{public}/unsubscribe/{token}>" in message.message["List-Unsubscribe"]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://digest.example.org", False),
        ("http://10.0.0.5:8080/digest", False),
        ("https://digest.example.org/digest", True),
        ("http://localhost:8080", True),
    ],
)
def test_one_click_links_need_an_https_public_url(digest: Digest, url: str, accepted: bool) -> None:
    digest.extra_env["DIGEST_PUBLIC_URL"] = url
    result = digest.run("send", "--dry-run")
    if accepted:
        assert result.returncode == 0, result.stderr
    else:
        assert (result.returncode, result.stderr) == (
            1,
            f"Error: DIGEST_PUBLIC_URL={url!r} is not valid: use an https:// URL: one-click "
            "unsubscribe links (RFC 8058) need https, and the links carry signed tokens; http:// "
            "is accepted only for localhost and 127.0.0.1. Put digest serve behind a reverse "
            "proxy with TLS (see the README)\n",
        )
    shutil.rmtree(digest.home / "previews", ignore_errors=True)
