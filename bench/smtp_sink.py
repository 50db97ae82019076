"""A loopback aiosmtpd server in its own process that accepts and counts messages.

It runs apart from both `digest send` and the benchmark's own client, so neither shares a
Python interpreter (or its GIL) with the server. It keeps no message: only counts, bytes and
the times of the first and last accepted message.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import socket
import time
from typing import Any

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (aiosmtpd 1.4.6 cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self.peers: set[tuple[str, int]] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        self.messages += 1
        self.bytes += len(envelope.original_content or b"")
        self.first = self.first or now
        self.last = now
        self.peers.add(tuple(session.peer[:2]))
        return "250 OK"

    def stats(self) -> dict[str, Any]:
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
            elif command == "reset":
                counter.reset()
                control.send("ok")
            else:
                break
    finally:
        controller.stop()


class SmtpSink:
    """``with SmtpSink() as sink:`` an SMTP server on ``sink.host``:``sink.port``."""

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

    def stats(self) -> dict[str, Any]:
        """messages, bytes, first and last (epoch seconds) since the last reset."""
        self._control.send("stats")
        return dict(self._control.recv())

    def reset(self) -> None:
        self._control.send("reset")
        self._control.recv()
