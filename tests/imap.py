"""A real IMAP server for the tests: Debian's Dovecot (dovecot-imapd), started on free loopback
ports with a config folder of its own, one passwd-file user and a Maildir in a temporary folder;
stopped (and its folder removed) afterwards. It serves plain IMAP and IMAPS with a certificate
made for 127.0.0.1 (`cert`: point SSL_CERT_FILE at it to trust it)."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

NOBODY = 65534
CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = digest-test-{port}
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dovecot:
    def __init__(self, user: str = "bounces@example.org", password: str = "s3cret/p@ss word"):
        self.user, self.password = user, password
        self.root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        self.port, self.ssl_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / self.user / "Maildir"

    def url(self, *, secure: bool = False, password: str | None = None, folder: str = "") -> str:
        scheme, port = ("imaps", self.ssl_port) if secure else ("imap", self.port)
        secret = quote(self.password if password is None else password, safe="")
        return f"{scheme}://{quote(self.user, safe='')}:{secret}@127.0.0.1:{port}/{folder}"

    def __enter__(self) -> Dovecot:
        self.root.chmod(0o755)
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(self.root / "key.pem"), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        for folder, _dirs, _files in os.walk(self.root / "mail"):
            os.chown(folder, NOBODY, NOBODY)
        config = self.root / "dovecot.conf"
        config.write_text(
            CONFIG.format(root=self.root, port=self.port, ssl_port=self.ssl_port, uid=NOBODY)
        )
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "dovecot.log").read_text(errors="replace")[-2000:]
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"dovecot did not start: {err}\n{log}") from None
                time.sleep(0.05)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port)
        imap.login(self.user, self.password)
        return imap

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Deliver messages as an MTA would (APPEND over IMAP, unread)."""
        with self.client() as imap:
            for message in messages:
                imap.append(folder, "", imaplib.Time2Internaldate(time.time()), message)

    def flags(self, folder: str = "INBOX") -> list[str]:
        """Each message's flags, in order."""
        with self.client() as imap:
            imap.select(folder, readonly=True)
            _status, data = imap.fetch("1:*", "(FLAGS)")
            return [
                item.decode() if isinstance(item, bytes) else str(item)
                for item in data
                if item is not None
            ]
