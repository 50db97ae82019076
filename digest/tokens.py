"""Signed tokens in links: a subscriber's address (casefolded), signed with DIGEST_SECRET.

itsdangerous does the signing; a forged, altered or cut token fails to read (None), and so does
one with our signature over a payload that is not what we sign (never a 500). Each kind of link
has its own salt, so a token made for one page is not valid for another. Unsubscribe and
preferences tokens do not expire: the links in a years-old email still work, as readers expect.
Sign-up confirmation tokens carry the sign-up itself and expire after `CONFIRM_MAX_AGE`.

Every email carries four tokens of one subscriber key (unsubscribe, preferences, and the two of
feedback_links.py), so `make_token` makes them cheaply and byte for byte what
`URLSafeSerializer(secret, salt=salt).dumps(key)` makes: one Signer per (secret, salt) with its
key derived once (`signing`), and the key's payload, whose zlib.compress costs most of a
`dumps`, made once for the four (`payload`). Reading is itsdangerous's own `loads`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from itsdangerous import BadData, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from digest.config import Settings
from digest.models import Subscriber

SALT = "digest.unsubscribe"
PREFERENCES_SALT = "digest.preferences"
SIGNUP_SALT = "digest.signup"
PATH = "/unsubscribe/"
PREFERENCES_PATH = "/preferences/"
CONFIRM_PATH = "/confirm/"
CONFIRM_MAX_AGE = 7 * 24 * 3600  # seconds a confirmation link works


@lru_cache(maxsize=32)
def serializer(secret: str, salt: str = SALT) -> URLSafeSerializer:
    """One serializer per (secret, salt), made once (a run signs several tokens per email)."""
    return URLSafeSerializer(secret, salt=salt)


_PAYLOADS = URLSafeSerializer(b"unused")  # for its dump_payload: neither secret nor salt in it


@lru_cache(maxsize=64)  # an email's four tokens are made one after another
def payload(subscriber_key: str) -> bytes:
    """The part of a token before the signature, the same for every secret and salt:
    itsdangerous's own `dump_payload` (compact JSON, zlib-compressed where that is shorter,
    base64), made once for the four tokens of an email."""
    return _PAYLOADS.dump_payload(subscriber_key)


@dataclass(frozen=True)
class Signing:
    """itsdangerous's Signer for one (secret, salt) and the key it derives, derived once
    (`Serializer.dumps` makes a new Signer and derives its key for every token)."""

    signer: Signer
    key: bytes = field(repr=False)  # a secret: never in a log line

    def dumps(self, subscriber_key: str) -> str:
        """`URLSafeSerializer(secret, salt=salt).dumps(subscriber_key)`, byte for byte (checked
        on thousands of keys in tests/test_unsubscribe.py): `Signer.sign` of the payload."""
        value = payload(subscriber_key)
        signature = base64_encode(self.signer.algorithm.get_signature(self.key, value))
        return (value + self.signer.sep + signature).decode()


@lru_cache(maxsize=32)
def signing(secret: str, salt: str = SALT) -> Signing:
    """One `Signing` per (secret, salt), made once: the Signer `dumps` would make."""
    signer = serializer(secret, salt).make_signer()
    return Signing(signer, signer.derive_key())


def make_token(secret: str, subscriber_key: str, salt: str = SALT) -> str:
    """The token of a subscriber key for one kind of link (its salt)."""
    return signing(secret, salt).dumps(subscriber_key)


def read_token(secret: str, token: str, salt: str = SALT) -> str | None:
    """The subscriber key a token was made for, or None when it was not made by us for this."""
    try:
        key = serializer(secret, salt).loads(token)
    except BadData:  # a bad signature, or our signature over a payload that does not decode
        return None
    return key if isinstance(key, str) and key else None


def unsubscribe_url(public_url: str, secret: str, subscriber_key: str) -> str:
    """The subscriber's unsubscribe page, under `digest serve`'s public address."""
    return public_url.rstrip("/") + PATH + make_token(secret, subscriber_key)


def preferences_url(settings: Settings, subscriber: Subscriber) -> str | None:
    """The subscriber's preferences page (keywords, filters, frequency, unsubscribe), for the
    footer of every email; None when emails carry no web links (DIGEST_PUBLIC_URL or
    DIGEST_SECRET not set)."""
    if not (settings.public_url and settings.secret):
        return None
    token = make_token(settings.secret, subscriber.key, PREFERENCES_SALT)
    return settings.public_url.rstrip("/") + PREFERENCES_PATH + token


def make_signup_token(secret: str, signup: dict[str, Any]) -> str:
    return str(URLSafeTimedSerializer(secret, salt=SIGNUP_SALT).dumps(signup))


def read_signup_token(secret: str, token: str) -> dict[str, Any] | None:
    """The sign-up a confirmation link was made for; None when not ours or older than
    CONFIRM_MAX_AGE."""
    try:
        signup = URLSafeTimedSerializer(secret, salt=SIGNUP_SALT).loads(
            token, max_age=CONFIRM_MAX_AGE
        )
    except BadData:
        return None
    if not isinstance(signup, dict) or not isinstance(signup.get("email"), str):
        return None
    return signup
