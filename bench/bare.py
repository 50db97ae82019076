"""The yardstick: a bare smtplib client resending captured messages, as a plain user would.

Each of `connections` threads opens one ``smtplib.SMTP`` connection and calls
``sendmail(mail_from, rcpts, message_bytes)`` for its share of the messages (every
`connections`-th one), exactly the bytes, sender and recipients a receiver got from
`digest send` (read from the aiosmtpd sink's spool file). Timed from before the first connect
to after the last QUIT.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

from smtp_sink import read_spool


def resend(spool: Path, receiver: Any, connections: int) -> tuple[float, int]:
    """(messages/s, messages) of the bare client sending every message of `spool` to
    `receiver` (host, port, stats()) over `connections` connections; checks they arrived."""
    index = list(read_spool(spool))
    if not index:
        return 0.0, 0
    errors: list[BaseException] = []
    fd = os.open(spool, os.O_RDONLY)

    def push(share: range) -> None:
        try:
            with smtplib.SMTP(receiver.host, receiver.port, timeout=60) as client:
                for n in share:
                    mail_from, rcpts, offset, size = index[n]
                    client.sendmail(mail_from, rcpts, os.pread(fd, size, offset))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=push, args=(range(c, len(index), connections),))
        for c in range(connections)
    ]
    try:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    if errors:
        raise SystemExit(f"the bare smtplib client failed: {errors[0]!r}")
    delivered = receiver.stats(len(index))["messages"]
    if delivered != len(index):
        raise SystemExit(f"the bare smtplib client: the server got {delivered} of {len(index)}")
    return len(index) / elapsed, len(index)
