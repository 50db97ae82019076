"""Errors whose message is meant for the person running `digest`.

Anything raised as a `DigestError` is shown as it is (`Error: <message>`), so its message says
what went wrong and what to change. Any other exception is a bug.
"""


class DigestError(Exception):
    """Base class: the message is for the user."""


class ConfigError(DigestError):
    """A setting (environment variable or flag) has a value we cannot use."""


class FetchError(DigestError):
    """arXiv could not be asked, or answered something that is not a result page."""


class SmtpError(DigestError):
    """The mail server could not be reached or refused the session (not one recipient)."""
