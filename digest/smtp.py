"""Talking to the mail server: one `Messenger` per SMTP connection, sharing a rate through a
`Spacer`; `abort_all` cuts them all at once. The sender threads, one Messenger each, are the
`Pool` of digest/smtp_pool.py.

Messages come as bytes from digest/mailer.py, already CRLF-ended and dot-safe: they go to the
socket as they are (smtplib's `data` would scan every message again for line ends and leading
dots, ~1.5 ms of CPU per 130 KB); anything else takes smtplib's own path.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from smtplib import quoteaddr
from types import TracebackType

from digest.config import Settings
from digest.errors import SmtpError
from digest.mailer import header_value
from digest.verp import verp_address

_DOT_LINE = re.compile(rb"\n\.")


def wire_ready(data: bytes) -> bool:
    """Whether `data` can go to DATA as it is: CRLF-ended, no line starting with ".". (The
    regular expression looks through a 140 KB email in 55 us; `b"\\n." in data` took 120.)"""
    return data.endswith(b"\r\n") and not data.startswith(b".") and not _DOT_LINE.search(data)


class _Direct:
    """smtplib's `sendmail`, minus re-scanning a message that is ready for the wire, and with
    the envelope pipelined (RFC 2920) when the server offers PIPELINING: MAIL, RCPT and DATA go
    in one write and their replies are read together, so a message costs two waits on the
    server, not four. Each wait is also a wait for the GIL while the main thread builds the
    next emails: pipelined, the sender pool pushed 1.1-1.7x the emails/s of the plain path
    (ten alternated pairs, the same build load on the main thread, the same Postfix). Anything
    else takes smtplib's own path."""

    _ready: bytes | None = None  # the message `sendmail` found wire-ready, while it sends it

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: bytes | str,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        if (
            isinstance(msg, bytes)
            and isinstance(to_addrs, list)
            and len(to_addrs) == 1
            and not mail_options
            and not rcpt_options
            and _plain(from_addr)
            and _plain(to_addrs[0])
            and wire_ready(msg)
        ):
            self.ehlo_or_helo_if_needed()  # type: ignore[attr-defined]
            if self.has_extn("pipelining"):  # type: ignore[attr-defined]
                self._pipelined(from_addr, to_addrs[0], msg)
                return {}
            self._ready = msg  # scanned: `data` need not scan it again
        try:
            return super().sendmail(  # type: ignore[misc,no-any-return]
                from_addr, to_addrs, msg, mail_options, rcpt_options
            )
        finally:
            self._ready = None

    def _pipelined(self, sender: str, to: str, msg: bytes) -> None:
        """MAIL, RCPT and DATA at once, then the message: what `sendmail` does and raises for
        one recipient, as its three replies say."""
        size = f" size={len(msg)}" if self.has_extn("size") else ""  # type: ignore[attr-defined]
        envelope = f"mail FROM:{quoteaddr(sender)}{size}\r\nrcpt TO:{quoteaddr(to)}\r\ndata\r\n"
        self.send(envelope.encode("ascii"))  # type: ignore[attr-defined]
        mail, rcpt, data = (self.getreply() for _ in range(3))  # type: ignore[attr-defined]
        if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            # A server may not take DATA for a refused envelope (RFC 2920); this one did:
            # end that connection without a message (the email goes again, as it is).
            self.close()  # type: ignore[attr-defined]
            raise smtplib.SMTPServerDisconnected(f"DATA taken after {mail[0]}/{rcpt[0]}")
        if mail[0] != 250:
            self._end(mail[0])
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            self._end(rcpt[0])
            raise smtplib.SMTPRecipientsRefused({to: rcpt})
        if data[0] != 354:
            self._end(data[0])
            raise smtplib.SMTPDataError(data[0], data[1])
        code, reply = self._message(msg)
        if code != 250:
            self._end(code)
            raise smtplib.SMTPDataError(code, reply)

    def _end(self, code: int) -> None:
        """After a refusal: the server is closing (421), else start again (RSET)."""
        if code == 421:
            self.close()  # type: ignore[attr-defined]
        else:
            self._rset()  # type: ignore[attr-defined]

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        ready = msg is self._ready or (isinstance(msg, bytes) and wire_ready(msg))
        if not ready:
            return super().data(msg)  # type: ignore[misc,no-any-return]
        self.putcmd("data")  # type: ignore[attr-defined]
        code, reply = self.getreply()  # type: ignore[attr-defined]
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        return self._message(msg)  # type: ignore[arg-type]

    def _message(self, msg: bytes) -> tuple[int, bytes]:
        """After the server's 354: the message, wire-ready, its end, and the server's reply."""
        self.send(msg + b".\r\n")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined,no-any-return]


def _plain(address: str) -> bool:
    """An address the pipelined envelope writes as smtplib would: ASCII, one line."""
    return address.isascii() and "\r" not in address and "\n" not in address


class _Connection(_Direct, smtplib.SMTP):
    pass


class _SecureConnection(_Direct, smtplib.SMTP_SSL):
    pass


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
    """Keeps events at least 1/`rate` seconds apart (rate 0: no limit), across threads: several
    connections sharing one Spacer share the rate."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._last: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:  # take the next free slot, then wait for it outside the lock
            now = self.clock()
            slot = now if self._last is None else max(now, self._last + self.interval)
            self._last = slot
        if slot > now:
            self.sleep(slot - now)


_live: weakref.WeakSet[Messenger] = weakref.WeakSet()  # every Messenger of this process
_live_lock = threading.Lock()


def abort_all() -> int:
    """Cut every SMTP connection of this process at once (`Messenger.abort`), from any thread:
    the daemon's last resort when a stop cannot wait for the mail server. Returns how many
    connections were open."""
    with _live_lock:
        messengers = list(_live)
    return sum(messenger.abort() for messenger in messengers)


class Messenger:
    """One SMTP connection, opened on entry and reused for every message. Several Messengers
    (one per sender thread) share the rate when given the same `spacer`."""

    def __init__(self, settings: Settings, spacer: Spacer | None = None) -> None:
        self.settings = settings
        self.sender = settings.require_from()
        self._smtp: smtplib.SMTP | None = None
        self.spacer = spacer or Spacer(settings.smtp_rate)
        self._aborted = False
        with _live_lock:
            _live.add(self)

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
                smtp: smtplib.SMTP = _SecureConnection(
                    s.smtp_host,
                    s.smtp_port,
                    timeout=s.smtp_timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = _Connection(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
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

    def send(self, data: bytes, to: str) -> SendResult:
        """Send one message, (re)connecting first when needed. A refusal of this recipient or
        message, or a connection lost in the middle, is a result; not reaching the server (or
        it refusing the login or the sender) is an SmtpError."""
        if self._aborted:  # cut by a stop: open no new connection; the email stays pending
            return SendResult(False, 0, "not sent: the run was stopped", lost=True)
        if self._smtp is None:
            self.connect()
        assert self._smtp is not None
        address = parseaddr(self.sender)[1] or self.sender
        # The envelope sender: with DIGEST_RETURN_PATH, one per recipient (VERP), so that a
        # bounce names whose it is (`digest bounces`).
        envelope = (
            verp_address(self.settings.return_path, to) if self.settings.return_path else address
        )
        self.spacer.wait()
        try:
            self._smtp.sendmail(envelope, [to], data)
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

    def abort(self) -> bool:
        """Cut the connection now, from any thread: a read or write blocked on it (a server
        that does not answer) fails at once, so `send` returns `lost` (the email stays pending
        and goes out again as it was, same Message-ID); later sends open no new connection.
        Returns whether a connection was open."""
        self._aborted = True
        smtp = self._smtp
        sock = getattr(smtp, "sock", None) if smtp is not None else None
        if sock is None:
            return False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return True

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
