"""Sending: built emails through the outbox to the mail server, and what became of each.

The main thread commits each email to the outbox as pending (a few at a time, in one commit)
before handing it to the SMTP pool (digest/smtp_pool.py); each sender thread records a 250 as
sent itself, on its own database connection, before its connection carries the next email. Every
other outcome comes back here: a 5xx fails the email (counting towards suspending the
address); a 4xx or a cut-off connection is tried again within the run, `DIGEST_SMTP_RETRIES`
times with a doubling backoff, after the other subscribers, then deferred (4xx: its papers go
in the next email) or left pending (cut off: it goes again as it is). Outcomes are reported in
the subscribers' order. Asked to stop, nothing more is handed out: emails in flight finish and
are recorded, the ones never handed out are withdrawn (still owed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from digest import outbox, store
from digest.build import Built, Emit, dkim_signer
from digest.config import Settings
from digest.fetch import retry_delay
from digest.models import Subscriber
from digest.report import Outcome, Timings
from digest.smtp import SendResult
from digest.smtp_pool import Pool

log = logging.getLogger(__name__)


@dataclass
class _Item:
    """One email on its way: what to send and what became of the last try."""

    person: Subscriber
    message_id: str
    data: bytes
    papers: int
    size: int
    resumed: bool = False
    last: SendResult | None = None
    seq: int = 0  # its place in the order outcomes are reported
    new: outbox.NewEmail | None = None  # not in the outbox yet: commit it before handing it out
    tries: int = 0
    connection: int = 0  # the sender it was last handed to
    body_hash: bytes | None = None  # DKIM's, when the builder worked it out

    @property
    def to(self) -> str:
        return self.person.email


class _Recorder:
    """Marks accepted emails sent, on the sender thread that got the 250 (one database
    connection per thread)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.local = threading.local()

    def accepted(self, item: _Item) -> None:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = store.open_db(self.db_path)
        outbox.mark_sent(db, [item.message_id])

    def finished(self) -> None:
        db = getattr(self.local, "db", None)
        if db is not None:
            db.conn.close()
            self.local.db = None


class Dispatcher:
    """Sends the built emails of one run and reports each outcome, in order."""

    # Emails built ahead per connection (memory stays flat: ~2.4 MB a connection at the budget):
    # enough to keep both connections busy while the main thread plans the next chunk of
    # subscribers or finishes a new layout (~0.1 s), not 4, with which they starved there.
    PER_CONNECTION = 16
    TICK = 0.1  # seconds between two looks at `should_stop` while waiting

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: Settings,
        run_id: int,
        emit: Emit,
        timings: Timings,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db, self.settings, self.run_id, self.emit = db, settings, run_id, emit
        self.timings, self.should_stop, self.sleep = timings, should_stop, sleep
        recorder = _Recorder(settings.db_path)
        signer = dkim_signer(settings)
        seal = (lambda item: signer.seal(item.data, item.body_hash)) if signer else None
        self.pool: Pool[_Item] = Pool(settings, recorder.accepted, recorder.finished, seal)
        self.retry: list[_Item] = []
        self.buffer: list[_Item] = []
        self.batch = self.PER_CONNECTION * settings.smtp_connections
        self.outstanding = 0  # handed to the senders, result not yet taken
        self.halted = False  # no more emails are handed out (asked to stop, or a failure)
        self.failure: Exception | None = None
        self.withdrawn = 0  # emails built but never handed out, because the run stopped
        self.slots: dict[int, Outcome | None] = {}
        self.next_seq = self.emit_seq = 0

    # Outcomes, in order --------------------------------------------------------------------

    def note(self, outcome: Outcome) -> None:
        """Report an outcome decided here and now (in its turn, after the emails before it)."""
        self._fill(self._reserve(), outcome)

    def _reserve(self) -> int:
        self.next_seq += 1
        return self.next_seq - 1

    def _fill(self, seq: int, outcome: Outcome | None) -> None:
        self.slots[seq] = outcome
        while self.emit_seq in self.slots:
            ready = self.slots.pop(self.emit_seq)
            self.emit_seq += 1
            if ready is not None:
                self.emit(ready)

    # Handing out ---------------------------------------------------------------------------

    def connect(self, *, refresh: bool = False) -> None:
        """Open the connections (`refresh`: check they are alive, else reopen them). Raises
        SmtpError when it cannot."""
        self.pool.connect(refresh=refresh)

    def stopping(self) -> bool:
        """Whether the run was asked to stop (then nothing more is handed out)."""
        if not self.halted and self.should_stop is not None and self.should_stop():
            self._halt()
        return self.halted

    def take(self, built: Built, new: outbox.NewEmail | None = None, resumed: bool = False) -> None:
        """Send `built` (a `new` email enters the outbox first; a resumed one is in it)."""
        item = _Item(
            built.person, built.message_id, built.data, built.papers, len(built.data), resumed
        )
        item.new, item.seq, item.body_hash = new, self._reserve(), built.body_hash
        self.buffer.append(item)
        self._pump()
        while len(self.buffer) >= self.batch and not self.halted:  # memory stays flat
            self._wait()
            self._pump()
        self.check()

    def _pump(self) -> None:
        """Hand built emails to the senders: as many as are idle, or the whole buffer once it
        is full (one commit for many). Each is committed to the outbox first."""
        if self.stopping() or not self.buffer:
            return
        idle = self.pool.size - self.outstanding
        if len(self.buffer) >= self.batch and self.outstanding <= self.batch:
            take = len(self.buffer)
        elif idle > 0:
            take = idle
        else:
            return
        items, self.buffer = self.buffer[:take], self.buffer[take:]
        outbox.add_pending(self.db, self.run_id, (i.new for i in items if i.new is not None))
        self.timings.started_sending()
        for item in items:
            item.new = None
            item.tries += 1
            self.outstanding += 1
            item.connection = self.pool.submit(item)

    # Taking results ------------------------------------------------------------------------

    def _wait(self) -> None:
        """Take the results that came back (waiting up to TICK for one); look whether we are
        asked to stop."""
        try:
            self._result(*self.pool.results.get(timeout=self.TICK))
            while True:
                self._result(*self.pool.results.get_nowait())
        except queue.Empty:
            pass
        self.stopping()

    def _result(self, item: _Item, result: SendResult | Exception) -> None:
        self.pool.done(item.connection)
        self.outstanding -= 1
        self.timings.send_ended = time.perf_counter()
        if isinstance(result, Exception):  # the server is gone or refuses us, or the outbox
            if self.failure is None:  # could not be written: the email stays pending and the
                self.failure = result  # run stops
            self._halt()
            self._fill(item.seq, None)
            return
        item.last = result
        email, papers, size = item.person.email, item.papers, item.size
        if result.accepted:  # already recorded as sent by its sender
            self.timings.emails += 1
            self._fill(item.seq, Outcome(email, "sent", papers, size, resumed=item.resumed))
            return
        outbox.record_attempt(self.db, item.message_id, result.code, result.detail)
        if result.permanent:
            detail = result.detail
            if outbox.mark_failed(
                self.db, item.message_id, detail, suspend_after=self.settings.suspend_after
            ):
                detail += (
                    f"; after {self.settings.suspend_after} permanent failures in a row the "
                    f"address is suspended: `digest subscribers enable {email}` sends to it again"
                )
            self._fill(item.seq, Outcome(email, "failed", papers, size, detail, item.resumed))
            return
        log.warning("%s: %s; trying again later in this run", email, result.detail)
        self.retry.append(item)
        self._fill(item.seq, None)  # its outcome comes once the retries are over

    def _halt(self) -> None:
        """Hand out nothing more: the emails built or handed out but not picked up by a sender
        are withdrawn (new ones never reached the mail server: forgotten, their papers owed;
        resumed or retried ones stay pending)."""
        if self.halted:
            return
        self.halted = True
        back = self.pool.take_back()
        self.outstanding -= len(back)
        never_out = [i.message_id for i, _ in back if i.tries == 1 and not i.resumed]
        outbox.withdraw(self.db, never_out)
        for item in [*(i for i, _ in back), *self.buffer]:
            self._fill(item.seq, None)
        self.withdrawn += len(back) + len(self.buffer)
        self.buffer = []

    def drain(self) -> None:
        """Hand out what is built and wait for every result."""
        while self.buffer or self.outstanding:
            self._pump()
            if self.outstanding:
                self._wait()
            elif self.halted:
                break
        self.check()

    def check(self) -> None:
        """Raise the failure that stopped the run, once the emails in flight are done."""
        if self.failure is not None:
            failure = self.failure
            self.failure = None
            while self.outstanding:  # let the emails in flight finish and record them
                self._wait()
            raise failure

    def finish_retries(self) -> None:
        """Try the temporarily refused emails again, waiting longer each round."""
        for attempt in range(1, self.settings.smtp_retries + 1):
            if not self.retry or self.halted:
                break
            self.sleep(retry_delay(attempt, self.settings.retry_backoff))
            again, self.retry = self.retry, []
            for item in again:
                item.seq = self._reserve()
                self.buffer.append(item)
            self.drain()
        if self.halted:  # asked to stop: they stay pending, owed
            return
        for item in self.retry:
            assert item.last is not None
            tries = self.settings.smtp_retries + 1
            tried = "tried once" if tries == 1 else f"tried {tries} times"
            email, papers, size = item.person.email, item.papers, item.size
            if item.last.lost:  # the server may have taken it: send this very email next run
                detail = (
                    f"{item.last.detail} ({tried}); the email stays pending "
                    f"and goes out again as it is with the next run"
                )
                self.note(Outcome(email, "pending", papers, size, detail, item.resumed))
            else:
                detail = (
                    f"{item.last.detail} ({tried}); its papers stay owed and go in the next email"
                )
                outbox.mark_deferred(self.db, item.message_id, detail)
                self.note(Outcome(email, "deferred", papers, size, detail, item.resumed))
        self.retry = []

    @property
    def owed(self) -> int:
        """Emails this run leaves owed because it stopped: built but never handed to the mail
        server, or handed out and cut off (or refused for now) when the run halted, so never
        retried (they stay pending)."""
        return self.withdrawn + (len(self.retry) if self.halted else 0)

    def close(self) -> None:
        """End of the run (or an error): results still coming are taken (each accepted email
        is recorded as sent by then) before the connections close."""
        try:
            self._halt()
            while self.outstanding:
                self._wait()
        finally:
            self.pool.close()
