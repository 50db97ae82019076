"""DKIM signing (digest.dkim): real emails (rendered from the fixture's papers, written by
mailer.message_bytes) signed with a real RSA key, verified by dkimpy's `dkim.verify` against the
public key record; the fast path gives byte for byte dkimpy's own signature; bad settings stop
with an error naming the setting."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import SENDER, Digest
from test_render_equivalence import _digests, _hostile, _papers

from digest.build import Builder
from digest.config import Settings
from digest.dkim import (
    SIGNED_HEADERS,
    Signer,
    body_hash,
    canonical_body_hash,
    relaxed_body,
    relaxed_headers,
    split_message,
)
from digest.errors import ConfigError
from digest.mailer import bodies, message_bytes, new_message_id
from digest.models import RenderedEmail
from digest.render import render_reference
from digest.report import Timings

WHEN = datetime(2026, 11, 29, 7, 0, 5, tzinfo=UTC)
ONE_CLICK = "https://digest.example.org/u/tok?a=1&b=2"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, fmt: str = "pkcs8") -> bytes:
    kind = (
        serialization.PrivateFormat.PKCS8
        if fmt == "pkcs8"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, kind, serialization.NoEncryption())


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def signer(key_pem: bytes) -> Signer:
    return Signer(key_pem, "digest", "example.org")


@pytest.fixture(scope="module")
def emails() -> list[bytes]:
    """Real emails: rendered digests (one near the budget, hostile text among them), with and
    without one-click unsubscribe, as message_bytes writes them."""
    digests = _digests(_papers(), 6) + _digests(_hostile(_papers()), 4, hostile=True)
    out = []
    for n, digest in enumerate(digests):
        url = ONE_CLICK if n % 2 else None
        rendered = render_reference(digest, sender=SENDER, budget=95_000, unsubscribe_url=url)
        out.append(
            message_bytes(
                rendered,
                sender=SENDER,
                to=digest.subscriber.email,
                message_id=new_message_id(SENDER),
                when=WHEN,
                unsubscribe_url=url,
            )
        )
    assert max(map(len, out)) > 100_000  # a full-size email among them
    return out


def dns_for(signer: Signer):  # type: ignore[no-untyped-def]
    """A dnsfunc for dkim.verify: the public key record at digest._domainkey.example.org."""
    record = signer.dns_record().encode("ascii")

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"digest._domainkey.example.org." else None

    return lookup


def tag(header: bytes, name: str) -> str:
    value = header.decode("ascii").split(":", 1)[1]
    tags = dict(t.strip().split("=", 1) for t in re.sub(r"\s+", "", value).split(";") if t)
    return tags[name]


def test_every_real_email_is_signed_and_verifies(signer: Signer, emails: list[bytes]) -> None:
    for message in emails:
        signed = signer.sign(message)
        assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(message)
        assert dkim.verify(signed, dnsfunc=dns_for(signer)), message[:300]
        header = signed[: len(signed) - len(message)]
        assert tag(header, "c") == "relaxed/relaxed" and tag(header, "a") == "rsa-sha256"
        assert tag(header, "d") == "example.org" and tag(header, "s") == "digest"
        covered = tag(header, "h").split(":")
        for name in ("from", "to", "subject", "date", "message-id", "list-id"):
            assert name in covered
        assert "list-unsubscribe" in covered and "list-unsubscribe-post" in covered
        # The signed email still parses as the same email.
        parsed = message_from_bytes(signed, policy=default_policy)
        assert parsed["DKIM-Signature"] and parsed.get_body(("html",)) is not None


def test_fast_path_is_byte_for_byte_dkimpys_own_signature(
    signer: Signer, emails: list[bytes]
) -> None:
    for message in emails:
        reference = signer.sign_with_dkimpy(message)  # dkim.DKIM(message).sign(...)
        at = int(tag(reference, "t"))
        head, body = split_message(message)
        assert signer.header(head, body_hash(body), timestamp=at) == reference
        assert signer.sign(message, timestamp=at) == reference + message
        assert relaxed_body(body) == dkim.canonicalization.Relaxed.canonicalize_body(body)


def test_relaxed_body_matches_dkimpy_on_awkward_whitespace() -> None:
    cases = [
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b"a  b\t\tc \t d   \r\n  indented\r\n\t\r\nend \t\r\n\r\n\r\n",
        b"no final line end  ",
        b" \t \r\n",
        # no tab, no space before a line end: the path quoted-printable bodies take
        b"a  b   c" + b" " * 17 + b"d\r\n" + b" " * 64 + b"<td>\r\n  x\r\n",
        b"  leading\r\nand  mid  line\r\n\r\n",
    ]
    for body in cases:
        assert relaxed_body(body) == dkim.canonicalization.Relaxed.canonicalize_body(body)


def test_relaxed_headers_match_dkimpy_on_awkward_fields(emails: list[bytes]) -> None:
    heads = [split_message(message)[0] for message in emails]
    heads.append(
        b"From: A  B <a@example.org>\r\nSUBJECT:  many \t spaces  \r\n\t and a fold\t\r\n"
        b"X-Empty:\r\nX-Folded:\r\n  only folded\r\nfrom: second@example.org\r\n"
        b"To: x@example.org,\r\n y@example.org\r\n"
    )
    for head in heads:
        parsed, _ = dkim.rfc822_parse(head + b"\r\n")
        assert relaxed_headers(head) == dkim.canonicalization.Relaxed.canonicalize_headers(parsed)
    # What it leaves to dkimpy: a bare line end, a line that is not a field.
    assert relaxed_headers(b"From: a@example.org\nTo: b@example.org\r\n") is None
    assert relaxed_headers(b"From a@example.org Mon Dec  7\r\nTo: b@example.org\r\n") is None
    assert relaxed_headers(b"Subject : spaced name\r\n") is None


def test_every_body_is_written_in_relaxed_canonical_form(emails: list[bytes]) -> None:
    # Tabs, runs of spaces, spaces at line ends (hostile abstracts, the text part's indents)
    # are escaped as they are encoded, so the body hash is the body's own sha256.
    spaced = 0
    for message in emails:
        body = split_message(message)[1]
        assert relaxed_body(body) == body
        assert canonical_body_hash(message) == body_hash(body)
        spaced += "  " in "".join(bodies(message))
    assert spaced  # (what would need canonicalizing is there, decoded)
    hostile = message_bytes(
        RenderedEmail(
            subject="s",
            html="<p>a  b\t\tc \t d   </p>\n  <p>\t</p>  \n" + " " * 200 + "x",
            text="a  b\t\tc \t d   \n  indented\n\t\nend \t\n\n   \n" + "\t " * 90,
            paper_ids=("x",),
        ),
        sender=SENDER,
        to="a@example.org",
        message_id=new_message_id(SENDER),
        when=WHEN,
    )
    _, body = split_message(hostile)
    assert relaxed_body(body) == body
    assert canonical_body_hash(hostile) == body_hash(body)


def test_the_builders_body_hash_is_the_canonical_bodys_and_it_verifies(
    tmp_path: Path, key_pem: bytes
) -> None:
    key = tmp_path / "dkim.pem"
    key.write_bytes(key_pem)
    settings = Settings.from_env(
        env(
            DKIM_KEY=str(key),
            DKIM_SELECTOR="digest",
            FROM=SENDER,
            PUBLIC_URL="https://digest.example.org",
            SECRET="a-test-secret-of-enough-length",
        )
    )
    signer = Signer.from_settings(settings)
    assert signer is not None
    built, checked = [], []
    # (hostile papers keep the ids of the plain ones: a run of its own, as a day's papers)
    for digests in (_digests(_papers(), 12), _digests(_hostile(_papers()), 12, hostile=True)):
        builder = Builder(settings, SENDER, Timings())
        builder.BODY_HASH_CHECK_EVERY = 3  # the sampled check runs on several emails here
        builder.prepare(digests)
        built += [builder.build(d, WHEN) for d in digests]
        checked.append(builder.hash_bodies)  # the sampled checks found no difference
    assert checked == [True, True]
    for b in built:
        assert b.body_hash == body_hash(split_message(b.data)[1])
        signed = signer.seal(b.data, b.body_hash)
        assert dkim.verify(signed, dnsfunc=dns_for(signer)), b.person.email
        at = int(tag(signed[: len(signed) - len(b.data)], "t"))
        assert signed == signer.sign(b.data, timestamp=at)


def test_a_changed_header_or_body_breaks_the_signature(signer: Signer, emails: list[bytes]) -> None:
    message = next(m for m in emails if b"List-Unsubscribe-Post" in m)
    signed = signer.sign(message)
    lookup = dns_for(signer)
    assert dkim.verify(signed, dnsfunc=lookup)
    tampered = [
        signed.replace(b"Subject: arXiv digest", b"Subject: arXiv digesT", 1),
        signed.replace(
            b"List-Unsubscribe: <https://digest.example.org",
            b"List-Unsubscribe: <https://evil.example",
            1,
        ),
        signed.replace(b"\r\n\r\n", b"\r\nFrom: someone@evil.example\r\n\r\n", 1),
        signed[:-200] + signed[-200:].replace(b"e", b"a", 1),
    ]
    for n, bad in enumerate(tampered):
        assert bad != signed, n
        assert not dkim.verify(bad, dnsfunc=lookup), n
    # Relaxed canonicalization: re-folded whitespace in transit does not break it.
    relaxed = signed.replace(
        b"Auto-Submitted: auto-generated", b"Auto-Submitted:   auto-generated "
    )
    assert relaxed != signed and dkim.verify(relaxed, dnsfunc=lookup)


def test_absent_list_unsubscribe_post_is_signed_so_nobody_can_add_it(
    signer: Signer, emails: list[bytes]
) -> None:
    message = next(m for m in emails if b"List-Unsubscribe-Post" not in m)
    signed = signer.sign(message)
    assert dkim.verify(signed, dnsfunc=dns_for(signer))
    added = signed.replace(
        b"\r\n\r\n", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1
    )
    assert not dkim.verify(added, dnsfunc=dns_for(signer))
    assert SIGNED_HEADERS.count(b"from") == 2


def test_traditional_pkcs1_keys_work_too() -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), "pkcs1")
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    signer = Signer(pem, "digest", "example.org")
    message = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhello  world \r\n"
    assert dkim.verify(signer.sign(message), dnsfunc=dns_for(signer))


# Settings -----------------------------------------------------------------------------------


def env(**values: str) -> dict[str, str]:
    return {f"DIGEST_{k}": v for k, v in values.items()}


def test_settings_build_a_signer_for_the_from_domain(tmp_path: Path, key_pem: bytes) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(key_pem)
    settings = Settings.from_env(
        env(DKIM_KEY=str(path), DKIM_SELECTOR="mail2026", FROM="Digest <digest@Example.ORG>")
    )
    signer = Signer.from_settings(settings)
    assert signer is not None and (signer.selector, signer.domain) == ("mail2026", "example.org")
    assert "PRIVATE" not in repr(signer) and "PRIVATE" not in repr(settings)
    other = Settings.from_env(
        env(DKIM_KEY=str(path), DKIM_SELECTOR="s", DKIM_DOMAIN="Lists.Example.net.", FROM=SENDER)
    )
    assert Signer.from_settings(other).domain == "lists.example.net"  # type: ignore[union-attr]
    assert Signer.from_settings(Settings.from_env(env(FROM=SENDER))) is None


def test_bad_dkim_settings_are_errors_naming_the_setting(tmp_path: Path, key_pem: bytes) -> None:
    good = tmp_path / "dkim.pem"
    good.write_bytes(key_pem)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    missing = tmp_path / "nope.pem"
    hint = (
        "use an RSA private key in PEM form, not encrypted, e.g. made by "
        "openssl genrsa -out dkim.pem 2048"
    )
    cases = {
        (("DKIM_KEY", str(missing)), ("DKIM_SELECTOR", "s")): (
            f"DIGEST_DKIM_KEY='{missing}' is not valid: cannot read the key file (No such file "
            f"or directory); point it at the PEM private key whose public half is published in DNS"
        ),
        (("DKIM_KEY", str(garbage)), ("DKIM_SELECTOR", "s")): (
            f"DIGEST_DKIM_KEY='{garbage}' is not valid: the file is not a usable private key: "
            f"{hint}"
        ),
        (("DKIM_KEY", str(ec_key)), ("DKIM_SELECTOR", "s")): (
            f"DIGEST_DKIM_KEY='{ec_key}' is not valid: the file is not a usable private key: {hint}"
        ),
        (("DKIM_KEY", str(good)),): (
            "DIGEST_DKIM_SELECTOR is not set: with DIGEST_DKIM_KEY set it names the DNS record "
            "of the public key (SELECTOR._domainkey.DOMAIN), "
            "e.g. export DIGEST_DKIM_SELECTOR=digest"
        ),
        (("DKIM_SELECTOR", "s"),): (
            "DIGEST_DKIM_SELECTOR is set but DIGEST_DKIM_KEY is not: set DIGEST_DKIM_KEY to the "
            "PEM private key file to sign emails, or unset DIGEST_DKIM_SELECTOR"
        ),
        (("DKIM_KEY", str(good)), ("DKIM_SELECTOR", "a b")): (
            "DIGEST_DKIM_SELECTOR='a b' is not valid: use letters, digits, '-' and '.', as in a "
            "DNS name, e.g. digest"
        ),
        (("DKIM_KEY", str(good)), ("DKIM_SELECTOR", "s"), ("DKIM_DOMAIN", "localhost")): (
            "DIGEST_DKIM_DOMAIN='localhost' is not valid: use a domain name, e.g. example.org"
        ),
    }
    for pairs, message in cases.items():
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(env(**dict(pairs)))
        assert str(raised.value) == message


def test_the_cli_stops_on_a_bad_key_before_sending_anything(digest: Digest) -> None:
    digest.extra_env.update(DIGEST_DKIM_KEY="missing.pem", DIGEST_DKIM_SELECTOR="digest")
    result = digest.run("send")
    assert result.returncode == 1
    assert result.stderr == (
        "Error: DIGEST_DKIM_KEY='missing.pem' is not valid: cannot read the key file (No such "
        "file or directory); point it at the PEM private key whose public half is published "
        "in DNS\n"
    )
    assert digest.smtp.messages == []
    assert "PRIVATE" not in result.stdout + result.stderr


def test_a_real_send_arrives_signed_and_every_email_verifies(
    digest: Digest, key_pem: bytes, tmp_path: Path
) -> None:
    key = tmp_path / "dkim.pem"
    key.write_bytes(key_pem)
    digest.extra_env.update(
        DIGEST_DKIM_KEY=str(key),
        DIGEST_DKIM_SELECTOR="digest",
        DIGEST_PUBLIC_URL="https://digest.example.org",
        DIGEST_SECRET="a-test-secret-of-enough-length",
    )
    signer = Signer(key_pem, "digest", "example.org")
    # A test send is signed as well (and records nothing).
    test = digest.run("send", "--subscriber", "ada@example.org", "--to", "me@example.net")
    assert test.returncode == 0, test.stderr
    assert dkim.verify(digest.smtp.messages.pop().raw, dnsfunc=dns_for(signer))
    assert digest.run("send").returncode == 0
    received = [m.raw for m in digest.smtp.messages]
    assert len(received) == 2
    for raw in received:
        assert raw.startswith(b"DKIM-Signature: ")
        assert dkim.verify(raw, dnsfunc=dns_for(signer))
        header = re.match(rb"DKIM-Signature:.*?\r\n(?=\S)", raw, re.S)
        assert header is not None
        signed = tag(header[0], "h").lower().split(":")
        assert {"list-unsubscribe", "list-unsubscribe-post", "from", "to", "subject"} <= set(signed)
