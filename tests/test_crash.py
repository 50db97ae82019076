"""kill -9 at every stage of `digest send`, and two runs at once.

The stage is made observable without touching digest's code: the arXiv stand-in hangs (so the
process is inside the fetch), or the SMTP stand-in holds a command until the test releases it
(so the process is waiting on the mail server at a known point). Then SIGKILL, a normal run,
and the mailboxes are checked: every owed paper exactly once, at most one duplicate email (the
one in flight, with the same Message-ID)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from helpers import ADA_ROW, ALAN_ROW, GRACE_ROW, Digest, abs_ids, owed, parts
from standins import Fault, SmtpStandin, _SmtpHandler

WAIT = 60  # seconds: only ever reached when something is broken


class Gate:
    """Holds one SMTP command of the `n`-th message (0: the first) until released.

    stage "mail": at MAIL FROM (the email is built and committed, nothing of it sent);
    "data": at the end of DATA, before the server takes the message (released with
    `accept=False` it is then refused, as a server does when the client vanished);
    "accepted": after the server took the message, before its 250 reaches the client."""

    def __init__(self, stage: str, n: int) -> None:
        self.stage, self.n = stage, n
        self.reached, self.released = threading.Event(), threading.Event()
        self.accept = True

    def release(self, accept: bool = True) -> None:
        self.accept = accept
        self.released.set()

    async def hold(self) -> None:
        self.reached.set()
        while not self.released.is_set():
            await asyncio.sleep(0.02)


class _GatedHandler(_SmtpHandler):
    def __init__(self, standin: SmtpStandin, gate: Gate) -> None:
        super().__init__(standin)
        self.gate = gate

    def _due(self, stage: str) -> bool:
        gate = self.gate
        return gate.stage == stage and not gate.reached.is_set() and len(self.s.messages) == gate.n

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._due("mail"):
            await self.gate.hold()
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._due("data"):
            await self.gate.hold()
            if not self.gate.accept:
                return "451 4.4.2 Connection lost before the end of the transaction"
        if self._due("accepted"):
            reply = await super().handle_DATA(server, session, envelope)
            await self.gate.hold()
            return reply
        return await super().handle_DATA(server, session, envelope)


def gate_smtp(smtp: SmtpStandin, gate: Gate) -> None:
    """Make the running stand-in's new connections go through `gate`."""
    assert smtp._controller is not None
    smtp._controller.handler = _GatedHandler(smtp, gate)


@pytest.fixture
def digest(digest: Digest) -> Digest:
    """The shared installation (Ada and Grace, conftest.py) and a third subscriber, Alan."""
    digest.write_subscribers([ADA_ROW, GRACE_ROW, ALAN_ROW])
    return digest


def start(digest: Digest, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        env=digest.env(),
        cwd=digest.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=WAIT)
    assert process.returncode == -signal.SIGKILL


def check_mailboxes(digest: Digest, expected: dict[str, set[str]]) -> int:
    """Every subscriber got every owed paper exactly once, counting an email received twice
    (same Message-ID: the one in flight at the kill) once. Returns how many such duplicates."""
    ids = Counter(m.message["Message-ID"] for m in digest.smtp.messages)
    duplicates = sum(count - 1 for count in ids.values())
    for address, papers in expected.items():
        seen: set[str] = set()
        got: list[str] = []
        for message in digest.smtp.messages:
            if address not in message.rcpt_tos or message.message["Message-ID"] in seen:
                continue
            seen.add(message.message["Message-ID"])
            got += sorted(abs_ids(parts(message.message)[1]))
        assert set(got) == papers, address
        assert len(got) == len(papers), f"{address} got a paper twice in different emails"
    return duplicates


def test_kill_during_the_fetch_then_a_normal_run_delivers_everything(digest: Digest) -> None:
    digest.arxiv.faults.append(Fault.hang(WAIT))
    digest.extra_env["DIGEST_ARXIV_TIMEOUT"] = str(WAIT * 2)
    process = start(digest, "send")
    while not digest.arxiv.requests:  # the request is in: the process is inside the fetch
        assert process.poll() is None, process.communicate()
        threading.Event().wait(0.02)

    kill(process)
    del digest.extra_env["DIGEST_ARXIV_TIMEOUT"]
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert check_mailboxes(digest, owed(digest.arxiv.papers)) == 0
    [killed, normal] = digest.query("SELECT status, message FROM runs ORDER BY id")
    assert killed[0] == "failed" and killed[1].startswith("interrupted: the process stopped")
    assert normal[0] == "ok"


@pytest.mark.parametrize(
    ("stage", "n", "sent_before_kill", "duplicates"),
    [
        ("mail", 0, 0, 0),  # the first email built and committed, nothing sent yet
        ("mail", 1, 1, 0),  # between two sends: the second built, not sent
        ("data", 1, 1, 0),  # the second in DATA, never accepted
        ("accepted", 1, 2, 1),  # the second accepted by the server, its 250 never read
    ],
    ids=["built-not-sent", "between-sends", "in-data", "accepted-not-acknowledged"],
)
def test_kill_while_sending_then_a_normal_run_finishes_with_nothing_lost(
    digest: Digest, stage: str, n: int, sent_before_kill: int, duplicates: int
) -> None:
    gate = Gate(stage, n)
    gate_smtp(digest.smtp, gate)
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: a known order
    process = start(digest, "send")
    assert gate.reached.wait(WAIT), process.communicate()

    kill(process)
    gate.release(accept=False)
    assert len(digest.smtp.messages) == sent_before_kill
    pending = digest.query("SELECT message_id FROM emails WHERE status = 'pending'")
    assert len(pending) == 1  # the email at the gate was committed before it was sent
    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert "(left pending by an earlier run, same Message-ID)" in result.stdout
    assert check_mailboxes(digest, owed(digest.arxiv.papers)) == duplicates
    # the email in flight went out again with the Message-ID it was committed with
    resent = [m for m in digest.smtp.messages if m.message["Message-ID"] == pending[0][0]]
    assert len(resent) == 1 + duplicates
    assert digest.query("SELECT count(*) FROM emails WHERE status != 'sent'") == [(0,)]


def test_kill_while_connecting_to_the_mail_server(digest: Digest) -> None:
    # The mail server accepts the connection but never greets: the process is connecting
    # (which it does first, so that a bad mail setup stops a run before arXiv is asked).
    digest.smtp.stop()
    listener = socket.create_server((digest.smtp.host, digest.smtp.port))
    try:
        process = start(digest, "send")
        connection, _ = listener.accept()
        with connection:
            kill(process)
    finally:
        listener.close()
    assert digest.query("SELECT count(*) FROM emails") == [(0,)]
    digest.smtp.start()

    result = digest.run("send")

    assert result.returncode == 0, result.stderr
    assert check_mailboxes(digest, owed(digest.arxiv.papers)) == 0


def test_two_runs_started_at_once_only_one_sends(digest: Digest) -> None:
    gate = Gate("data", 0)
    gate_smtp(digest.smtp, gate)
    runs = [start(digest, "send"), start(digest, "send")]
    assert gate.reached.wait(WAIT)  # one of them holds the lock and is sending...
    # ...so the other finds the lock taken and stops without doing anything
    while all(run.poll() is None for run in runs):
        threading.Event().wait(0.02)
    [loser] = [run for run in runs if run.returncode is not None]
    [winner] = [run for run in runs if run is not loser]
    _out, err = loser.communicate(timeout=WAIT)
    gate.release()
    _winner_out, winner_err = winner.communicate(timeout=WAIT)

    assert loser.returncode == 1
    assert err.strip().splitlines()[-1].startswith("Error: another `digest send` is running on "), (
        err
    )
    assert winner.returncode == 0, winner_err
    assert len(digest.smtp.messages) == 3
    assert check_mailboxes(digest, owed(digest.arxiv.papers)) == 0
    assert digest.query("SELECT count(*) FROM runs") == [(1,)]
