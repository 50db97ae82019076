"""Talking to the mail server: one `Messenger` per SMTP connection, and a `Pool` of sender
threads, one connection each, that only push messages and say how each fared.

Messages come as bytes from digest/mailer.py, already CRLF-ended and dot-safe: they go to the
socket as they are (smtplib's `data` would scan every message again for line ends and leading
dots, ~1.5 ms of CPU per 130 KB); anything else takes smtplib's own path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import socket
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from digest.config import Settings
from digest.errors import SmtpError
from digest.mailer import header_value
from digest.reports import verp_address

log = logging.getLogger(__name__)


def wire_ready(data: bytes) -> bool:
    """Whether `data` can go to DATA as it is: CRLF-ended, no line starting with "."."""
    return data.endswith(b"\r\n") and not data.startswith(b".") and b"\n." not in data


class _Direct:
    """smtplib's DATA, minus re-scanning a message that is ready for the wire."""

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes) or not wire_ready(msg):
            return super().data(msg)  # type: ignore[misc]
        self.putcmd("data")  # type: ignore[attr-defined]
        code, reply = self.getreply()  # type: ignore[attr-defined]
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        self.send(msg + b".\r\n")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined,no-any-return]


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


class Job(Protocol):
    data: bytes
    to: str


J = TypeVar("J", bound=Job)

SENDER_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005


class Pool(Generic[J]):
    """One thread per SMTP connection (DIGEST_SMTP_CONNECTIONS), each with its own Messenger
    reused for many messages. A sender only sends: `accepted(job)` runs on its thread right
    after a 250, before that connection carries the next message (the outbox records it as
    sent there); every result then goes back to the caller through `results`. Each message
    goes to the connection with the fewest waiting, in turn among equals."""

    def __init__(
        self,
        settings: Settings,
        accepted: Callable[[J], None],
        finished: Callable[[], None] = lambda: None,
        seal: Callable[[bytes], bytes] | None = None,
    ) -> None:
        spacer = Spacer(settings.smtp_rate)  # DIGEST_SMTP_RATE is for all connections together
        self.messengers = [Messenger(settings, spacer) for _ in range(settings.smtp_connections)]
        self.accepted, self.finished = accepted, finished
        # The last touch on each message, on its sender's thread (the DKIM signature: OpenSSL
        # and hashlib let go of the GIL, so it runs beside the main thread's building).
        self.seal = seal
        self.jobs: list[queue.SimpleQueue[J | None]] = [
            queue.SimpleQueue() for _ in self.messengers
        ]
        self.load = [0] * len(self.messengers)  # messages handed to each, result not yet taken
        self.turn = 0
        self.results: queue.SimpleQueue[tuple[J, SendResult | Exception]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.switch_interval: float | None = None

    @property
    def size(self) -> int:
        return len(self.messengers)

    def connect(self, *, refresh: bool = False) -> None:
        """Open every connection (`refresh`: check each is still alive, else reopen it); only
        while no message is out. Raises SmtpError when the first cannot be opened."""
        for n, messenger in enumerate(list(self.messengers)):
            try:
                if refresh:
                    messenger.refresh()
                elif not messenger.connected:
                    messenger.connect()
            except SmtpError as exc:
                if n == 0 or self.threads:
                    raise
                # e.g. a server that limits connections per client: go on with fewer
                log.warning("sending over %d SMTP connections, not more: %s", n, exc)
                del self.messengers[n:], self.jobs[n:], self.load[n:]
                return

    def submit(self, job: J) -> int:
        """Hand `job` to a connection; returns which."""
        if not self.threads:
            # The senders mostly wait on the server; when a reply comes they must get the GIL
            # from the main thread (building the next emails) at once, not after the default
            # 5 ms, or each connection idles for a few ms at every reply.
            self.switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SENDER_SWITCH_INTERVAL)
            for n, (messenger, jobs) in enumerate(zip(self.messengers, self.jobs, strict=True)):
                thread = threading.Thread(
                    target=self._work, args=(messenger, jobs), name=f"smtp-{n + 1}", daemon=True
                )
                thread.start()
                self.threads.append(thread)
        order = [(self.turn + k) % self.size for k in range(self.size)]
        chosen = min(order, key=lambda n: self.load[n])
        self.turn = (chosen + 1) % self.size
        self.load[chosen] += 1
        self.jobs[chosen].put(job)
        return chosen

    def done(self, connection: int) -> None:
        """The caller took a result of `connection`."""
        self.load[connection] -= 1

    def _work(self, messenger: Messenger, jobs: queue.SimpleQueue[J | None]) -> None:
        try:
            while (job := jobs.get()) is not None:
                try:
                    data = self.seal(job.data) if self.seal is not None else job.data
                    result: SendResult | Exception = messenger.send(data, job.to)
                    if isinstance(result, SendResult) and result.accepted:
                        self.accepted(job)
                except Exception as exc:  # SmtpError (the server is gone), the database, or a
                    result = exc  # bug: the caller stops the run; the email stays pending
                self.results.put((job, result))
        finally:
            self.finished()

    def take_back(self) -> list[tuple[J, int]]:
        """The jobs handed out that no sender has picked up yet, with their connection."""
        jobs = []
        for connection, waiting in enumerate(self.jobs):
            while True:
                try:
                    job = waiting.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    jobs.append((job, connection))
                    self.done(connection)
        return jobs

    def abort(self) -> None:
        """From any thread: stop waiting on the server (sends in progress come back cut off)."""
        for messenger in self.messengers:
            messenger.abort()

    def close(self) -> None:
        for jobs in self.jobs:
            jobs.put(None)
        for thread in self.threads:
            thread.join()
        self.threads = []
        if self.switch_interval is not None:
            sys.setswitchinterval(self.switch_interval)
            self.switch_interval = None
        for messenger in self.messengers:
            messenger.close()
