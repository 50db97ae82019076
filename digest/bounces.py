"""`digest bounces`: read the bounce mailbox, find whose each bounce or complaint is, and
suspend the addresses that hard-bounce or complain.

- Whose (see `attribute`): the Message-ID of our email found in the report, looked up in the
  outbox; else, with DIGEST_RETURN_PATH set, the VERP address the report was sent to
  (bounces+ada=example.org@example.org). A report neither finds is recorded as not attributed
  and never suspends anyone.
- What: a hard bounce or a complaint suspends the address at once (as repeated 5xx refusals do
  at send time; `digest subscribers enable` lifts it); a soft bounce is counted.
Each message is recorded by the SHA-256 of its bytes before it is marked processed, so reading
it again (a second run, a mark that failed, two readers at once) changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from digest import bounce_log, store
from digest.config import PREFIX, Settings
from digest.errors import ConfigError, DigestError
from digest.mailbox import Mailbox, describe, open_mailbox
from digest.reports import Report, parse
from digest.verp import verp_recipient

log = logging.getLogger(__name__)


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
    found = bounce_log.email_subscriber(db, report.message_ids)
    if found is not None:
        return found[0], found[1], "Message-ID"
    if return_path:
        for address in report.sent_to:
            recipient = verp_recipient(address, return_path)
            latest = bounce_log.latest_email_to(db, recipient) if recipient else None
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


def process(
    db: store.sqlite_utils.Database, box: Mailbox, settings: Settings, run: BounceRun | None = None
) -> BounceRun:
    """Read every unprocessed message of `box`, record and apply it, mark it processed."""
    run = run if run is not None else BounceRun(box.describe())
    for item in box.unprocessed():
        bounce_id = hashlib.sha256(item.data).hexdigest()
        if bounce_log.bounce_known(db, bounce_id):
            run.seen_before += 1
            box.mark_processed(item)
            continue
        report = parse(item.data)
        whose = attribute(db, report, settings.return_path)
        subscriber, message_id, how = whose if whose else (None, None, None)
        bounce = bounce_log.Bounce(
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
        action = bounce_log.record_bounce(db, bounce, _reason(report, store.now_iso()[:10]))
        box.mark_processed(item)
        if action is None:  # another reader recorded it a moment ago
            run.seen_before += 1
            continue
        soft = (
            bounce_log.soft_bounces(db, subscriber) if subscriber and report.kind == "soft" else 0
        )
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
            process(db, box, settings, run)  # `run` counts what was done, should it fail
        finally:
            box.close()
    except DigestError as exc:
        bounce_log.record_bounce_check(db, started, shown, run.read, str(exc))
        raise
    bounce_log.record_bounce_check(db, started, shown, run.read)
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
