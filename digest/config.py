"""Settings: read once from `DIGEST_*` environment variables, then frozen.

A command-line flag of the same meaning wins over the variable (see `Settings.from_env`).
Every bad value is reported with the variable's name and what a good value looks like.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import formataddr, parseaddr
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
    stop_timeout: float = 5.0  # seconds `digest run` waits for the mail server after SIGTERM
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
    recommend_top: int = 5  # papers in "Recommended for you"
    recommend_min_likes: int = 3  # likes a reader needs before they get the section
    secret: str | None = field(default=None, repr=False)  # signs unsubscribe links
    dkim_key: Path | None = None  # PEM private key file; None: emails are not DKIM-signed
    dkim_selector: str | None = None
    dkim_domain: str | None = None  # None: the From address's domain
    signup: bool = False  # DIGEST_SIGNUP=open: `digest serve`'s root page is a sign-up form
    trust_proxy: str | None = None  # the reverse proxy whose X-Forwarded-* headers we believe
    serve_timeout: float = 20.0  # seconds `digest serve` keeps an idle or stalled connection
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
            from_addr=reader.get("FROM", _sender, None),
            smtp_connections=reader.get("SMTP_CONNECTIONS", _connections, cls.smtp_connections),
            smtp_rate=reader.get("SMTP_RATE", _non_negative(float), cls.smtp_rate),
            send_at=reader.get("SEND_AT", _clock, cls.send_at),
            stop_timeout=reader.get("STOP_TIMEOUT", _non_negative(float), cls.stop_timeout),
            timezone=reader.get("TIMEZONE", _zone, cls.timezone),
            public_url=reader.get("PUBLIC_URL", _public_url, None),
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
            recommend_top=reader.get("RECOMMEND_TOP", _non_negative(int), cls.recommend_top),
            recommend_min_likes=reader.get(
                "RECOMMEND_MIN_LIKES", _positive(int), cls.recommend_min_likes
            ),
            secret=reader.get("SECRET", _secret, None, secret=True),
            dkim_key=reader.get("DKIM_KEY", _dkim_key, None),
            dkim_selector=reader.get("DKIM_SELECTOR", _dns_label, None),
            dkim_domain=reader.get("DKIM_DOMAIN", _domain, None),
            signup=reader.get("SIGNUP", _choice(("open", "off")), "off") == "open",
            trust_proxy=reader.get("TRUST_PROXY", _proxy, None),
            serve_timeout=reader.get("SERVE_TIMEOUT", _positive(float), cls.serve_timeout),
            bounce_mailbox=reader.get("BOUNCE_MAILBOX", _mailbox, None, secret=True),
            return_path=reader.get("RETURN_PATH", _return_path, None),
        )
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        _check_dkim(settings)
        return settings

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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _public_url(raw: str) -> str:
    """https://, with or without a path (behind a reverse proxy); http:// only on loopback:
    one-click unsubscribe (RFC 8058) needs https, and links carry signed tokens."""
    url = _url(raw)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(
            "use the address without ?query or #fragment, e.g. https://example.org/digest"
        )
    if parts.scheme == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS:
        raise ValueError(
            "use an https:// URL: one-click unsubscribe links (RFC 8058) need https, and the "
            "links carry signed tokens; http:// is accepted only for localhost and 127.0.0.1. "
            "Put digest serve behind a reverse proxy with TLS (see the README)"
        )
    return url


def _proxy(raw: str) -> str:
    """The address of the reverse proxy in front of `digest serve` (its X-Forwarded-For,
    -Proto and -Host headers are then believed), or '*' for any (only when nothing else can
    reach the port)."""
    if raw == "*":
        return raw
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(
            "use the IP address the reverse proxy connects from, e.g. 127.0.0.1, or '*'"
        ) from None
    return raw


def _secret(raw: str) -> str:
    if len(raw) < MIN_SECRET_CHARS:
        raise ValueError(
            f"use at least {MIN_SECRET_CHARS} random characters, e.g. the output of "
            f"python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


DEFAULT_DISPLAY_NAME = "arXiv digest"


def _sender(raw: str) -> str:
    """The From address, with a display name: "arXiv digest" when none is given (an address
    alone reads as a machine's, and some filters score a From without a name)."""
    name, address = parseaddr(raw)
    if name or not address or "@" not in address:
        return raw
    return formataddr((DEFAULT_DISPLAY_NAME, address))


def _dkim_key(raw: str) -> Path:
    """A readable PEM RSA private key (checked here, so a bad one stops the run at once)."""
    from digest.dkim import key_problem  # dkimpy and cryptography only when DKIM is used

    path = Path(raw).expanduser()
    problem = key_problem(path)
    if problem:
        raise ValueError(problem)
    return path


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def _dns_label(raw: str) -> str:
    """A DKIM selector: DNS labels separated by dots (e.g. digest, or 2026.digest)."""
    if not re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})*", raw):
        raise ValueError("use letters, digits, '-' and '.', as in a DNS name, e.g. digest")
    return raw


def _domain(raw: str) -> str:
    name = raw.rstrip(".").lower()
    if not re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})+", name):
        raise ValueError("use a domain name, e.g. example.org")
    return name


def _check_dkim(settings: Settings) -> None:
    """DKIM settings that only make sense together."""
    if settings.dkim_key is not None and not settings.dkim_selector:
        raise ConfigError(
            f"{PREFIX}DKIM_SELECTOR is not set: with {PREFIX}DKIM_KEY set it names the DNS "
            f"record of the public key (SELECTOR._domainkey.DOMAIN), "
            f"e.g. export {PREFIX}DKIM_SELECTOR=digest"
        )
    if settings.dkim_key is None and (settings.dkim_selector or settings.dkim_domain):
        which = "DKIM_SELECTOR" if settings.dkim_selector else "DKIM_DOMAIN"
        raise ConfigError(
            f"{PREFIX}{which} is set but {PREFIX}DKIM_KEY is not: set {PREFIX}DKIM_KEY to the "
            f"PEM private key file to sign emails, or unset {PREFIX}{which}"
        )


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
