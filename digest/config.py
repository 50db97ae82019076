"""Settings: read once from `DIGEST_*` environment variables, then frozen.

A command-line flag of the same meaning wins over the variable (see `Settings.from_env`).
Every bad value is reported with the variable's name and what a good value looks like.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError

PREFIX = "DIGEST_"
SECURITY_CHOICES = ("starttls", "ssl", "none")
MIN_SECRET_CHARS = 16
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    db_path: Path = Path("digest.db")
    subscribers_path: Path = Path("subscribers.csv")
    arxiv_url: str = "https://export.arxiv.org/api/query"
    arxiv_delay: float = 3.0
    arxiv_timeout: float = 30.0
    lookback_days: int = 7
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_timeout: float = 30.0
    from_addr: str | None = None
    smtp_connections: int = 2
    smtp_rate: float = 0.0
    send_at: str = "07:00"
    timezone: str = "UTC"
    public_url: str | None = None
    trending: str | None = None
    trending_url: str = "https://huggingface.co/api/daily_papers"
    trending_top: int = 5
    trending_timeout: float = 10.0
    trending_retries: int = 2
    html_budget: int = 95_000
    arxiv_page_size: int = 200
    arxiv_retries: int = 3
    smtp_retries: int = 3
    retry_backoff: float = 5.0
    suspend_after: int = 3
    secret: str | None = field(default=None, repr=False)  # signs unsubscribe links
    # where bounces and complaints arrive: imaps:// or imap:// URL (with the password) or Maildir
    bounce_mailbox: str | None = field(default=None, repr=False)
    return_path: str | None = None  # envelope sender base for VERP: bounces@example.org

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default `os.environ`); non-None `overrides` win."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        settings = cls(
            db_path=reader.get("DB", Path, cls.db_path),
            subscribers_path=reader.get("SUBSCRIBERS", Path, cls.subscribers_path),
            arxiv_url=reader.get("ARXIV_URL", _url, cls.arxiv_url),
            arxiv_delay=reader.get("ARXIV_DELAY", _non_negative(float), cls.arxiv_delay),
            arxiv_timeout=reader.get("ARXIV_TIMEOUT", _positive(float), cls.arxiv_timeout),
            lookback_days=reader.get("LOOKBACK_DAYS", _positive(int), cls.lookback_days),
            smtp_host=reader.get("SMTP_HOST", str, cls.smtp_host),
            smtp_port=reader.get("SMTP_PORT", _port, cls.smtp_port),
            smtp_security=reader.get("SMTP_SECURITY", _choice(SECURITY_CHOICES), "starttls"),
            smtp_user=reader.get("SMTP_USER", str, None),
            smtp_password=reader.get("SMTP_PASSWORD", str, None, secret=True),
            smtp_timeout=reader.get("SMTP_TIMEOUT", _positive(float), cls.smtp_timeout),
            from_addr=reader.get("FROM", str, None),
            smtp_connections=reader.get("SMTP_CONNECTIONS", _connections, cls.smtp_connections),
            smtp_rate=reader.get("SMTP_RATE", _non_negative(float), cls.smtp_rate),
            send_at=reader.get("SEND_AT", _clock, cls.send_at),
            timezone=reader.get("TIMEZONE", _zone, cls.timezone),
            public_url=reader.get("PUBLIC_URL", _url, None),
            trending=reader.get("TRENDING", _choice(("huggingface",)), None),
            trending_url=reader.get("TRENDING_URL", _url, cls.trending_url),
            trending_top=reader.get("TRENDING_TOP", _positive(int), cls.trending_top),
            trending_timeout=reader.get("TRENDING_TIMEOUT", _positive(float), cls.trending_timeout),
            trending_retries=reader.get(
                "TRENDING_RETRIES", _non_negative(int), cls.trending_retries
            ),
            html_budget=reader.get("HTML_BUDGET", _positive(int), cls.html_budget),
            arxiv_page_size=reader.get("ARXIV_PAGE_SIZE", _page_size, cls.arxiv_page_size),
            arxiv_retries=reader.get("ARXIV_RETRIES", _non_negative(int), cls.arxiv_retries),
            smtp_retries=reader.get("SMTP_RETRIES", _non_negative(int), cls.smtp_retries),
            retry_backoff=reader.get("RETRY_BACKOFF", _non_negative(float), cls.retry_backoff),
            suspend_after=reader.get("SUSPEND_AFTER", _positive(int), cls.suspend_after),
            secret=reader.get("SECRET", _secret, None, secret=True),
            bounce_mailbox=reader.get("BOUNCE_MAILBOX", _mailbox, None, secret=True),
            return_path=reader.get("RETURN_PATH", _return_path, None),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def require_from(self) -> str:
        """The From address, or a message that says how to set it."""
        if not self.from_addr:
            raise ConfigError(
                f"{PREFIX}FROM is not set: set it to the address digests come from, "
                f"e.g. export {PREFIX}FROM='arXiv digest <digest@example.org>'"
            )
        return self.from_addr

    def require_secret(self) -> str:
        """The key that signs unsubscribe links, or a message that says how to set it."""
        if not self.secret:
            raise ConfigError(
                f"{PREFIX}SECRET is not set: `digest serve` needs it to check the signed "
                f"unsubscribe links (and `digest send` to sign them). Set it to a long random "
                f"string, e.g. export {PREFIX}SECRET=$(python3 -c "
                f"'import secrets; print(secrets.token_urlsafe(32))'), the same for both"
            )
        return self.secret

    @property
    def one_click(self) -> bool:
        """Whether emails carry signed one-click unsubscribe links (else mailto: only)."""
        return bool(self.public_url and self.secret)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T, *, secret: bool = False) -> T:
        raw = self.env.get(PREFIX + name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw if secret else raw.strip())
        except (ValueError, ZoneInfoNotFoundError) as exc:
            shown = "(hidden)" if secret else repr(raw)
            raise ConfigError(f"{PREFIX}{name}={shown} is not valid: {exc}") from None


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = _number(kind, raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError("use a number greater than 0")
        return value

    return parse


def _non_negative(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = _number(kind, raw)
        if value < 0:  # type: ignore[operator]
            raise ValueError("use 0 or a positive number")
        return value

    return parse


def _number(kind: Callable[[str], T], raw: str) -> T:
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"use {what}") from None


def _port(raw: str) -> int:
    port = _number(int, raw)
    if not 0 < port < 65536:
        raise ValueError("use a port number from 1 to 65535")
    return port


def _page_size(raw: str) -> int:
    size = _number(int, raw)
    if not 0 < size <= 2000:
        raise ValueError("use a whole number from 1 to 2000 (arXiv's largest page)")
    return size


MAX_SMTP_CONNECTIONS = 16


def _connections(raw: str) -> int:
    what = f"use a whole number from 1 to {MAX_SMTP_CONNECTIONS}"
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(what) from None
    if not 0 < count <= MAX_SMTP_CONNECTIONS:
        raise ValueError(what)
    return count


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError("use one of " + ", ".join(choices))
        return raw.lower()

    return parse


def _url(raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ValueError("use an http:// or https:// URL")
    return raw.rstrip("/") if raw.endswith("/") and raw.count("/") > 3 else raw


def _secret(raw: str) -> str:
    if len(raw) < MIN_SECRET_CHARS:
        raise ValueError(
            f"use at least {MIN_SECRET_CHARS} random characters, e.g. the output of "
            f"python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


def _clock(raw: str) -> str:
    """HH:MM, or HH:MM:SS when a minute is too coarse (the seconds are kept as given)."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(:[0-5]\d)?", raw)
    if not match:
        raise ValueError("use a 24-hour time as HH:MM, e.g. 07:00")
    return f"{int(match[1]):02d}:{match[2]}{match[3] or ''}"


def _zone(raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("use an IANA time zone name, e.g. Europe/Berlin or UTC") from None
    return raw


def _mailbox(raw: str) -> str:
    """An imaps:// or imap:// URL with a user and password, or a folder path (a Maildir)."""
    raw = raw.strip()
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", raw)
    if scheme is None:
        return raw  # a Maildir path: checked when it is read
    if scheme[1].lower() not in ("imap", "imaps"):
        raise ValueError(
            "use an imaps://USER:PASSWORD@HOST/FOLDER (or imap://) URL or the path of a Maildir"
        )
    parts = urlsplit(raw)
    bad_port = (
        "the URL's port is not a number from 1 to 65535 (write the user's and the password's "
        "special characters %-encoded: / as %2F, @ as %40, : as %3A, a space as %20)"
    )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(bad_port) from None
    if not parts.hostname:
        raise ValueError("the URL has no host: use imaps://USER:PASSWORD@HOST/FOLDER")
    if not parts.username or parts.password is None:
        raise ValueError(
            "the URL needs a user and a password: imaps://USER:PASSWORD@HOST/FOLDER "
            "(write @ in the user as %40)"
        )
    if port == 0:
        raise ValueError(bad_port)
    return raw


def _return_path(raw: str) -> str:
    local, at, domain = raw.rpartition("@")
    if not at or not local or not domain or any(c in raw for c in " <>\r\n+="):
        raise ValueError(
            "use a plain address without + or =, e.g. bounces@example.org: mail to "
            "ada@example.org is then sent from bounces+ada=example.org@example.org"
        )
    return raw
