"""Signed tokens in links: a subscriber's address (casefolded), signed with DIGEST_SECRET.

itsdangerous does the signing; a forged, altered or cut token fails to read (None), and so does
one with our signature over a payload that is not what we sign (never a 500). Each kind of link
has its own salt, so a token made for one page is not valid for another. Unsubscribe and
preferences tokens do not expire: the links in a years-old email still work, as readers expect.
Sign-up confirmation tokens carry the sign-up itself and expire after `CONFIRM_MAX_AGE`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

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


def make_token(secret: str, subscriber_key: str, salt: str = SALT) -> str:
    return str(serializer(secret, salt).dumps(subscriber_key))


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
