"""Reading the bounce mailbox (DIGEST_BOUNCE_MAILBOX): an IMAP folder or a local Maildir.

Both give the messages not processed yet, as bytes, and mark each one processed once its report
is recorded:
- IMAP (`imaps://USER:PASSWORD@HOST[:PORT]/FOLDER`, or `imap://` without TLS, for loopback or a
  trusted network): the keyword `$DigestProcessed` and `\\Seen` are set on the message; a server
  that allows no keywords gets `\\Seen` only, and unseen messages are the unprocessed ones.
- Maildir (a folder with cur/, new/ and tmp/): the message is moved from new/ to cur/ with the
  `S` (seen) flag, as a mail program does when it reads it; unprocessed are those in new/ and
  those in cur/ without `S`.
The password in the URL is never shown: `describe()` and every error leave it out.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from digest.errors import DigestError

KEYWORD = b"$DigestProcessed"
SEEN = b"\\Seen"
FETCH_BATCH = 50  # messages fetched per IMAP command
IMAP_TIMEOUT = 30.0


class MailboxError(DigestError):
    """The bounce mailbox cannot be reached, logged into or read."""


@dataclass(frozen=True)
class Item:
    key: str  # the message's id in its mailbox (IMAP UID or Maildir file name)
    data: bytes


class Mailbox(Protocol):
    def describe(self) -> str: ...

    def unprocessed(self) -> Iterator[Item]: ...

    def mark_processed(self, item: Item) -> None: ...

    def close(self) -> None: ...


def describe(spec: str) -> str:
    """The mailbox as shown to users: an URL without its password."""
    if "://" not in spec:
        return spec
    parts = urlsplit(spec)
    user = unquote(parts.username or "")
    port = f":{parts.port}" if parts.port else ""
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return f"{parts.scheme.lower()}://{user}@{parts.hostname}{port}/{folder}"


def open_mailbox(spec: str, timeout: float = IMAP_TIMEOUT) -> Mailbox:
    """Connect to (or open) the mailbox `spec`, as DIGEST_BOUNCE_MAILBOX gives it."""
    if "://" in spec:
        return ImapMailbox(spec, timeout)
    return MaildirMailbox(Path(spec).expanduser())


class ImapMailbox:
    def __init__(self, spec: str, timeout: float) -> None:
        parts = urlsplit(spec)
        self.shown = describe(spec)
        secure = parts.scheme.lower() == "imaps"
        host = parts.hostname or ""
        port = parts.port or (993 if secure else 143)
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"
        where = f"the IMAP server at {host}:{port}"
        try:
            self.client = IMAPClient(
                host,
                port=port,
                ssl=secure,
                ssl_context=ssl.create_default_context() if secure else None,
                timeout=timeout,
            )
        except ssl.SSLError as exc:
            raise MailboxError(
                f"TLS with {where} failed ({exc.reason or exc}); check DIGEST_BOUNCE_MAILBOX "
                f"(imaps:// needs a certificate this machine trusts)"
            ) from None
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(
                f"cannot reach {where}: {exc}; check the host and port in DIGEST_BOUNCE_MAILBOX"
            ) from None
        user = unquote(parts.username or "")
        try:
            self.client.login(user, unquote(parts.password or ""))
        except LoginError:
            self.client.shutdown()
            raise MailboxError(
                f"{where} refused the login for {user!r}; check the user and password in "
                f"DIGEST_BOUNCE_MAILBOX"
            ) from None
        except (OSError, IMAPClientError) as exc:
            self.client.shutdown()
            raise MailboxError(f"logging in to {where} failed: {exc}") from None
        try:
            selected = self.client.select_folder(self.folder)
        except IMAPClientError as exc:
            self.client.logout()
            raise MailboxError(
                f"{where} has no folder {self.folder!r} for {user!r} ({exc}); check the folder "
                f"at the end of DIGEST_BOUNCE_MAILBOX (default INBOX)"
            ) from None
        allowed = selected.get(b"PERMANENTFLAGS", ())
        self.keywords = b"\\*" in allowed or KEYWORD in allowed

    def describe(self) -> str:
        return self.shown

    def unprocessed(self) -> Iterator[Item]:
        try:
            criteria = ["UNKEYWORD", KEYWORD] if self.keywords else ["UNSEEN"]
            uids = sorted(self.client.search(criteria))
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start : start + FETCH_BATCH]
                fetched = self.client.fetch(batch, ["BODY.PEEK[]"])
                for uid in batch:
                    data = fetched.get(uid, {}).get(b"BODY[]")
                    if data is not None:  # expunged meanwhile
                        yield Item(str(uid), bytes(data))
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(f"reading {self.shown} failed: {exc}") from None

    def mark_processed(self, item: Item) -> None:
        flags = [KEYWORD, SEEN] if self.keywords else [SEEN]
        try:
            self.client.add_flags([int(item.key)], flags, silent=True)
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(
                f"marking a message processed in {self.shown} failed: {exc}"
            ) from None

    def close(self) -> None:
        try:
            self.client.logout()
        except (OSError, IMAPClientError):
            self.client.shutdown()


class MaildirMailbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        missing = [d for d in ("cur", "new") if not (path / d).is_dir()]
        if missing:
            raise MailboxError(
                f"{path}: not a Maildir (no {' or '.join(f'{d}/' for d in missing)} folder); "
                f"point DIGEST_BOUNCE_MAILBOX at the Maildir folder bounces are delivered to, "
                f"or at an imaps:// URL"
            )

    def describe(self) -> str:
        return str(self.path)

    def unprocessed(self) -> Iterator[Item]:
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(self.path / sub))
            except OSError as exc:
                raise MailboxError(f"{self.path / sub}: cannot be read: {exc}") from None
            for name in names:
                if name.startswith(".") or (sub == "cur" and "S" in _flags(name)):
                    continue
                try:
                    data = (self.path / sub / name).read_bytes()
                except FileNotFoundError:  # another reader moved it meanwhile
                    continue
                yield Item(f"{sub}/{name}", data)

    def mark_processed(self, item: Item) -> None:
        sub, name = item.key.split("/", 1)
        base, flags = name.split(":2,", 1) if ":2," in name else (name, "")
        target = self.path / "cur" / f"{base}:2,{''.join(sorted(set(flags) | {'S'}))}"
        try:
            os.rename(self.path / sub / name, target)
        except FileNotFoundError:  # another reader moved it first: processed either way
            return
        except OSError as exc:
            raise MailboxError(f"{self.path}: cannot mark {name} processed: {exc}") from None

    def close(self) -> None:
        return None


def _flags(name: str) -> str:
    return name.split(":2,", 1)[1] if ":2," in name else ""
