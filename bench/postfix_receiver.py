"""A real Postfix on a loopback port with the discard transport, for the benchmark.

``with PostfixReceiver(cpus) as mta:`` installs Debian's ``postfix`` package when it is missing
(debconf preseeded "No configuration"), reconfigures the machine's own instance with
``postconf`` (loopback only, nothing local, every message to the discard transport, limits
raised so two connections may send thousands of messages, a log file since there is no
syslog), adds an smtpd on ``127.0.0.1:<free port>`` in master.cf, runs ``postfix start`` (under
``taskset`` when given CPUs, which every Postfix process then inherits) and, on exit,
``postfix stop`` and puts main.cf and master.cf back as they were.

Counting is read from the log: one ``qmgr ... from=<...>, size=N`` line per accepted message,
one ``smtpd ... connect from`` line per connection. Only root can do this; a Postfix that is
already running is never touched (the benchmark stops with an error saying so).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CONFIG = Path("/etc/postfix")
BACKUP_SUFFIX = ".digest-bench-backup"
ABSENT_SUFFIX = ".digest-bench-absent"  # the file did not exist: restoring removes it
LOG = Path("/var/log/postfix-digest-bench.log")
LOCK = Path("/run/lock/digest-bench-postfix.lock")

SETTINGS = {
    "myhostname": "mta.bench.test",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "mydestination": "",
    "relay_domains": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "mynetworks": "127.0.0.0/8",
    # Debian's main.cf says these; an install with "No configuration" has no main.cf at all
    "compatibility_level": "3.6",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    "default_transport": "discard",
    "relay_transport": "discard",
    "local_transport": "discard",
    "maillog_file": str(LOG),
    "smtpd_tls_security_level": "none",
    "smtp_tls_security_level": "none",
    "smtpd_peername_lookup": "no",  # no reverse DNS of 127.0.0.1 for every connection
    "in_flow_delay": "0",  # no pause before each message when the queue manager lags
    "smtpd_junk_command_limit": "1000000",  # RSET/NOOP between thousands of messages
    "smtpd_soft_error_limit": "1000",
    "smtpd_hard_error_limit": "10000",
    "smtpd_error_sleep_time": "0",
    "smtpd_recipient_limit": "10000",
    "smtpd_client_connection_count_limit": "0",
    "smtpd_client_connection_rate_limit": "0",
    "smtpd_client_message_rate_limit": "0",
    "smtpd_client_recipient_rate_limit": "0",
    "smtpd_timeout": "300s",
    "message_size_limit": "52428800",
}

_MESSAGE = re.compile(rb"postfix/qmgr\[\d+\]: [0-9A-Za-z]+: from=<[^>]*>, size=(\d+), nrcpt=")
_CONNECT = re.compile(rb"postfix/smtpd\[\d+\]: connect from ")


def free_port(host: str = HOST) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise SystemExit(
            f"`{' '.join(args)}` exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def ensure_installed() -> str:
    """Install Debian's postfix when missing (the benchmark's setup step); returns a note."""
    if shutil.which("postfix") or Path("/usr/sbin/postfix").exists():
        return "postfix: installed"
    if os.geteuid() != 0:
        raise SystemExit("--receiver postfix: postfix is missing and only root can install it")
    preseed = (
        "postfix postfix/main_mailer_type select No configuration\n"
        "postfix postfix/mailname string mta.bench.test\n"
    )
    _run("debconf-set-selections", input=preseed)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ("apt-get", "install", "-y", "-q", "postfix")
    if _run(*install, check=False, env=env).returncode != 0:
        _run("apt-get", "update", "-q", env=env)
        _run(*install, env=env)
    return "postfix: installed now (apt-get install postfix, No configuration)"


class PostfixReceiver:
    """The machine's Postfix, reconfigured for the run, on ``host``:``port``."""

    name = "postfix"

    def __init__(self, cpus: set[int] | None = None) -> None:
        self.host, self.port = HOST, free_port()
        self.cpus = cpus
        self._lock: Any = None
        self._offset = 0
        self.notes: list[str] = []
        self._ours = False  # the configuration is ours to put back, Postfix ours to stop

    # --- setup and teardown ------------------------------------------------------------

    def __enter__(self) -> PostfixReceiver:
        self.notes.append(ensure_installed())
        if os.geteuid() != 0:
            raise SystemExit("--receiver postfix: only root can reconfigure and start Postfix")
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._lock = LOCK.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("postfix: another benchmark holds the machine's Postfix; waiting", flush=True)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            left = [*CONFIG.glob("*" + BACKUP_SUFFIX), *CONFIG.glob("*" + ABSENT_SUFFIX)]
            if left:  # a benchmark killed before its exit
                self._stop()  # left its Postfix and its backups
                self._restore()
            if _run("postfix", "status", check=False).returncode == 0:
                raise SystemExit(
                    "--receiver postfix: a Postfix is already running on this machine; the "
                    "benchmark does not reconfigure a live mail system (`postfix stop` first)"
                )
            for name in ("main.cf", "master.cf"):
                if (CONFIG / name).exists():
                    shutil.copy2(CONFIG / name, CONFIG / (name + BACKUP_SUFFIX))
                else:  # Debian's "No configuration" install has no main.cf
                    (CONFIG / (name + ABSENT_SUFFIX)).touch()
                    (CONFIG / name).touch()
            self._ours = True
            self._configure()
            self._start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._teardown()

    def _configure(self) -> None:
        _run("postconf", "-e", *(f"{k}={v}" for k, v in SETTINGS.items()))
        _run("postconf", "-M#", "smtp/inet")  # nothing on port 25
        entry = f"{self.host}:{self.port}/inet={self.host}:{self.port} inet n - n - - smtpd"
        _run("postconf", "-Me", entry)
        # No chroot: Debian's chrooted daemons want copies of /etc files that only its init
        # script makes; without it they fail in odd ways.
        _run("postconf", "-F", "*/*/chroot=n")
        _run("postfix", "check")

    def _start(self) -> None:
        LOG.touch()
        command = ["postfix", "start"]
        if self.cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(self.cpus))), *command]
        _run(*command)
        deadline = time.time() + 30
        while True:
            try:
                with smtplib.SMTP(self.host, self.port, timeout=5) as client:
                    client.noop()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"Postfix did not answer on {self.host}:{self.port}") from None
                time.sleep(0.2)
        self.notes.append(
            f"postfix: {_run('postconf', '-h', 'mail_version').stdout.strip()} on "
            f"{self.host}:{self.port}, discard transport, log {LOG}"
        )

    @staticmethod
    def _stop() -> None:
        if _run("postfix", "status", check=False).returncode == 0:
            _run("postfix", "stop", check=False)
            deadline = time.time() + 20
            while _run("postfix", "status", check=False).returncode == 0:
                if time.time() > deadline:
                    break
                time.sleep(0.2)

    def _teardown(self) -> None:
        try:
            if self._ours:
                self._stop()
        finally:
            if self._ours:
                self._restore()
                self._ours = False
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    @staticmethod
    def _restore() -> None:
        for name in ("main.cf", "master.cf"):
            backup = CONFIG / (name + BACKUP_SUFFIX)
            if backup.exists():
                shutil.copy2(backup, CONFIG / name)
                backup.unlink()
            absent = CONFIG / (name + ABSENT_SUFFIX)
            if absent.exists():
                (CONFIG / name).unlink(missing_ok=True)
                absent.unlink()

    # --- the receiver interface the benchmark uses -------------------------------------

    def reset(self, capture: Path | None = None) -> None:
        """Count from now on (`capture` is not supported: Postfix discards what it takes)."""
        if capture is not None:
            raise ValueError("Postfix keeps no copy of the messages")
        self.wait_idle()
        size = LOG.stat().st_size
        while True:  # the log is written by postlogd a moment later: let it settle
            time.sleep(0.3)
            if (now := LOG.stat().st_size) == size:
                break
            size = now
        self._offset = size

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Until the queue is empty (every message taken has been discarded)."""
        deadline = time.time() + timeout
        while _run("postqueue", "-j", check=False).stdout.strip():
            if time.time() > deadline:
                raise SystemExit("Postfix: the queue did not empty within 120 s")
            time.sleep(0.2)

    def stats(self, expected: int | None = None) -> dict[str, Any]:
        """messages, bytes (as Postfix stored them) and connections since the last reset.
        With `expected`, waits (up to 30 s) for the log to show that many messages."""
        deadline = time.time() + 30
        while True:
            with LOG.open("rb") as handle:
                handle.seek(self._offset)
                text = handle.read()
            sizes = [int(m.group(1)) for m in _MESSAGE.finditer(text)]
            if expected is None or len(sizes) >= expected or time.time() > deadline:
                break
            time.sleep(0.2)
        return {
            "messages": len(sizes),
            "bytes": sum(sizes),
            "first": None,
            "last": None,
            "connections": len(_CONNECT.findall(text)),
        }
