"""Signed unsubscribe tokens: a subscriber's address (casefolded), signed with DIGEST_SECRET.

itsdangerous does the signing; a forged or altered token fails `read_token`. Tokens do not
expire: an unsubscribe link in a years-old email still works, as readers expect.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "digest.unsubscribe"
PATH = "/unsubscribe/"


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=SALT)


def make_token(secret: str, subscriber_key: str) -> str:
    return str(_serializer(secret).dumps(subscriber_key))


def read_token(secret: str, token: str) -> str | None:
    """The subscriber key a token was made for, or None when it was not signed by us."""
    try:
        key = _serializer(secret).loads(token)
    except BadSignature:
        return None
    return key if isinstance(key, str) and key else None


def unsubscribe_url(public_url: str, secret: str, subscriber_key: str) -> str:
    """The subscriber's personal page, under `digest serve`'s public address."""
    return public_url.rstrip("/") + PATH + make_token(secret, subscriber_key)
