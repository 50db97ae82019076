"""VERP (variable envelope return path): with DIGEST_RETURN_PATH each email goes out from an
envelope sender that names its recipient (smtp.py), so a bounce sent back to that address says
whose it is (bounces.py), whatever the report itself holds. Apart from digest/reports.py: a
send needs the first half only, not the report readers."""

from __future__ import annotations


def verp_address(return_path: str, recipient: str) -> str:
    """The envelope sender for an email to `recipient`: with DIGEST_RETURN_PATH
    bounces@example.org, mail to ada@example.org goes out from
    bounces+ada=example.org@example.org, and its bounce comes back to that address."""
    local, _, domain = return_path.rpartition("@")
    user, _, host = recipient.strip().rpartition("@")
    return f"{local}+{user}={host}@{domain}"


def verp_recipient(address: str, return_path: str) -> str | None:
    """The recipient a VERP address of `return_path` stands for (None: it is not one)."""
    local, _, domain = return_path.casefold().rpartition("@")
    got_local, _, got_domain = address.strip().casefold().rpartition("@")
    base, plus, tag = got_local.partition("+")
    if not plus or base != local or got_domain != domain:
        return None
    user, equals, host = tag.rpartition("=")
    if not equals or not user or not host:
        return None
    return f"{user}@{host}"
