"""`digest run` as users run it: a real subprocess (`python -m digest run`), a real SQLite file,
the loopback arXiv and SMTP stand-ins, real signals. Waits are on what the daemon logs (with
generous time limits that only turn a hang into a failure), never on sleeps."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from helpers import ADA, ADA_ROW, GRACE, Digest, messages_to
from standins import Fault

# `digest` (conftest.py): Ada ("reward model") and Grace ("graph neural network; reward model").
LIMIT = 60  # seconds before a wait counts as a hang
# Zones with odd offsets, so that the local day and time are clearly not UTC's.
ZONES = ("Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "Asia/Kolkata")


class Daemon:
    """A running `python -m digest run` whose standard error is read line by line."""

    def __init__(self, digest: Digest, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "run"],
            env={**digest.env(), **env},
            cwd=digest.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first log line (seen so far or to come) matching `pattern`."""
        regex = re.compile(pattern)
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            try:
                if self._new.get(timeout=LIMIT) is None and seen == len(self.lines):
                    raise AssertionError(f"exited without logging {pattern!r}:\n{self.log}")
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {LIMIT}s:\n{self.log}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=LIMIT)
        self._reader.join(timeout=LIMIT)
        return code

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def zone_away_from_midnight(ahead: timedelta) -> tuple[str, datetime]:
    """A zone where now and now + `ahead` (and 10 minutes more) are on the same local day."""
    now = datetime.now(UTC)
    for name in ZONES:
        local = now.astimezone(ZoneInfo(name))
        if (
            (local + ahead + timedelta(minutes=10)).date()
            == local.date()
            == (local - timedelta(hours=2)).date()
        ):
            return name, local
    raise AssertionError("every candidate zone is near midnight")  # cannot happen: offsets differ


def start(digest: Digest, daemons: list[Daemon], **env: str) -> Daemon:
    """Start `digest run`; `env` (send_at=..., timezone=...) also applies to `digest.run`."""
    digest.extra_env.update({f"DIGEST_{k.upper()}": v for k, v in env.items()})
    daemon = Daemon(digest, {})
    daemons.append(daemon)
    return daemon


def send_runs(digest: Digest) -> list[tuple[object, ...]]:
    return digest.query("SELECT status FROM runs WHERE kind = 'send' ORDER BY id")


def test_it_sends_at_the_send_time_once_a_day_and_stops_on_sigterm(
    digest: Digest, daemons: list[Daemon]
) -> None:
    zone, local = zone_away_from_midnight(timedelta(seconds=10))
    send_at = (local + timedelta(seconds=10)).strftime("%H:%M:%S")
    today = local.date().isoformat()
    tomorrow = (local + timedelta(days=1)).date().isoformat()

    first = start(digest, daemons, send_at=send_at, timezone=zone)
    # It waits for the send time (it did not start after it) ...
    first.wait_for(rf"next run: {today} {send_at} \S+ \(today's send time\)")
    assert digest.smtp.messages == []
    # ... then sends one email per subscriber.
    first.wait_for(r"run \d+ ok: \d+ papers fetched in \d+ arXiv requests; 2 emails sent, 0 failed")
    first.wait_for(r"next run: \S+ \S+ \S+ \(today's run is done\)")
    assert len(messages_to(digest.smtp, ADA)) == 1
    assert len(messages_to(digest.smtp, GRACE)) == 1
    assert send_runs(digest) == [("ok",)]
    healthy = digest.run("status", "--check")
    assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")
    shown = digest.run("status").stdout
    assert re.search(r"^Daemon: running since .* \(pid \d+\)", shown, re.M)
    assert re.search(rf"^Next run: {tomorrow} {send_at} \S+ \(today's run is done\)$", shown, re.M)
    assert re.search(
        r"^  #1 send ok, started .*: \d+ papers fetched in \d+ arXiv requests, "
        r"2 emails sent, 0 failed$",
        shown,
        re.M,
    )
    assert first.stop() == 0
    stopped = digest.run("status", "--check")
    assert stopped.returncode == 1
    assert re.fullmatch(r"Error: the daemon stopped at \S+ \S+ \S+\n", stopped.stderr)
    assert "SIGTERM received" in first.log and "digest run stopped" in first.log
    for line in first.lines:  # one line per event, each with its time in DIGEST_TIMEZONE
        stamp = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)
        assert stamp, line
        logged = datetime.strptime(stamp[0], "%Y-%m-%d %H:%M:%S,%f ").replace(tzinfo=ZoneInfo(zone))
        assert abs(logged - datetime.now(UTC)) < timedelta(minutes=5), line

    # Restarted the same day: today's run happened (says the database), nothing more is sent.
    again = start(digest, daemons, send_at=send_at, timezone=zone)
    again.wait_for(rf"next run: {tomorrow} {send_at} \S+ \(today's run is done\)")
    assert again.stop() == 0
    assert len(digest.smtp.messages) == 2
    assert send_runs(digest) == [("ok",)]


def test_started_after_the_send_time_it_catches_up_at_once(
    digest: Digest, daemons: list[Daemon]
) -> None:
    zone, local = zone_away_from_midnight(timedelta(0))
    send_at = (local - timedelta(hours=1)).strftime("%H:%M")

    daemon = start(digest, daemons, send_at=send_at, timezone=zone)

    daemon.wait_for(r"started after today's send time and today's run has not happened")
    daemon.wait_for(r"run \d+ ok: .* 2 emails sent, 0 failed")
    assert daemon.stop(signal.SIGINT) == 0
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, GRACE)) == 1


def test_sigterm_while_sending_finishes_that_email_records_it_and_exits_0(
    digest: Digest, daemons: list[Daemon]
) -> None:
    zone, local = zone_away_from_midnight(timedelta(0))
    send_at = (local - timedelta(minutes=5)).strftime("%H:%M")
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: one email in flight
    gate = threading.Event()
    digest.smtp.data_gate = gate
    try:
        daemon = start(digest, daemons, send_at=send_at, timezone=zone)
        assert digest.smtp.data_waiting.wait(LIMIT), daemon.log  # Ada's email is in flight
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_for("SIGTERM received")
    finally:
        gate.set()
        digest.smtp.data_gate = None
    assert daemon.wait() == 0

    assert [m.rcpt_tos for m in digest.smtp.messages] == [[ADA]]
    assert digest.query("SELECT subscriber, status FROM emails") == [(ADA, "sent")]
    assert digest.delivered(ADA) and not digest.delivered(GRACE)
    [(status, message)] = digest.query("SELECT status, message FROM runs")
    assert status == "stopped" and message == "stopped before 1 of 2 subscribers"
    assert re.search(r"run \d+ stopped: .* 1 emails sent, 0 failed", daemon.log)

    # A stopped run is not the day's run: the next start sends Grace hers, Ada nothing twice.
    again = start(digest, daemons, send_at=send_at, timezone=zone)
    again.wait_for(r"run \d+ ok: .* 1 emails sent, 0 failed")
    assert again.stop() == 0
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, GRACE)) == 1


@pytest.mark.parametrize("subscribers", [1, 2])
def test_a_mail_server_hanging_past_the_stop_timeout_is_cut_off_and_the_email_sent_again(
    digest: Digest, daemons: list[Daemon], subscribers: int
) -> None:
    """`docker stop` gives 10 s before SIGKILL; a mail server that does not answer would keep
    the run waiting DIGEST_SMTP_TIMEOUT (here 120 s). After DIGEST_STOP_TIMEOUT the connection
    is cut: exit 0 at once, the email pending, the run `stopped`; the next start sends that
    very email (same Message-ID) and the others, nobody twice."""
    zone, local = zone_away_from_midnight(timedelta(0))
    send_at = (local - timedelta(minutes=5)).strftime("%H:%M")
    digest.extra_env.update(
        DIGEST_SMTP_CONNECTIONS="1", DIGEST_SMTP_TIMEOUT="120", DIGEST_STOP_TIMEOUT="2"
    )
    if subscribers == 1:  # the email cut off is the run's last one
        digest.write_subscribers([ADA_ROW])
    gate = threading.Event()  # never set while the daemon runs: the server hangs in DATA
    digest.smtp.data_gate = gate
    try:
        daemon = start(digest, daemons, send_at=send_at, timezone=zone)
        assert digest.smtp.data_waiting.wait(LIMIT), daemon.log  # Ada's email is in DATA
        [(message_id, status)] = digest.query("SELECT message_id, status FROM emails")
        assert status == "pending"
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.wait()
        took = time.monotonic() - signalled
    finally:
        gate.set()
        digest.smtp.data_gate = None
    assert code == 0, daemon.log
    assert 2 <= took < 10, f"exited {took:.1f} s after SIGTERM:\n{daemon.log}"
    assert "SIGTERM received: finishing the email being sent (at most 2 s)" in daemon.log
    assert re.search(
        r"still busy 2 s after the stop request: cut 1 mail server connection", daemon.log
    )
    assert digest.query("SELECT message_id, status FROM emails") == [(message_id, "pending")]
    [(status, message)] = digest.query("SELECT status, message FROM runs")
    assert status == "stopped", daemon.log
    assert message == f"stopped before {subscribers} of {subscribers} subscribers"
    assert not digest.delivered(ADA) and not digest.delivered(GRACE)
    shown = digest.run("status").stdout
    assert re.search(rf"^  {re.escape(ADA)}: [1-9]\d* papers, pending since ", shown, re.M), shown

    again = start(digest, daemons, send_at=send_at, timezone=zone)
    again.wait_for(rf"run \d+ ok: .* {subscribers} emails sent, 0 failed")
    assert again.stop() == 0
    [ada] = messages_to(digest.smtp, ADA)  # the server dropped the cut-off one; sent once
    assert ada["Message-ID"] == message_id
    assert len(messages_to(digest.smtp, GRACE)) == subscribers - 1
    assert digest.query("SELECT status FROM emails WHERE message_id = ?", [message_id]) == [
        ("sent",)
    ]
    assert digest.delivered(ADA) and bool(digest.delivered(GRACE)) == (subscribers == 2)


def test_a_run_stuck_elsewhere_after_sigterm_is_recorded_stopped_and_the_daemon_exits_0(
    digest: Digest, daemons: list[Daemon]
) -> None:
    """Blocked on something that is not the mail server (here arXiv, answering after 120 s):
    DIGEST_STOP_TIMEOUT + 2 s after SIGTERM the run is recorded `stopped`, the process exits 0,
    and the next start runs again at once."""
    zone, local = zone_away_from_midnight(timedelta(0))
    send_at = (local - timedelta(minutes=5)).strftime("%H:%M")
    digest.extra_env.update(DIGEST_ARXIV_TIMEOUT="120", DIGEST_STOP_TIMEOUT="1")
    digest.arxiv.fault_on_page(0, Fault.hang(120))

    daemon = start(digest, daemons, send_at=send_at, timezone=zone)
    daemon.wait_for(r"run for \S+ starting")
    deadline = time.monotonic() + LIMIT
    while not digest.arxiv.requests and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the daemon to be in the (hanging) fetch
    assert digest.arxiv.requests, daemon.log
    signalled = time.monotonic()
    code = daemon.stop()
    took = time.monotonic() - signalled
    assert code == 0, daemon.log
    assert 3 <= took < 10, f"exited {took:.1f} s after SIGTERM:\n{daemon.log}"
    [(status, message)] = digest.query("SELECT status, message FROM runs")
    assert (status, message) == (
        "stopped",
        "stopped: still busy 3 s after the stop request, the process exited",
    )
    [(stopped_at,)] = digest.query("SELECT stopped_at FROM daemon")
    assert stopped_at is not None
    assert digest.smtp.messages == []

    again = start(digest, daemons, send_at=send_at, timezone=zone)
    again.wait_for(r"run \d+ ok: .* 2 emails sent, 0 failed")
    assert again.stop() == 0
    assert len(messages_to(digest.smtp, ADA)) == len(messages_to(digest.smtp, GRACE)) == 1


def test_the_health_check_fails_when_the_subscribers_file_is_missing_or_lists_nobody_valid(
    digest: Digest, daemons: list[Daemon]
) -> None:
    """The daemon has done today's run and waits for tomorrow: without a usable subscribers
    file tomorrow's run would send nothing, so the health check says so now."""
    zone, _ = zone_away_from_midnight(timedelta(0))
    daemon = start(digest, daemons, send_at="00:00", timezone=zone)
    daemon.wait_for(r"run \d+ ok: .* 2 emails sent, 0 failed")
    healthy = digest.run("status", "--check")
    assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")
    original = digest.csv_path.read_text(encoding="utf-8")

    digest.csv_path.unlink()
    missing = digest.run("status", "--check")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        "Error: subscribers.csv: no such file. Create it with a header row "
        "'email,name,keywords' or point DIGEST_SUBSCRIBERS at yours.\n"
    )
    found = json.loads(digest.run("status", "--json").stdout)
    assert found["healthy"] is False and found["problems"] == [missing.stderr[7:-1]]

    digest.write_subscribers("email,name,keywords\nnot-an-address,Ada,reward model\n")
    nobody = digest.run("status", "--check")
    assert (nobody.returncode, nobody.stdout) == (1, "")
    assert nobody.stderr == (
        "Error: subscribers.csv: no valid subscriber (1 row, none valid), so nothing would "
        "be sent; `digest subscribers check` shows what to fix\n"
    )
    digest.write_subscribers("email,name,keywords\n")
    assert digest.run("status", "--check").stderr == (
        "Error: subscribers.csv: no valid subscriber (no rows), so nothing would be sent; "
        "`digest subscribers check` shows what to fix\n"
    )

    digest.csv_path.write_text(original, encoding="utf-8")
    again = digest.run("status", "--check")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert daemon.stop() == 0


def test_a_failing_run_is_retried_later_with_backoff_and_the_daemon_lives_on(
    digest: Digest, daemons: list[Daemon]
) -> None:
    zone, local = zone_away_from_midnight(timedelta(minutes=10))
    send_at = (local - timedelta(minutes=1)).strftime("%H:%M")
    for _ in range(10):  # more than the retries within one run: the run fails
        digest.arxiv.fault_on_page(0, Fault.http(503))

    daemon = start(digest, daemons, send_at=send_at, timezone=zone)

    daemon.wait_for(r"run failed: .*503")
    retry = daemon.wait_for(r"next run: (\S+ \S+) \S+ \(retrying today's failed run\)")
    assert send_runs(digest) == [("failed",)]  # one attempt, not a loop
    retry_at = datetime.fromisoformat(retry[1]).replace(tzinfo=ZoneInfo(zone))
    [(finished,)] = digest.query("SELECT finished_at FROM runs")
    assert retry_at - datetime.fromisoformat(str(finished)) == timedelta(minutes=5)
    assert daemon.proc.poll() is None
    assert digest.smtp.messages == []

    status = digest.run("status", "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert found["next_run"]["reason"] == "retry"
    assert found["runs"][0]["status"] == "failed" and "503" in found["runs"][0]["message"]
    assert found["daemon"]["running"] is True
    # For a health check, a day without a successful run is a missed run (here: no grace).
    check = digest.run("status", "--check", "--grace", "0")
    assert check.returncode == 1
    today = local.date().isoformat()
    assert check.stderr.startswith(f"Error: the daemon missed the run for {today} (due {send_at}")
    assert daemon.stop() == 0


def test_a_daemon_killed_mid_email_leaves_it_pending_and_status_shows_it_owed(
    digest: Digest, daemons: list[Daemon]
) -> None:
    zone, _ = zone_away_from_midnight(timedelta(0))
    digest.extra_env["DIGEST_SMTP_CONNECTIONS"] = "1"  # one connection: one email in flight
    gate = threading.Event()
    digest.smtp.data_gate = gate
    try:
        daemon = start(digest, daemons, send_at="00:00", timezone=zone)
        assert digest.smtp.data_waiting.wait(LIMIT), daemon.log
        daemon.kill()  # SIGKILL: no chance to record anything more
    finally:
        gate.set()
        digest.smtp.data_gate = None

    shown = digest.run("status")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^  #1 send running, started ", shown.stdout, re.M)
    assert re.search(rf"^  {re.escape(ADA)}: [1-9]\d* papers, pending since ", shown.stdout, re.M)
    found = json.loads(digest.run("status", "--json").stdout)
    assert [(o["subscriber"], o["status"]) for o in found["owed"]] == [(ADA, "pending")]
    assert found["daemon"]["stopped_at"] is None  # killed: it could not say it stopped


def test_a_bad_setting_stops_the_daemon_at_once_with_a_clear_error(digest: Digest) -> None:
    digest.extra_env["DIGEST_SEND_AT"] = "7am"
    result = digest.run("run", timeout=LIMIT)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: DIGEST_SEND_AT='7am' is not valid: use a 24-hour time as HH:MM, e.g. 07:00"
    )

    digest.extra_env.update(DIGEST_SEND_AT="07:00", DIGEST_FROM="")
    result = digest.run("run", timeout=LIMIT)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: DIGEST_FROM is not set")
    assert digest.smtp.messages == []


def test_a_failure_that_leaves_no_run_row_is_still_retried_with_backoff(
    digest: Digest, daemons: list[Daemon]
) -> None:
    digest.csv_path.unlink()  # fails before a run is recorded: only the daemon knows
    zone, local = zone_away_from_midnight(timedelta(minutes=10))

    daemon = start(digest, daemons, send_at="00:00", timezone=zone)

    daemon.wait_for(r"run failed: subscribers.csv: no such file")
    retry = daemon.wait_for(r"next run: (\S+ \S+) \S+ \(retrying today's failed run\)")
    assert datetime.fromisoformat(retry[1]) > local.replace(tzinfo=None) + timedelta(minutes=4)
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    assert len(re.findall("run failed", daemon.log)) == 1
