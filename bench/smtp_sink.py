"""A loopback aiosmtpd server in its own process that accepts and counts messages.

It runs apart from both `digest send` and the benchmark's own client, so neither shares a
Python interpreter (or its GIL) with the server. It counts messages, bytes and the times of the
first and last accepted message and, when asked (``reset(capture=path)``), appends every
accepted message to a spool file (see ``read_spool``) for the bare client to send again.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (aiosmtpd 1.4.6 cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Counter:
    def __init__(self) -> None:
        self.spool: IO[bytes] | None = None
        self.reset()

    def reset(self, capture: str | None = None) -> None:
        if self.spool is not None:
            self.spool.close()
        self.spool = open(capture, "ab") if capture else None  # noqa: SIM115 (kept open)
        self.messages = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self.peers: set[tuple[str, int]] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        content = bytes(envelope.original_content or b"")
        if self.spool is not None:
            self.spool.write(_spool_header(envelope.mail_from, envelope.rcpt_tos, len(content)))
            self.spool.write(content)
        self.messages += 1
        self.bytes += len(content)
        self.first = self.first or now
        self.last = now
        self.peers.add(tuple(session.peer[:2]))
        return "250 OK"

    def stats(self) -> dict[str, Any]:
        if self.spool is not None:
            self.spool.flush()
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "first": self.first,
            "last": self.last,
            "connections": len(self.peers),  # client connections that delivered a message
        }


def _serve(
    port: int, control: multiprocessing.connection.Connection, cpus: set[int] | None = None
) -> None:
    from aiosmtpd.controller import Controller

    if cpus:
        os.sched_setaffinity(0, cpus)

    counter = _Counter()
    controller = Controller(
        counter,
        hostname=HOST,
        port=port,
        server_hostname="smtp.bench.test",  # skips a slow getfqdn()
        ready_timeout=10.0,
        enable_SMTPUTF8=True,
    )
    controller.start()
    control.send("ready")
    try:
        while True:
            command = control.recv()
            if command == "stats":
                control.send(counter.stats())
            elif isinstance(command, tuple) and command[0] == "reset":
                counter.reset(command[1])
                control.send("ok")
            else:
                break
    finally:
        controller.stop()
        counter.reset()


def _spool_header(mail_from: str | None, rcpt_tos: list[str], size: int) -> bytes:
    return f"{size} {mail_from or ''} {','.join(rcpt_tos)}\n".encode()


def read_spool(path: Path) -> Iterator[tuple[str, list[str], int, int]]:
    """(mail from, recipients, offset, size) of each message in a spool file, in order."""
    with path.open("rb") as handle:
        offset = 0
        while line := handle.readline():
            size_text, mail_from, rcpts = line.decode().rstrip("\n").split(" ", 2)
            size = int(size_text)
            offset += len(line)
            yield mail_from, rcpts.split(","), offset, size
            offset += size
            handle.seek(offset)


class SmtpSink:
    """``with SmtpSink() as sink:`` an SMTP server on ``sink.host``:``sink.port``."""

    name = "aiosmtpd"

    def __init__(self, cpus: set[int] | None = None) -> None:
        """`cpus`: the only CPUs the server may run on (None: any)."""
        self.host, self.port = HOST, free_port()
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(self.port, child, cpus), daemon=True)

    def __enter__(self) -> SmtpSink:
        self._process.start()
        if not self._control.poll(30) or self._control.recv() != "ready":
            raise RuntimeError("the SMTP sink did not start within 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._control.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def stats(self, expected: int | None = None) -> dict[str, Any]:
        """messages, bytes, first and last (epoch seconds) since the last reset (`expected`:
        the caller's count, unused: what was accepted has been counted)."""
        self._control.send("stats")
        return dict(self._control.recv())

    def reset(self, capture: Path | None = None) -> None:
        """Count from zero; append every message accepted from now on to `capture` (if any)."""
        self._control.send(("reset", str(capture) if capture else None))
        self._control.recv()

    def wait_idle(self) -> None:
        """Nothing to wait for: aiosmtpd keeps no queue."""
