"""DKIM signing (optional): DIGEST_DKIM_KEY, DIGEST_DKIM_SELECTOR, DIGEST_DKIM_DOMAIN.

With a key set, every email gets a DKIM-Signature (rsa-sha256, relaxed/relaxed) by the From
address's domain (or DIGEST_DKIM_DOMAIN) covering From, To, Subject, Date, Message-ID, List-Id,
List-Unsubscribe, List-Unsubscribe-Post (signed even when absent, so nobody can add it), the
MIME headers and Auto-Submitted; From is signed twice so a second From cannot be added.
Gmail shows its unsubscribe button only when such a signature covers the List-Unsubscribe pair.

Two paths give the same signature:
- `Signer.sign_with_dkimpy(message)`: dkimpy's own `dkim.sign` (~50 ms for a 130 KB email
  here: its body canonicalization and its pure-Python RSA);
- `Signer.sign(message)` / `Signer.header(head, body_hash)`: the body hash with two C-level
  regular expressions over the body bytes (RFC 6376 3.4.4, as dkimpy's `Relaxed`), the header
  block canonicalized in one pass (`relaxed_headers`, as dkimpy's), the fields chosen and
  folded by dkimpy's own functions (`select_headers`, `fold`), and the RSA PKCS#1 v1.5
  signature by OpenSSL (`cryptography`). The tests check both produce byte for byte the same
  header and that `dkim.verify` accepts it.
The send path signs with `Signer.seal(message, body_hash)`: every body mailer.message_bytes
writes is already in relaxed canonical form, so build.Builder gives each email's body hash as
the body's own sha256 (`canonical_body_hash`, checked on a sample against `body_hash`), and
sealing costs the header's hash and the RSA signature (~0.35 ms, RSA-2048 0.25 of it).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy, strip_trailing_lines

from digest.config import PREFIX, Settings
from digest.errors import ConfigError

CANONICALIZE = (b"relaxed", b"relaxed")
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"auto-submitted",
    b"mime-version",
    b"content-type",
    b"from",  # twice: a From added in transit breaks the signature
)
MIN_KEY_BITS = 1024
_POLICY = CanonicalizationPolicy.from_c_value(b"/".join(CANONICALIZE))
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")  # only the runs relaxed changes (not single spaces)
_SPACES = re.compile(rb"  +")  # the same, in a body without tabs
_WSP = re.compile(rb"[\t ]+")  # every run, single spaces too (a header value's, relaxed)
_HEADER_NAME = "DKIM-Signature"


def relaxed_body(body: bytes) -> bytes:
    """The body in DKIM's relaxed canonical form (RFC 6376 3.4.4), for CRLF-ended lines: no
    space or tab at a line's end, each run of them one space, no empty lines at the end.

    What dkimpy's `Relaxed.canonicalize_body` gives (checked in the tests), ~11 times faster
    on our emails (0.35 against 3.9 ms for a 150 KB body). Python's regex engine is slow on a
    pattern that can start at every space, so the common case (no tab, no space at a line's
    end: quoted-printable encodes those) only replaces runs of two or more spaces: a pattern
    with a literal start, found in C (0.24 ms; halving double spaces with bytes.replace until
    none is left took 3-4 passes, 0.75 ms)."""
    if b"\t" in body or b" \r\n" in body or body.endswith(b" "):
        body = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", body))
    else:
        body = _SPACES.sub(b" ", body)
    body = strip_trailing_lines(body)
    return b"" if body == b"\r\n" else body


def body_hash(body: bytes) -> bytes:
    """bh=: base64 of the sha256 of the relaxed body."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


def canonical_body_hash(message: bytes) -> bytes:
    """bh= of a message whose body is already in relaxed canonical form, as message_bytes
    writes every body (mailer._qp): the sha256 of the body as it is, with no pass over it
    (0.08 against `body_hash`'s 0.4 ms for a 150 KB email). The same as `body_hash` of that
    body: checked in the tests, and on a sample of each run's emails by build.Builder."""
    start = message.index(b"\r\n\r\n") + 4
    return base64.b64encode(hashlib.sha256(memoryview(message)[start:]).digest())


_UNFOLD = re.compile(rb"\r\n(?=[\t ])")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # (what dkim.rfc822_parse takes)


def relaxed_headers(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of a header block (CRLF lines, as mailer.message_bytes writes it) in DKIM's
    relaxed canonical form, as (name, value + CRLF): what dkimpy's `rfc822_parse` and
    `Relaxed.canonicalize_headers` give (checked in the tests), from one pass that unfolds the
    block (~20 against ~60 us for our 11 fields). None for a block it leaves to dkimpy (a bare
    line end, a line that is not a field)."""
    if head.count(b"\n") != head.count(b"\r\n"):
        return None
    fields = []
    for line in _UNFOLD.sub(b"", head).split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return None
        fields.append((name.lower(), _relaxed_value(value) + b"\r\n"))
    return fields


def _relaxed_value(value: bytes) -> bytes:
    """A field's value, unfolded, in relaxed form: each run of spaces and tabs one space, none
    at either end."""
    return _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip()


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its CRLFs, body) of a CRLF message."""
    head, found, body = message.partition(b"\r\n\r\n")
    if not found:
        return message, b""
    return head + b"\r\n", body


@dataclass(frozen=True)
class Signer:
    """Signs messages by `domain` with the key published at `selector`._domainkey.`domain`."""

    key_pem: bytes
    selector: str
    domain: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _load_key(self.key_pem))  # ValueError if unusable

    def __repr__(self) -> str:  # never the key
        return f"Signer(selector={self.selector!r}, domain={self.domain!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer | None:
        """The signer the settings ask for, or None when DIGEST_DKIM_KEY is not set."""
        if settings.dkim_key is None:
            return None
        if not settings.dkim_selector:
            raise ConfigError(
                f"{PREFIX}DKIM_SELECTOR is not set: it must be, with {PREFIX}DKIM_KEY"
            )
        domain = settings.dkim_domain or _from_domain(settings.require_from())
        problem = key_problem(settings.dkim_key)
        if problem:
            raise ConfigError(f"{PREFIX}DKIM_KEY={str(settings.dkim_key)!r}: {problem}")
        return cls(settings.dkim_key.read_bytes(), settings.dkim_selector, domain)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """`message` (CRLF lines, as mailer.message_bytes writes it) with a DKIM-Signature
        header prepended. A message with bare LF line ends goes through dkimpy instead."""
        head, body = split_message(message)
        if body.count(b"\n") != body.count(b"\r\n") or head.count(b"\n") != head.count(b"\r\n"):
            return self.sign_with_dkimpy(message) + message
        return self.header(head, body_hash(body), timestamp=timestamp) + message

    def seal(self, message: bytes, body_hash: bytes | None = None) -> bytes:
        """`sign(message)`; given its body's hash (`body_hash`, worked out as the message was
        built: build.Builder), only its header block is read."""
        if body_hash is None:
            return self.sign(message)
        head = message[: message.index(b"\r\n\r\n") + 2]
        return self.header(head, body_hash) + message

    def header(self, head: bytes, bh: bytes, *, timestamp: int | None = None) -> bytes:
        """The DKIM-Signature header line (CRLF-ended) for a message whose header block is
        `head` and whose body hash (`body_hash(body)`) is `bh`: prepend it to the message."""
        domain, selector = self.domain.encode("ascii"), self.selector.encode("ascii")
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", _POLICY.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(time.time()) if timestamp is None else timestamp).encode("ascii")),
            (b"h", b" : ".join(SIGNED_HEADERS)),
            (b"bh", bh),
            (b"b", b"0" * 60),  # as dkimpy: b= folds onto a line of its own
        ]
        # What dkimpy's DomainSigner.gen_header does, with OpenSSL's RSA instead of its own
        # and the header block canonicalized in one pass (`relaxed_headers`) when it can be.
        name = _HEADER_NAME.encode("ascii")
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(name))
        value = dkim.RE_BTAG.sub(b"\\1", value)
        hasher = hashlib.sha256()
        canonical = relaxed_headers(head)
        if canonical is not None:  # (as dkim.hash_headers hashes them)
            signed = dkim.select_headers(canonical, SIGNED_HEADERS)
            own = _relaxed_value(b" " + value)
            hasher.update(b"".join([*(n + b":" + v for n, v in signed), b"dkim-signature:", own]))
        else:
            headers, _ = dkim.rfc822_parse(head + b"\r\n")
            dkim.hash_headers(
                hasher,
                _POLICY,
                _POLICY.canonicalize_headers(headers),
                SIGNED_HEADERS,
                (name, b" " + value),
                dict(fields),
            )
        key: rsa.RSAPrivateKey = self._key  # type: ignore[attr-defined]
        signature = key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
        return name + b": " + dkim.fold(value, namelen=len(name))

    def sign_with_dkimpy(self, message: bytes) -> bytes:
        """dkimpy's own `dkim.sign` of `message`: the DKIM-Signature header line alone (its
        t= is the clock's second; `header(..., timestamp=t)` gives the same bytes)."""
        return dkim.DKIM(message).sign(
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.key_pem,
            canonicalize=CANONICALIZE,
            include_headers=list(SIGNED_HEADERS),
        )

    def dns_record(self) -> str:
        """The TXT record to publish at `selector`._domainkey.`domain`."""
        key: rsa.RSAPrivateKey = self._key  # type: ignore[attr-defined]
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"


def key_problem(path: Path) -> str | None:
    """What is wrong with the key file at `path` for signing, or None when it is usable."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        return (
            f"cannot read the key file ({exc.strerror}); point it at the PEM private key "
            f"whose public half is published in DNS"
        )
    try:
        _load_key(pem)
    except ValueError as exc:
        return str(exc)
    return None


def _load_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The RSA private key in `pem`, readable by both OpenSSL and dkimpy; else ValueError."""
    hint = (
        "use an RSA private key in PEM form, not encrypted, e.g. made by "
        "openssl genrsa -out dkim.pem 2048"
    )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
        dkim.crypto.parse_pem_private_key(pem)
    except (ValueError, TypeError, dkim.crypto.UnparsableKeyError):
        raise ValueError(f"the file is not a usable private key: {hint}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"the key is not an RSA key: {hint}")
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(
            f"the key has {key.key_size} bits, receivers want at least {MIN_KEY_BITS}: {hint}"
        )
    return key


def _from_domain(sender: str) -> str:
    address = parseaddr(sender)[1] or sender
    return address.rpartition("@")[2].lower()
