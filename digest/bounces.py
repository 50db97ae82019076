"""`digest bounces`: read the bounce mailbox, tell bounces and complaints apart, find whose they
are, and suspend the addresses that hard-bounce or complain.

- Delivery status notifications: RFC 3464 reports are read for their recipient, action, status
  and diagnostic; flufl.bounce (Mailman's detectors) also finds the failed recipients of the
  common non-standard forms (qmail, Exim, Exchange, ...). A failure with a 5.x.x status (or none
  given) is a hard bounce; a delay warning or a failure with a 4.x.x status is a soft bounce.
- Abuse reports (RFC 5965, ARF): Feedback-Type abuse, fraud, virus or other is a complaint;
  not-spam and auth-failure reports are read and left alone.
- Whose: the Message-ID of our email found in the report (the returned message or its headers,
  or quoted in the text) looked up in the outbox; else, with DIGEST_RETURN_PATH set, the VERP
  address the report was sent to (bounces+ada=example.org@example.org). A report neither finds
  is recorded as not attributed and never suspends anyone.
- What: a hard bounce or a complaint suspends the address at once (as repeated 5xx refusals do
  at send time; `digest subscribers enable` lifts it); a soft bounce is counted.
Each message is recorded by the SHA-256 of its bytes before it is marked processed, so reading
it again (a second run, a mark that failed, two readers at once) changes nothing.
"""

from __future__ import annotations

import email
import email.message
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from digest import store
from digest.config import PREFIX, Settings
from digest.errors import ConfigError, DigestError
from digest.mailbox import Mailbox, describe, open_mailbox

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
    own_id = (msg.get("Message-ID") or "").strip()
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


# VERP ------------------------------------------------------------------------------------------


def verp_address(return_path: str, recipient: str) -> str:
    """The envelope sender for an email to `recipient`: with DIGEST_RETURN_PATH
    bounces@example.org, mail to ada@example.org goes out from
    bounces+ada=example.org@example.org, and its bounce comes back to that address."""
    local, _, domain = return_path.rpartition("@")
    user, _, host = recipient.strip().rpartition("@")
    return f"{local}+{user}={host}@{domain}"


def verp_recipient(address: str, return_path: str) -> str | None:
    """The recipient a VERP address of `return_path` stands for (None: it is not one)."""
    local, _, domain = return_path.casefold().rpartition("@")
    got_local, _, got_domain = address.strip().casefold().rpartition("@")
    base, plus, tag = got_local.partition("+")
    if not plus or base != local or got_domain != domain:
        return None
    user, equals, host = tag.rpartition("=")
    if not equals or not user or not host:
        return None
    return f"{user}@{host}"


# Reading the mailbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one new report did."""

    kind: str
    subscriber: str | None
    action: str  # suspended | already suspended | counted | not attributed | ignored
    status: str
    detail: str
    recipient: str
    source: str
    soft_bounces: int = 0  # with a soft bounce: how many this address has had


@dataclass
class BounceRun:
    mailbox: str
    outcomes: list[Outcome] = field(default_factory=list)
    seen_before: int = 0  # read by an earlier run (only marked processed now)

    @property
    def read(self) -> int:
        return len(self.outcomes) + self.seen_before

    def count(self, kind: str, attributed: bool = True) -> int:
        return sum(
            1 for o in self.outcomes if o.kind == kind and (o.subscriber is not None) == attributed
        )


def attribute(
    db: store.sqlite_utils.Database, report: Report, return_path: str | None
) -> tuple[str, str, str] | None:
    """(subscriber, Message-ID, how) of the email a report is about, or None."""
    found = store.email_subscriber(db, report.message_ids)
    if found is not None:
        return found[0], found[1], "Message-ID"
    if return_path:
        for address in report.sent_to:
            recipient = verp_recipient(address, return_path)
            latest = store.latest_email_to(db, recipient) if recipient else None
            if recipient and latest:
                return recipient, latest, "VERP"
    return None


def _reason(report: Report, when: str) -> str | None:
    if report.kind == "hard":
        status = f" {report.status}" if report.status else ""
        detail = f": {report.detail}" if report.detail else ""
        return f"hard bounce{status}{detail} (read {when} from the bounce mailbox)"
    if report.kind == "complaint":
        return f"complaint ({report.status}, {report.detail}; read {when})"
    return None


def process(db: store.sqlite_utils.Database, box: Mailbox, settings: Settings) -> BounceRun:
    """Read every unprocessed message of `box`, record and apply it, mark it processed."""
    run = BounceRun(box.describe())
    for item in box.unprocessed():
        bounce_id = hashlib.sha256(item.data).hexdigest()
        if store.bounce_known(db, bounce_id):
            run.seen_before += 1
            box.mark_processed(item)
            continue
        report = parse(item.data)
        whose = attribute(db, report, settings.return_path)
        subscriber, message_id, how = whose if whose else (None, None, None)
        bounce = store.Bounce(
            bounce_id,
            report.kind,
            subscriber,
            message_id,
            how,
            report.recipient,
            report.status,
            report.detail,
            report.source,
        )
        action = store.record_bounce(db, bounce, _reason(report, store.now_iso()[:10]))
        box.mark_processed(item)
        if action is None:  # another reader recorded it a moment ago
            run.seen_before += 1
            continue
        soft = store.soft_bounces(db, subscriber) if subscriber and report.kind == "soft" else 0
        run.outcomes.append(
            Outcome(
                report.kind,
                subscriber,
                action,
                report.status,
                report.detail,
                report.recipient,
                report.source,
                soft,
            )
        )
    return run


def require_mailbox(settings: Settings) -> str:
    if not settings.bounce_mailbox:
        raise ConfigError(
            f"{PREFIX}BOUNCE_MAILBOX is not set: set it to the mailbox bounces and complaints "
            f"arrive in, e.g. export {PREFIX}BOUNCE_MAILBOX='imaps://USER:PASSWORD@imap.example.org"
            f"/INBOX' or the path of a Maildir"
        )
    return settings.bounce_mailbox


def read_bounces(settings: Settings) -> BounceRun:
    """`digest bounces`: read DIGEST_BOUNCE_MAILBOX once; each read is recorded (with why it
    failed, if it did) for `digest status`."""
    spec = require_mailbox(settings)
    db = store.open_db(settings.db_path)
    started = store.now_iso()
    shown = describe(spec)
    run = BounceRun(shown)
    try:
        box = open_mailbox(spec)
        try:
            run = process(db, box, settings)
        finally:
            box.close()
    except DigestError as exc:
        store.record_bounce_check(db, started, shown, run.read, str(exc))
        raise
    store.record_bounce_check(db, started, shown, run.read)
    return run


def summary(run: BounceRun) -> str:
    new = len(run.outcomes)
    parts = [
        _plural(run.count("hard"), "hard bounce"),
        _plural(run.count("soft"), "soft bounce"),
        _plural(run.count("complaint"), "complaint"),
    ]
    unattributed = sum(1 for o in run.outcomes if o.subscriber is None and o.kind != "other")
    parts.append(f"{unattributed} not attributed")
    parts.append(_plural(sum(1 for o in run.outcomes if o.kind == "other"), "other message"))
    before = f" ({run.seen_before} read before)" if run.seen_before else ""
    return f"Read {_plural(new, 'new message')} from {run.mailbox}{before}: {', '.join(parts)}."


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe_outcome(o: Outcome) -> str:
    """One line per attributed report (the CLI prints it; the daemon logs it)."""
    what = {"hard": "hard bounce", "soft": "soft bounce", "complaint": "complaint"}.get(
        o.kind, "report"
    )
    status = f" {o.status}" if o.status and o.kind != "complaint" else ""
    detail = f" ({o.status}, {o.detail})" if o.kind == "complaint" else _paren(o.detail)
    line = f"{o.subscriber}: {what}{status}{detail}: {o.action}"
    if o.action == "suspended":
        line += f"; `digest subscribers enable {o.subscriber}` sends to it again"
    elif o.action == "counted":
        line += f", {_plural(o.soft_bounces, 'soft bounce')} so far"
    return line


def describe_unattributed(o: Outcome) -> str:
    what = {"hard": "hard bounce", "soft": "soft bounce", "complaint": "complaint"}[o.kind]
    about = f" for {o.recipient}" if o.recipient else ""
    return (
        f"not attributed: a {what}{about} names no email of ours (no Message-ID from the outbox"
        f", no VERP return path); nothing suspended ({o.source})"
    )


def _paren(text: str) -> str:
    return f" ({text})" if text else ""


def lines(run: BounceRun) -> Iterator[tuple[str, str]]:
    """(level, text) for each report: "info" for attributed ones, "warning" for the rest."""
    for o in run.outcomes:
        if o.subscriber is not None and o.kind != "other":
            yield "info", describe_outcome(o)
        elif o.kind != "other":
            yield "warning", describe_unattributed(o)


def before_send(settings: Settings) -> None:
    """The daemon, before each send: read the bounce mailbox when it is set. A failure is
    logged and never raised: bounces must not hold back the morning's emails."""
    if not settings.bounce_mailbox:
        return
    try:
        run = read_bounces(settings)
    except DigestError as exc:
        log.error("reading bounces failed (sending anyway): %s", exc)
        return
    except Exception as exc:  # a bug must not stop the send
        log.error(
            "reading bounces crashed (a bug in digest; sending anyway): %s: %s",
            type(exc).__name__,
            exc,
        )
        return
    log.info("%s", summary(run))
    for level, text in lines(run):
        (log.warning if level == "warning" else log.info)("%s", text)
