"""A real Postfix for the tests: an instance of Debian's Postfix of its own (its own config folder,
queue and log in a temporary folder; the machine's /etc/postfix is only read, for master.cf's
service list) that listens on a free loopback port, takes example.org as its local domain and
knows no local users: mail to anyone@example.org is accepted and then bounced by Postfix itself
("5.1.1 unknown user"), except the addresses given `maildirs`, delivered into those Maildirs.
Started for a test, stopped after it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from imap import NOBODY, free_port

SERVICE_LISTS = (Path("/etc/postfix/master.cf"), Path("/usr/share/postfix/master.cf.dist"))
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination = example.org
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps = hash:{root}/etc/aliases
alias_database = hash:{root}/etc/aliases
recipient_delimiter = +
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
relayhost =
smtputf8_enable = no
biff = no
default_privs = nobody
"""


class Postfix:
    def __init__(
        self, maildirs: dict[str, Path], transport: dict[str, str] | None = None, extra: str = ""
    ) -> None:
        self.maildirs = maildirs  # local part -> Maildir its mail is delivered to
        self.transport = transport or {}  # address -> transport (transport_maps)
        self.extra = extra  # more main.cf lines
        self.root = Path(tempfile.mkdtemp(prefix="digest-postfix-"))
        self.port = free_port()
        self.config = self.root / "etc"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.config), *args], capture_output=True, text=True
        )

    def __enter__(self) -> Postfix:
        self.root.chmod(0o755)
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix")
        main = MAIN_CF.format(root=self.root) + self.extra
        table = self.config / "transport"
        if self.transport:
            main += f"transport_maps = hash:{table}\n"
        (self.config / "main.cf").write_text(main)
        if self.transport:
            table.write_text("".join(f"{k} {v}\n" for k, v in self.transport.items()))
            subprocess.run(["postmap", "-c", str(self.config), str(table)], check=True)
        # the machine's service list, without its network listeners, plus ours on loopback
        services = next(p for p in SERVICE_LISTS if p.exists()).read_text()
        services = re.sub(r"(?m)^(?!#)\S+\s+inet\s.*(\n[ \t]+.*)*\n?", "", services)
        services += f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
        (self.config / "master.cf").write_text(services)
        aliases = "".join(f"{name}: {box}/\n" for name, box in self.maildirs.items())
        (self.config / "aliases").write_text(aliases)
        for box in self.maildirs.values():
            for sub in ("cur", "new", "tmp"):
                (box / sub).mkdir(parents=True, exist_ok=True)
                os.chown(box / sub, NOBODY, NOBODY)
            os.chown(box, NOBODY, NOBODY)
        subprocess.run(
            ["postalias", "-c", str(self.config), str(self.config / "aliases")], check=True
        )
        self._postfix("check")  # creates the queue's folders
        started = self._postfix("start")
        deadline = time.monotonic() + 20
        while not self._listening():
            if time.monotonic() > deadline:
                log = self.log()
                self.__exit__(None, None, None)
                raise RuntimeError(f"postfix did not start: {started.stderr}\n{log}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._postfix("stop")
        deadline = time.monotonic() + 10
        while self._listening() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)
