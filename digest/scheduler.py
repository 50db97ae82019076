"""`digest run`: the daemon, one `digest send` per local day at DIGEST_SEND_AT in DIGEST_TIMEZONE.

When a run is due, which runs count, the retries and the DST changes are decided in
digest/timetable.py, as pure functions of facts in the database; the daemon only reads those
facts, asks `plan` and lets the `schedule` package wake it up. Nothing about past runs is kept
in memory, so a restart never sends twice and never forgets a missed day.

Stopping: after SIGTERM/SIGINT the email being sent is given DIGEST_STOP_TIMEOUT seconds; then
the mail server connections are cut (that email stays pending and goes out again, with the same
Message-ID, next run), and a run still busy FORCE_AFTER seconds later (arXiv, the disk) is
recorded as `stopped` and the process exits 0 anyway: well within a container engine's grace
period (10 s by default) before it kills the process. A `stopped` run does not count and is not
a failure: the next start runs again at once for the subscribers still owed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time as time_module
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from zoneinfo import ZoneInfo

import schedule

from digest import bounces, runlog, smtp, store, volume
from digest.config import Settings
from digest.errors import DigestError
from digest.pipeline import run_send
from digest.progress import describe
from digest.report import Outcome, RunReport
from digest.timetable import REASONS, Plan, describe_plan, plan_from_db

log = logging.getLogger(__name__)

TICK_SECONDS = 30.0  # how often the daemon re-reads the database and says it is alive
NAP = 0.5  # seconds between two looks at the schedule and the stop flag
WATCH = 0.1  # seconds between two looks at the stop flag by the stop watchdog
FORCE_AFTER = 2.0  # seconds after cutting the SMTP connections before exiting regardless


# The daemon -----------------------------------------------------------------------------------


class Daemon:
    """Waits (driven by `schedule`), runs the day's send when `plan` says so, until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        tick: float = TICK_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings, self.tick, self.clock = settings, tick, clock
        self.zone = settings.tz  # looked up now: the signal handler only reads it
        # Set by the signal handler. A plain flag, not a threading.Event: a handler that takes
        # a lock the interrupted code holds (Event.wait does) deadlocks.
        self.stop_requested = False
        self.stop_at: float | None = None  # time.monotonic() of the first stop request
        self.finished = threading.Event()  # the main loop is over (the watchdog's cue to go)
        self.attempt_after: int | None = None  # while a run is on: the last run id before it
        self.jobs = schedule.Scheduler()
        self.db = store.open_db(settings.db_path)
        # Failed attempts that left no row in `runs` (e.g. subscribers.csv missing): without
        # them such a failure would be retried at once, in a tight loop.
        self.unrecorded_failures: list[datetime] = []
        self.planned: Plan | None = None

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """The signal handler: sets the flag and says so with one raw write to standard error
        (logging from a handler could re-enter a half-done write of the interrupted code)."""
        first, self.stop_requested = not self.stop_requested, True
        if first:
            self.stop_at = time_module.monotonic()
            name = signal.Signals(signum).name if signum else "stop"
            stamp = datetime.now(self.zone).strftime("%Y-%m-%d %H:%M:%S,%f")[:23]
            line = f"{stamp} INFO {__name__}: {name} received: finishing the email being sent"
            wait = f"(at most {self.settings.stop_timeout:g} s)"
            os.write(2, f"{line} {wait}, then exiting\n".encode())

    def run(self) -> int:
        s = self.settings
        runlog.daemon_started(self.db, os.getpid(), self.clock())
        log.info(
            "digest run started (pid %d): one send a day at %s %s, database %s",
            os.getpid(),
            s.send_at,
            s.timezone,
            s.db_path,
        )
        first = self._replan()
        if first.reason == "catch-up":
            log.info("started after today's send time and today's run has not happened")
        self.jobs.every(self.tick).seconds.do(self._on_tick)
        watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        watchdog.start()
        try:
            while not self.stop_requested:
                self.jobs.run_pending()
                idle = self.jobs.idle_seconds
                # short naps, so that a stop request is seen within a moment
                time_module.sleep(min(max(idle if idle is not None else NAP, 0.0), NAP))
        finally:
            try:
                runlog.daemon_stopped(self.db, self.clock())
                log.info("digest run stopped")
            finally:
                self.finished.set()
        return 0

    def _watch(self) -> None:
        """The stop watchdog (a thread): DIGEST_STOP_TIMEOUT seconds after a stop request it
        cuts the SMTP connections (a server that does not answer keeps the run waiting for up
        to DIGEST_SMTP_TIMEOUT); if the run is still not over FORCE_AFTER seconds later it
        records the run as stopped and ends the process with status 0."""
        while self.stop_at is None:
            if self.finished.wait(WATCH):
                return
        timeout = self.settings.stop_timeout
        if self.finished.wait(max(self.stop_at + timeout - time_module.monotonic(), 0.0)):
            return
        cut = smtp.abort_all()
        if cut:
            log.warning(
                "still busy %g s after the stop request: cut %d mail server connection(s); "
                "an email being sent stays pending and goes out again, with the same "
                "Message-ID, with the next run (DIGEST_STOP_TIMEOUT sets how long to wait)",
                timeout,
                cut,
            )
        if self.finished.wait(FORCE_AFTER):
            return
        self._force_exit(timeout + FORCE_AFTER)

    def _force_exit(self, waited: float) -> None:
        """The run is blocked elsewhere (arXiv, trending, a locked database): record it and the
        daemon as stopped (what was accepted is already recorded as sent; an email committed
        but not accepted stays pending) and exit 0 now, before the container engine kills us."""
        message = f"stopped: still busy {waited:g} s after the stop request, the process exited"
        try:
            runlog.record_forced_stop(
                self.settings.db_path, self.attempt_after, message, self.clock()
            )
        except Exception as exc:  # exiting anyway: the next start closes the run as interrupted
            log.error("could not record the stop: %s: %s", type(exc).__name__, exc)
        log.warning("%s; the next start runs again for what is owed", message)
        log.info("digest run stopped")
        logging.shutdown()
        os._exit(0)

    def _replan(self) -> Plan:
        now = self.clock()
        p = plan_from_db(self.db, self.settings, now, self.unrecorded_failures)
        if p != self.planned:
            self.jobs.clear("due")
            # schedule counts in naive local time; at least a moment, or it loops forever
            delay = max((p.due - now).total_seconds(), 0.01)
            self.jobs.every(delay).seconds.do(self._on_due).tag("due")
            if p.reason != "catch-up":
                log.info("next run: %s", describe_plan(p, now, self.settings.tz))
            self.planned = p
        return p

    def _on_tick(self) -> None:
        """Say we are alive; re-read the database. A due run the `due` job has not started yet
        (the machine's own clock jumped, e.g. a DST change of its local time) starts here."""
        try:
            self._tick()
        except Exception as exc:  # e.g. the database locked or the disk full: try next tick
            log.error("cannot check the schedule: %s: %s", type(exc).__name__, exc)
            self.planned = None

    def _tick(self) -> None:
        now = self.clock()
        runlog.daemon_heartbeat(self.db, now)
        if plan_from_db(self.db, self.settings, now, self.unrecorded_failures).is_due(now):
            self._on_due()
        else:
            self._replan()

    def _on_due(self) -> type[schedule.CancelJob]:
        """Run if the database still says so, then plan the next run. A job that raised would
        be run again at once by `schedule`, so nothing escapes: the next tick plans again."""
        self.planned = None
        try:
            now = self.clock()
            p = plan_from_db(self.db, self.settings, now, self.unrecorded_failures)
            if p.is_due(now) and not self.stop_requested:
                self._attempt(p)
            if not self.stop_requested:
                self._replan()
        except Exception as exc:
            log.error("cannot check the schedule: %s: %s", type(exc).__name__, exc)
            self.jobs.clear("due")
            self.planned = None
        return schedule.CancelJob

    def _attempt(self, p: Plan) -> None:
        log.info("run for %s starting (%s)", p.day.isoformat(), REASONS[p.reason])
        bounces.before_send(self.settings)  # when DIGEST_BOUNCE_MAILBOX is set; never raises
        before = runlog.recent_runs(self.db, 1)
        self.attempt_after = int(str(before[0]["id"])) if before else 0
        try:
            report = run_send(self.settings, progress=self._on_outcome, should_stop=self._stop)
        except DigestError as exc:
            log.error("run failed: %s", exc)
            self._count_failure(before)
        except Exception as exc:  # a bug must not take the daemon down; it is retried later
            if error := volume.os_error(exc) if isinstance(exc, OSError) else None:
                log.error("run failed: %s", error)  # e.g. subscribers.csv unreadable
            else:
                log.error("run crashed (a bug in digest): %s: %s", type(exc).__name__, exc)
                log.debug("traceback", exc_info=True)
            self._count_failure(before)
        else:
            self._log_report(report)
        finally:
            self.attempt_after = None

    def _stop(self) -> bool:
        return self.stop_requested

    def _count_failure(self, before: list[dict[str, object]]) -> None:
        after = runlog.recent_runs(self.db, 1)
        recorded = bool(after) and after != before and after[0]["status"] == "failed"
        if not recorded:
            self.unrecorded_failures.append(self.clock())

    def _on_outcome(self, outcome: Outcome) -> None:
        log.info("%s", describe(outcome))
        runlog.daemon_heartbeat(self.db, self.clock())

    def _log_report(self, report: RunReport) -> None:
        for problem in report.problems:
            log.warning("%s", problem)
        status = "stopped" if report.stopped else "ok" if report.ok else "failed"
        log.info(
            "run %s %s: %d papers fetched in %d arXiv requests; %d emails sent, %d failed",
            report.run_id,
            status,
            report.papers_fetched,
            report.arxiv_requests,
            report.sent,
            len(report.failed),
        )


def log_in_zone(zone: ZoneInfo) -> None:
    """Log lines carry their time in DIGEST_TIMEZONE, like everything else the daemon shows
    (not the machine's zone, which in a container is UTC)."""

    def converter(seconds: float | None) -> time_module.struct_time:
        return datetime.fromtimestamp(
            time_module.time() if seconds is None else seconds, zone
        ).timetuple()

    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            handler.formatter.converter = converter


def run_daemon(settings: Settings) -> int:
    """`digest run`: until SIGTERM or SIGINT; returns the exit status (0 on a requested stop)."""
    settings.require_from()
    log_in_zone(settings.tz)
    daemon = Daemon(settings)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    return daemon.run()
