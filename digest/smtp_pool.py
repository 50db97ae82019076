"""The sender pool: one thread per SMTP connection (DIGEST_SMTP_CONNECTIONS), each with its own
`smtp.Messenger`, that only push messages and say how each fared; digest/dispatch.py feeds it
and records the results.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from digest.config import Settings
from digest.errors import SmtpError
from digest.smtp import Messenger, SendResult, Spacer

log = logging.getLogger(__name__)


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
        seal: Callable[[J], bytes] | None = None,
    ) -> None:
        spacer = Spacer(settings.smtp_rate)  # DIGEST_SMTP_RATE is for all connections together
        self.messengers = [Messenger(settings, spacer) for _ in range(settings.smtp_connections)]
        self.accepted, self.finished = accepted, finished
        # The last touch on each message (the DKIM signature), made when it is handed out, on
        # the caller's thread: a sender only sends. Signed on the sender, each message waited
        # on its signature (~1 ms, nearly all of it holding the GIL) between the server's
        # reply to the last one and its own MAIL: against a server that takes mail as fast as
        # it comes, each connection idled that long per message (whole-run ratio against
        # aiosmtpd 0.75 signed there; bench/RESULTS.md).
        self.seal = seal
        self.jobs: list[queue.SimpleQueue[tuple[J, bytes] | None]] = [
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
        try:
            data = self.seal(job) if self.seal is not None else job.data
        except Exception as exc:  # as a failed send: the caller stops the run, email pending
            self.results.put((job, exc))
            return chosen
        self.jobs[chosen].put((job, data))
        return chosen

    def done(self, connection: int) -> None:
        """The caller took a result of `connection`."""
        self.load[connection] -= 1

    def _work(self, messenger: Messenger, jobs: queue.SimpleQueue[tuple[J, bytes] | None]) -> None:
        try:
            while (handed := jobs.get()) is not None:
                job, data = handed
                try:
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
                    handed = waiting.get_nowait()
                except queue.Empty:
                    break
                if handed is not None:
                    jobs.append((handed[0], connection))
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
