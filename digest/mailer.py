"""Messages and the SMTP connection: building an email is separate from sending it."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr
from types import TracebackType

from digest.config import Settings
from digest.errors import SmtpError
from digest.models import RenderedEmail


def header_value(value: str) -> str:
    """A header value on one line: CR, LF and other whitespace runs become one space."""
    return " ".join(value.split())


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1] or sender
    return address.rpartition("@")[2] or "localhost"


def new_message_id(sender: str) -> str:
    return make_msgid(idstring="digest", domain=sender_domain(sender))


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


@dataclass(frozen=True)
class SendResult:
    """How one message fared: accepted (250), refused (`code` and the server's `reply`), or
    `lost`: the connection closed (a 421 or a drop) before the server said 250."""

    accepted: bool
    code: int = 250
    reply: str = ""
    lost: bool = False

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def detail(self) -> str:
        if self.lost:
            return f"the mail server closed the connection ({self.reply})"
        kind = "refused it" if self.permanent else "deferred it"
        return f"the mail server {kind}: {self.code} {self.reply}"


class Spacer:
    """Keeps events at least 1/`rate` seconds apart (rate 0: no limit)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._last: float | None = None

    def wait(self) -> None:
        if self.interval and self._last is not None:
            remaining = self._last + self.interval - self.clock()
            if remaining > 0:
                self.sleep(remaining)
        self._last = self.clock()


class Messenger:
    """One SMTP connection, opened on entry and reused for every message."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sender = settings.require_from()
        self._smtp: smtplib.SMTP | None = None
        self.spacer = Spacer(settings.smtp_rate)

    def __enter__(self) -> Messenger:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._smtp is not None

    def connect(self) -> None:
        s = self.settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        try:
            if s.smtp_security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host,
                    s.smtp_port,
                    timeout=s.smtp_timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpError(
                f"the mail server at {where} refused the login for {s.smtp_user!r} "
                f"({exc.smtp_code}); check DIGEST_SMTP_USER and DIGEST_SMTP_PASSWORD"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SmtpError(
                f"the mail server at {where} does not support {exc}; "
                f"check DIGEST_SMTP_SECURITY (starttls, ssl or none)"
            ) from None
        except ssl.SSLError as exc:
            raise SmtpError(
                f"TLS with the mail server at {where} failed ({exc.reason}); "
                f"check DIGEST_SMTP_SECURITY and DIGEST_SMTP_PORT"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpError(
                f"cannot reach the mail server at {where}: {exc}; "
                f"check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT"
            ) from None
        self._smtp = smtp

    def send(self, msg: EmailMessage, to: str) -> SendResult:
        """Send one message, (re)connecting first when needed. A refusal of this recipient or
        message, or a connection lost in the middle, is a result; not reaching the server (or
        it refusing the login or the sender) is an SmtpError."""
        if self._smtp is None:
            self.connect()
        assert self._smtp is not None
        data = msg.as_bytes(policy=SMTP)
        address = parseaddr(self.sender)[1] or self.sender
        self.spacer.wait()
        try:
            self._smtp.sendmail(address, [to], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return self._refused(code, reply)
        except smtplib.SMTPDataError as exc:
            return self._refused(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code == 421:
                return self._refused(exc.smtp_code, exc.smtp_error)
            raise SmtpError(
                f"the mail server refused the sender {address} ({exc.smtp_code} "
                f"{_text(exc.smtp_error)}); check DIGEST_FROM"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            return SendResult(False, 0, str(exc) or type(exc).__name__, lost=True)
        return SendResult(True)

    def refresh(self) -> None:
        """Make sure the connection is still open (it may have idled out): NOOP, else reconnect."""
        if self._smtp is not None:
            try:
                if self._smtp.noop()[0] == 250:
                    return
            except (OSError, smtplib.SMTPException):
                pass
            self._drop()
        self.connect()

    def _refused(self, code: int, reply: bytes | str) -> SendResult:
        if code == 421:  # the server is closing the connection: reconnect for the next one
            self._drop()
            return SendResult(False, code, f"421 {_text(reply)}", lost=True)
        return SendResult(False, code, _text(reply))

    def _drop(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return header_value(reply)
