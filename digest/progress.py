"""How a `digest send` shows its progress: a progress bar with counts on a terminal, one line
per subscriber otherwise (logs, pipes, cron mail)."""

from __future__ import annotations

import time
from typing import Any

import click

from digest.report import OWED, Outcome


def describe(outcome: Outcome) -> str:
    """One line for one subscriber's outcome."""
    if outcome.status == "nothing-new":
        return f"{outcome.email}: nothing new"
    if outcome.status == "not-due":
        return f"{outcome.email}: not due today ({outcome.detail})"
    if outcome.status == "unsubscribed":
        return f"{outcome.email}: unsubscribed, skipped"
    if outcome.status == "suspended":
        return f"{outcome.email}: {outcome.detail}"
    if outcome.status in OWED:
        return f"{outcome.email}: NOT sent: {outcome.detail}"
    what = "sent" if outcome.status == "sent" else "preview written"
    if outcome.resumed:
        what += " (left pending by an earlier run, same Message-ID)"
    return f"{outcome.email}: {outcome.papers} papers, {outcome.size / 1024:.0f} KB, {what}"


class LineProgress:
    """Not a terminal: one line per subscriber on standard output, written a few times a second
    (a write and a flush per line cost a send of thousands of emails a few percent of its CPU;
    a log someone follows still moves at once)."""

    EVERY = 0.25  # seconds between two writes

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.written = time.monotonic()

    def start(self, total: int) -> None:
        pass

    def advance(self, outcome: Outcome) -> None:
        self.lines.append(describe(outcome))
        if time.monotonic() - self.written >= self.EVERY:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            click.echo("\n".join(self.lines))
            self.lines = []
        self.written = time.monotonic()

    def close(self) -> None:
        self.flush()


class BarProgress:
    """A terminal: one bar for building and sending, with done/total, sent and failed counts."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.sent = self.failed = 0

    def start(self, total: int) -> None:
        self.bar = click.progressbar(
            length=total,
            label="Building and sending",
            show_pos=True,
            show_eta=False,
            item_show_func=lambda _: f"{self.sent} sent, {self.failed} failed",
        )
        self.bar.__enter__()
        self.bar.update(0, None)

    def advance(self, outcome: Outcome) -> None:
        self.sent += outcome.status in ("sent", "previewed")
        self.failed += outcome.status in OWED
        if self.bar is not None:
            self.bar.update(1, outcome)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def for_terminal(is_tty: bool) -> LineProgress | BarProgress:
    return BarProgress() if is_tty else LineProgress()
