"""An email as bytes: `message_bytes` writes what the email package's `build_message` builds
(checked against it in tests/test_message_bytes.py), CRLF-ended and safe to hand to the socket
as it is (no bare line ends, no line starting with "."). Sending is digest/smtp.py's."""

from __future__ import annotations

import binascii
import random
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr
from functools import lru_cache

from digest.models import EncodedEmail, RenderedEmail


def header_value(value: str) -> str:
    """A header value on one line: CR, LF and other whitespace runs become one space."""
    return " ".join(value.split())


@lru_cache(maxsize=64)
def sender_address(sender: str) -> str:
    """The address of a From value ("Name <a@b>" -> "a@b"): the same for every email of a run."""
    return parseaddr(sender)[1] or sender


def sender_domain(sender: str) -> str:
    return sender_address(sender).rpartition("@")[2] or "localhost"


@lru_cache(maxsize=8)
def _date(when: datetime) -> str:
    return format_datetime(when)  # one time for every email of a run


def new_message_id(sender: str) -> str:
    """A unique Message-ID at the sender's domain whose left part is never the From address's
    (rspamd's MID_CONTAINS_FROM scores "<...digest@example.org>" from digest@example.org)."""
    return make_msgid(domain=sender_domain(sender))


def build_message(
    rendered: RenderedEmail,
    *,
    sender: str,
    to: str,
    message_id: str,
    when: datetime,
    unsubscribe_url: str | None = None,
) -> EmailMessage:
    """A multipart/alternative email (text first, then HTML) with the list headers.

    With `unsubscribe_url` (an https link with a signed token), `List-Unsubscribe` offers it
    first and `List-Unsubscribe-Post` tells mail clients a POST there unsubscribes in one click
    (RFC 8058); the mailto: form follows as a fallback. Without it, mailto: only.
    """
    address = parseaddr(sender)[1] or sender
    msg = EmailMessage(policy=SMTP)
    msg["From"] = header_value(sender)
    msg["To"] = header_value(to)
    msg["Subject"] = header_value(rendered.subject)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id
    msg["List-Id"] = f"arXiv digest <digest.{sender_domain(sender)}>"
    mailto = f"<mailto:{address}?subject=unsubscribe>"
    if unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{header_value(unsubscribe_url)}>, {mailto}"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    else:
        msg["List-Unsubscribe"] = mailto
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return msg


MAX_HEADER_LINE = 78  # RFC 5322's "should"; 998 is the "must"
MAX_QP_LINE = 76  # RFC 2045
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


@lru_cache(maxsize=256)
def _folded_by_email_package(name: str, value: str) -> bytes:
    """`name: value` as the email package writes it (RFC 2047 words, folded), CRLF-ended."""
    return SMTP.header_factory(name, value).fold(policy=SMTP).encode("ascii")


def _fold_plain(name: str, value: str) -> bytes | None:
    """An unstructured ASCII header folded at spaces to lines of at most 78 characters, or
    None when the email package must do it (non-ASCII, an encoded-word look-alike, a word too
    long to fit a line)."""
    if not value.isascii() or "=?" in value:
        return None
    line = f"{name}: {value}"
    if len(line) <= MAX_HEADER_LINE:
        return line.encode("ascii") + b"\r\n"
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > MAX_HEADER_LINE and current not in ("", f"{name}:"):
            lines.append(current)
            current = ""
        current += " " + word
        if len(current) > 900:  # legal up to 998, but let the email package encode it
            return None
    lines.append(current)
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def _header(name: str, value: str, *, address: bool = False) -> bytes:
    if address:
        if _PLAIN_ADDRESS.fullmatch(value) and len(name) + 2 + len(value) <= MAX_HEADER_LINE:
            return f"{name}: {value}\r\n".encode("ascii")
        return _folded_by_email_package(name, value)
    return _fold_plain(name, value) or _folded_by_email_package(name, value)


def _wire_safe(line: bytes) -> bytes:
    """One quoted-printable line made safe on the wire: at most 76 characters (soft breaks,
    never inside an =XX escape) and no line starting with "." or "From " (encoded as =2E, =46)."""
    out: list[bytes] = []
    while True:
        if line[:1] == b".":
            line = b"=2E" + line[1:]
        elif line.startswith(b"From "):
            line = b"=46" + line[1:]
        if len(line) <= MAX_QP_LINE:
            out.append(line)
            return b"\n".join(out)
        cut = MAX_QP_LINE - 1
        while b"=" in line[cut - 2 : cut]:
            cut -= 1
        out.append(line[:cut] + b"=")
        line = line[cut:]


def _qp(data: bytes) -> bytes:
    """`data` as quoted-printable lines ending in LF (binascii's C encoder), each at most 76
    characters, none starting with "." or "From ", already in DKIM's relaxed canonical form
    (RFC 6376 3.4.4): no tab, no run of spaces, no space at a line's end (written =09, =20).
    So a body joined from such lines needs no canonicalizing pass: its DKIM body hash is its
    own sha256 (dkim.canonical_body_hash)."""
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    if b"\t" in encoded:  # (binascii escapes a tab or space only before a line end)
        encoded = encoded.replace(b"\t", b"=09")
    if b"  " in encoded:  # e.g. the text part's indents: "   " -> " =20 "
        encoded = encoded.replace(b"  ", b" =20")
    if encoded.startswith((b".", b"From ")):
        encoded = (b"=2E" if encoded[:1] == b"." else b"=46") + encoded[1:]
    if b"\n." in encoded or b"\nFrom " in encoded:  # e.g. CSS rules: ".hl { ... }"
        encoded = encoded.replace(b"\n.", b"\n=2E").replace(b"\nFrom ", b"\n=46rom ")
    lines = encoded.split(b"\n")
    if max(map(len, lines)) > MAX_QP_LINE:  # rare: the escapes above or binascii's at a line end
        encoded = b"\n".join(
            _wire_safe(line) if len(line) > MAX_QP_LINE else line for line in lines
        )
    return encoded


def quoted_printable(text: str) -> bytes:
    """`text` as utf-8 quoted-printable body lines, CRLF-ended, each at most 76 characters
    (binascii's C encoder; lines normalised as the email package does, ending in a newline)."""
    data = text.encode("utf-8")
    if b"\r" in data:
        data = b"\n".join(data.splitlines()) + b"\n"
    elif not data.endswith(b"\n"):
        data += b"\n"
    return _qp(data).replace(b"\n", b"\r\n")


_HIGH = bytes(range(128, 256))


def qp_weight(text: str) -> int:
    """Bytes `text` takes as quoted-printable, before soft line breaks: its UTF-8 bytes, two
    more for each byte that must be escaped (non-ASCII, "=", a tab, the second space of each
    pair). Adds up over pieces (but for a run of spaces across two of them: a few bytes)."""
    data = text.encode()
    escaped = len(data) - len(data.translate(None, _HIGH)) + data.count(b"=")
    if b"\t" in data or b"  " in data:
        escaped += data.count(b"\t") + data.count(b"  ")
    return len(data) + 2 * escaped


def qp_size(weight: int) -> int:
    """What a body of `weight` (`qp_weight`) takes in the message, soft line breaks counted
    generously (3 bytes per 72): the size the HTML budget holds the HTML part to."""
    return weight + 3 * -(-weight // 72)


def qp_part(part: str) -> bytes:
    """One part of a body, starting at a line start, as CRLF-ended quoted-printable lines, so
    that the next part starts at a line start too: ended by a soft line break ("=" at the end of
    a line) unless it ends a line itself. Parts encoded once can be joined into many bodies
    (`join_qp`)."""
    encoded = _qp(part.encode("utf-8"))
    if not encoded or encoded.endswith(b"\n"):
        return encoded.replace(b"\n", b"\r\n")
    start = encoded.rfind(b"\n") + 1
    last = encoded[start:]
    if len(last) < MAX_QP_LINE:
        return (encoded + b"=\n").replace(b"\n", b"\r\n")
    cut = MAX_QP_LINE - 1  # room for the "=", never inside an =XX escape
    while b"=" in last[cut - 2 : cut]:
        cut -= 1
    rest = last[cut:]
    if rest[:1] == b".":
        rest = b"=2E" + rest[1:]
    return (encoded[:start] + last[:cut] + b"=\n" + rest + b"=\n").replace(b"\n", b"\r\n")


qp_part_cached = lru_cache(maxsize=8192)(qp_part)  # a run's layouts and values recur


def join_qp(encoded: Iterable[bytes]) -> bytes:
    """A body from parts encoded by `qp_part`, in order."""
    body = b"".join(encoded)
    if body.endswith(b"=\r\n"):  # the body ends with a newline, as the email package's does
        body = body[:-3] + b"\r\n"
    return body


def quoted_printable_parts(parts: Sequence[str]) -> bytes:
    """What `quoted_printable("".join(parts))` decodes to, each part encoded once per run:
    a quoted-printable line may end with a soft break anywhere, so the parts' encodings can be
    joined (the lines break at other places than the whole text's encoding would)."""
    if not parts or any("\r" in part for part in parts):
        return quoted_printable("".join(parts))
    return join_qp(qp_part_cached(part) for part in parts if part)


def encoded(rendered: RenderedEmail) -> EncodedEmail:
    """The email with its bodies as `message_bytes` writes them."""
    return EncodedEmail(
        subject=rendered.subject,
        html_body=_body(rendered.html, rendered.html_parts, rendered.html_qp),
        text_body=_body(rendered.text, rendered.text_parts, rendered.text_qp),
        paper_ids=rendered.paper_ids,
        full_entries=rendered.full_entries,
        deferred=rendered.deferred,
    )


def bodies(data: bytes) -> tuple[str, str]:
    """The HTML and the text of a message `message_bytes` wrote, as a mail program decodes
    them (the email package; lines end in newlines)."""
    message = message_from_bytes(data, policy=SMTP)
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    if html is None or text is None:
        raise ValueError("not a message of ours: no text/html and text/plain parts")
    return (
        html.get_content().replace("\r\n", "\n"),  # type: ignore[attr-defined]
        text.get_content().replace("\r\n", "\n"),  # type: ignore[attr-defined]
    )


def message_bytes(
    rendered: RenderedEmail | EncodedEmail,
    *,
    sender: str,
    to: str,
    message_id: str,
    when: datetime,
    unsubscribe_url: str | None = None,
) -> bytes:
    """The email `build_message` builds, written directly as bytes with CRLF line endings: the
    same headers in the same order, multipart/alternative with text/plain then text/html, both
    utf-8 quoted-printable. Much faster than the email package for the bodies (C encoder)."""
    email = rendered if isinstance(rendered, EncodedEmail) else encoded(rendered)
    address = sender_address(sender)
    mailto = f"<mailto:{address}?subject=unsubscribe>"
    head = [
        _folded_by_email_package("From", header_value(sender)),
        _header("To", header_value(to), address=True),
        _header("Subject", header_value(email.subject)),
        _header("Date", _date(when)),
        _header("Message-ID", header_value(message_id)),
        _header("List-Id", f"arXiv digest <digest.{sender_domain(sender)}>"),
    ]
    if unsubscribe_url:
        head.append(_header("List-Unsubscribe", f"<{header_value(unsubscribe_url)}>, {mailto}"))
        head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    else:
        head.append(_header("List-Unsubscribe", mailto))
    # "=_" never occurs in quoted-printable text, so the boundary cannot occur in a part.
    boundary = f"=_digest_{random.getrandbits(96):024x}".encode("ascii")
    head.append(b"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n")
    head.append(b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n')
    part = (
        b'Content-Type: text/%s; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return b"".join(
        [
            *head,
            b"--" + boundary + b"\r\n",
            part % b"plain",
            email.text_body,
            b"\r\n--" + boundary + b"\r\n",
            part % b"html",
            email.html_body,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )


def _body(whole: str, parts: Sequence[str], encoded: Sequence[bytes]) -> bytes:
    """A body part's quoted-printable lines: from its parts' encodings when the renderer gave
    them, else from its parts, else from the whole text."""
    if encoded:  # the renderer gives encodings only for parts without a CR
        return join_qp(encoded)
    return quoted_printable_parts(parts) if parts else quoted_printable(whole)
