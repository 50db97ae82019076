"""What one message of the bounce mailbox says: a delivery status notification (hard or soft
bounce), an abuse report (complaint) or anything else, and which email it is about.

- Delivery status notifications: RFC 3464 reports are read for their recipient, action, status
  and diagnostic; flufl.bounce (Mailman's detectors) also finds the failed recipients of the
  common non-standard forms (qmail, Exim, Exchange, ...). A failure with a 5.x.x status (or none
  given) is a hard bounce; a delay warning or a failure with a 4.x.x status is a soft bounce.
- Abuse reports (RFC 5965, ARF): Feedback-Type abuse, fraud, virus or other is a complaint;
  not-spam and auth-failure reports are read and left alone.
- Which email: the Message-IDs of the original found in the report (the returned message or its
  headers, or quoted in the text), and the addresses the report was sent to (a VERP return path:
  bounces+ada=example.org@example.org, see digest/verp.py).
Everything in a report is untrusted: values are cut to one line, nothing raises on bad input.
"""

from __future__ import annotations

import email
import email.message
import logging
import re
from dataclasses import dataclass
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

log = logging.getLogger(__name__)

COMPLAINT_TYPES = ("abuse", "fraud", "virus", "other")
# Headers of a report that may carry the address it was sent to (a VERP return path).
ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")
ENHANCED_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
QUOTED_MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Report:
    """What one message of the bounce mailbox says, before it is attributed."""

    kind: str  # hard | soft | complaint | other
    recipient: str  # the address it reports on ("" when it names none)
    status: str  # 5.1.1, 4.4.1, or the complaint's feedback type
    detail: str  # the diagnostic or who reported the complaint, one line
    message_ids: tuple[str, ...]  # Message-IDs of the original message found in it
    sent_to: tuple[str, ...]  # addresses the report was sent to (VERP candidates)
    source: str  # "From: ..., Subject: ..." of the report itself


def _line(text: object, limit: int = 300) -> str:
    """One line of at most `limit` characters (reports are untrusted: no CR/LF survives)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _headers_of(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks a message/* or text/rfc822-headers part holds."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    if isinstance(payload, str):
        text = part.get_payload(decode=True)
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else payload
        return [HeaderParser().parsestr(raw.lstrip())]
    return []


def _text_of(part: email.message.Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return data.decode(part.get_content_charset() or "utf-8", "replace")


def _address(value: str) -> str:
    """`rfc822; ada@example.org` or `<ada@example.org>` -> ada@example.org."""
    value = value.split(";", 1)[1] if ";" in value else value
    return parseaddr(value.strip())[1] or value.strip().strip("<>")


def parse(raw: bytes) -> Report:
    """Read one message of the bounce mailbox (any bytes; never raises on bad input)."""
    msg = email.message_from_bytes(raw)
    own_id = str(msg.get("Message-ID") or "").strip()
    message_ids: list[str] = []
    sent_to = [a for h in ENVELOPE_HEADERS for _n, a in getaddresses(msg.get_all(h) or []) if a]
    blocks: list[tuple[str, str, str, str]] = []  # (recipient, action, status, diagnostic)
    feedback: email.message.Message | None = None
    quoted: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            for block in _headers_of(part):
                if block.get("X-Postfix-Sender"):
                    sent_to.append(_address(str(block["X-Postfix-Sender"])))
                if not (block.get("Final-Recipient") or block.get("Original-Recipient")):
                    continue
                recipient = _address(
                    str(block.get("Original-Recipient") or block.get("Final-Recipient"))
                )
                blocks.append(
                    (
                        recipient,
                        str(block.get("Action", "")).strip().lower(),
                        str(block.get("Status", "")).strip().split(" ")[0],
                        _line(str(block.get("Diagnostic-Code", "")).partition(";")[2]),
                    )
                )
        elif ctype == "message/feedback-report":
            found = _headers_of(part)
            feedback = found[0] if found else None
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            for original in _headers_of(part):
                if original.get("Message-ID"):
                    message_ids.append(str(original["Message-ID"]).strip())
                if original.get("Return-Path"):
                    sent_to.append(_address(str(original["Return-Path"])))
        elif part.get_content_maintype() == "text":
            quoted += QUOTED_MESSAGE_ID.findall(_text_of(part))
    for header in ("In-Reply-To", "References"):
        quoted += re.findall(r"<[^<>\s]+>", str(msg.get(header, "")))
    message_ids += [m for m in quoted if m != own_id]
    source = _line(f"From: {msg.get('From', '')}, Subject: {msg.get('Subject', '')}", 200)
    ids = tuple(dict.fromkeys(m for m in message_ids if m and m != own_id))
    if feedback is not None:
        return _complaint(feedback, ids, sent_to, source)
    kind, recipient, status, detail = _delivery(msg, blocks)
    return Report(kind, recipient, status, detail, ids, tuple(dict.fromkeys(sent_to)), source)


def _delivery(
    msg: email.message.Message, blocks: list[tuple[str, str, str, str]]
) -> tuple[str, str, str, str]:
    """(kind, recipient, status, detail) of a delivery report, or ("other", ...) for a message
    that reports no failure (an auto-reply, a success notice, anything else)."""
    failed = [b for b in blocks if b[1].startswith(("fail", "error"))]
    hard = [b for b in failed if not b[2].startswith(("2", "4"))]
    soft = [b for b in blocks if b[1].startswith("delayed")] + [
        b for b in failed if b[2].startswith("4")
    ]
    if hard:
        return "hard", hard[0][0], hard[0][2], hard[0][3]
    if soft:
        return "soft", soft[0][0], soft[0][2], soft[0][3]
    if blocks:  # a standard report of deliveries, relays or expansions: nothing failed
        return "other", blocks[0][0], blocks[0][2], ""
    try:  # the non-standard forms; a detector's error on odd input means: none found
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # flufl.bounce's detectors are heuristics over untrusted text
        log.warning("flufl.bounce could not read a message: %s: %s", type(exc).__name__, exc)
        return "other", "", "", ""
    found = permanent or temporary
    if not found:
        return "other", "", "", ""
    text = "\n".join(_text_of(p) for p in msg.walk() if p.get_content_maintype() == "text")
    code = ENHANCED_STATUS.search(text)
    detail = _line(f"non-standard report: {msg.get('Subject', '')}", 120)
    kind = "hard" if permanent else "soft"
    return kind, min(found).decode("ascii", "replace"), code[1] if code else "", detail


def _complaint(
    feedback: email.message.Message, ids: tuple[str, ...], sent_to: list[str], source: str
) -> Report:
    kind_of = str(feedback.get("Feedback-Type", "")).strip().lower()
    mail_from = feedback.get("Original-Mail-From")
    if mail_from:
        sent_to.append(_address(str(mail_from)))
    reporter = feedback.get("User-Agent") or feedback.get("Reporting-MTA") or "unknown"
    return Report(
        "complaint" if kind_of in COMPLAINT_TYPES else "other",
        _address(str(feedback.get("Original-Rcpt-To", ""))),
        kind_of or "unknown",
        _line(f"reported by {reporter}", 200),
        ids,
        tuple(dict.fromkeys(sent_to)),
        source,
    )
