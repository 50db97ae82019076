"""Editing subscribers.csv in place, the way a careful person would with a text editor, and
reading it fast while it does not change.

Every change (`add`, `remove`, `change_keywords`, `update`, and the web pages through them) is
one read-check-write under an OS file lock beside the file (`.subscribers.csv.lock`, taken by
`filelock`), shared by every process and thread that edits it: an edit is applied whole or
refused with a message, never lost to another one running at the same time. Each validates the
changed row with the same rules `digest send` uses. See `digest.document` for how rows keep
their text.

`snapshot` keeps the parsed file in memory while its inode, size and mtime stay the same, so a
web request at 100,000 rows looks up one row instead of parsing and validating them all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from filelock import FileLock, Timeout

from digest import store
from digest.document import Document, Record, address_key, identity, valid_address
from digest.errors import DigestError
from digest.models import Subscriber
from digest.subscribers import (
    KEYWORD_SEPARATOR,
    Problem,
    check_row,
    format_frequency,
    load,
    parse_keywords,
    parse_likes,
    parse_row,
)

__all__ = ["Document", "Record", "address_key", "valid_address"]

LIST_COLUMNS = ("keywords", "categories", "exclude", "authors", "likes")
LOCK_TIMEOUT = 30.0  # seconds an edit waits for the others before it is refused

_cache: dict[Path, Document] = {}
_cache_lock = threading.Lock()


def lock_path(path: Path) -> Path:
    """The lock file every writer of `path` takes: beside it, hidden."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the subscribers file's edit lock (waits up to LOCK_TIMEOUT for other edits)."""
    lock = FileLock(lock_path(path), timeout=LOCK_TIMEOUT)
    try:
        lock.acquire()
    except Timeout:
        raise DigestError(
            f"{path} is being edited by another process (its lock {lock_path(path)} was held "
            f"for more than {LOCK_TIMEOUT:.0f} seconds); nothing was written: try again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def snapshot(path: Path) -> Document:
    """The file as parsed, shared: read it, never change it (use `edit` to change the file).

    Parsed again only when the file's inode, size or mtime changed since it was last parsed."""
    key = Path(os.path.abspath(path))
    try:
        now = identity(os.stat(path))
    except FileNotFoundError:
        now = None
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached.identity == now:
            return cached
        doc = Document.read(path)
        doc.positions("")  # the address index, built once while nobody else can see it
        _cache[key] = doc
        return doc


@contextmanager
def edit(path: Path) -> Iterator[Document]:
    """One locked read-check-write: the document to change; written when the block ends
    without an error (nothing is written when it raises)."""
    with locked(path):
        doc = snapshot(path).copy()
        yield doc
        publish = doc.stage()
        with _cache_lock:  # readers wait the moment it takes, then see the new file
            publish()
            _cache[Path(os.path.abspath(path))] = doc


def lookup(path: Path, email: str) -> Subscriber | None:
    """The subscriber with this address as `digest send` would read them (the first valid row
    for it), or None; only that row is validated."""
    doc = snapshot(path)
    for position in doc.positions(email):
        record = doc.row(position)
        subscriber, _ = parse_row(doc.values(record), record.line)
        if subscriber is not None:
            return subscriber
    return None


def _validate(doc: Document, record: Record) -> None:
    """The edited row must be one `digest send` accepts, and its address listed once."""
    problem = check_row(doc.values(record), record.line)
    if problem:
        raise DigestError(f"{problem}; nothing was written")
    for position in doc.positions(doc.get(record, "email")):
        other = doc.row(position)
        if other is not record:
            where = f"{doc.path}:{other.line}"
            raise DigestError(f"{doc.get(record, 'email').strip()} is already listed at {where}")


def _join(items: Iterable[str]) -> str:
    return f"{KEYWORD_SEPARATOR} ".join(items)


# The operations behind `digest subscribers` ---------------------------------------------------


def add(
    path: Path,
    email: str,
    keywords: Iterable[str],
    *,
    name: str = "",
    options: Mapping[str, str | None] | None = None,
) -> str:
    """Append a subscriber; returns the address as written."""
    address = valid_address(email)
    values = {"email": address, "keywords": _join(_phrases(keywords))}
    if name:
        values["name"] = name
    values.update({k: v for k, v in (options or {}).items() if v is not None})
    with edit(path) as doc:
        record = doc.append(values)
        _validate(doc, record)
    return address


def remove(path: Path, email: str) -> str:
    with edit(path) as doc:
        record = doc.find(email)
        doc.remove(record)
    return doc.get(record, "email").strip()


def change_keywords(path: Path, email: str, action: str, keywords: Iterable[str]) -> list[str]:
    """`action` is add, remove or set; returns the keywords after the change."""
    return change_list(path, email, "keywords", action, keywords)


ITEM_NAMES = {
    "keywords": "keyword",
    "exclude": "exclude phrase",
    "categories": "category",
    "authors": "followed author",
}


def change_list(
    path: Path, email: str, column: str, action: str, items: Iterable[str]
) -> list[str]:
    """Add, remove or set phrases of one list column (keywords, exclude, categories, authors)
    of one subscriber, in one locked edit; returns the column's phrases after the change.
    At least one keyword must remain; the other lists may become empty."""
    if column not in ITEM_NAMES:
        raise ValueError(column)
    with edit(path) as doc:
        record = doc.find(email)
        address = doc.get(record, "email").strip()
        current = list(parse_keywords(doc.get(record, column))) if column in doc.columns else []
        given = _phrases(items)
        folded = [k.casefold() for k in current]
        what = ITEM_NAMES[column]
        if action == "add":
            new = current + [k for k in given if k.casefold() not in folded]
        elif action == "remove":
            unknown = [k for k in given if k.casefold() not in folded]
            if unknown:
                theirs = f"their {column} are: {_join(current)}" if current else "they have none"
                raise DigestError(f"{address} has no {what} {unknown[0]!r}; {theirs}")
            drop = {k.casefold() for k in given}
            new = [k for k in current if k.casefold() not in drop]
            if not new and column == "keywords":
                raise DigestError(
                    f"that would leave {address} without a keyword; "
                    f"use `digest subscribers remove` to remove the subscriber"
                )
        elif action == "set":
            new = given
        else:
            raise ValueError(action)
        doc.set(record, column, _join(new))
        _validate(doc, record)
    return new


def change_likes(path: Path, email: str, action: str, ids: Iterable[str]) -> list[str]:
    """`action` is like or unlike: add the arXiv ids to (or remove them from) the subscriber's
    likes column, in one locked edit; returns their likes after the change (ids without
    version)."""
    given, bad = parse_likes(KEYWORD_SEPARATOR.join(ids))
    if bad is not None:
        raise DigestError(
            f"{bad!r} is not an arXiv id; write ids such as '2506.13741' or '2506.13741v2'"
        )
    with edit(path) as doc:
        record = doc.find(email)
        cell = doc.get(record, "likes") if "likes" in doc.columns else ""
        found, wrong = parse_likes(cell)
        if wrong is not None:
            raise DigestError(
                f"{doc.path}:{record.line}: like {wrong!r} is not an arXiv id; fix that cell "
                f"first (see `digest subscribers check`); nothing was written"
            )
        current = list(found)
        if action == "like":
            new = current + [i for i in given if i not in current]
        elif action == "unlike":
            new = [i for i in current if i not in given]
        else:
            raise ValueError(action)
        if new != current:
            doc.set(record, "likes", _join(new))
            _validate(doc, record)
    return new


def update(path: Path, email: str, options: Mapping[str, str | None]) -> dict[str, str]:
    """Set optional columns (name, categories, exclude, authors, frequency) of one subscriber;
    a None value is left as it is, an empty one clears the cell."""
    with edit(path) as doc:
        record = doc.find(email)
        for column, value in options.items():
            if value is not None:
                if column in LIST_COLUMNS:
                    value = _join(parse_keywords(value))
                doc.set(record, column, value)
        _validate(doc, record)
    return doc.values(record)


def check(path: Path) -> list[Problem]:
    return load(path)[1]


@dataclass(frozen=True)
class Listing:
    email: str
    name: str
    keywords: str
    status: str  # active | unsubscribed, with the frequency and any filters


def listing(path: Path, db: sqlite_utils.Database) -> tuple[list[Listing], list[Problem]]:
    people, problems = load(path)
    suppressed = store.suppressed_keys(db)
    rows = []
    for person in people:
        status = "unsubscribed" if person.key in suppressed else "active"
        details = [format_frequency(person.weekday)]
        if person.categories:
            details.append("categories: " + _join(person.categories))
        if person.exclude:
            details.append("exclude: " + _join(person.exclude))
        if person.authors:
            details.append("authors: " + _join(person.authors))
        rows.append(
            Listing(
                person.email,
                person.name,
                _join(person.keywords),
                f"{status}, " + ", ".join(details),
            )
        )
    return rows, problems


def resubscribe(path: Path, db: sqlite_utils.Database, email: str) -> str:
    """Lift an unsubscribe on purpose. The address must be in the file (or they get nothing)."""
    key = address_key(email)
    if not store.unsuppress(db, key):
        raise DigestError(f"{email.strip()} is not unsubscribed; nothing to do")
    people, _ = load(path)
    if not any(p.key == key for p in people):
        return f"{email.strip()} can receive digests again, once a valid row for it is in {path}"
    return f"{email.strip()} is subscribed again"


def unsubscribe(db: sqlite_utils.Database, email: str, source: str) -> bool:
    return store.suppress(db, address_key(email), email.strip(), source)


def _phrases(items: Iterable[str]) -> list[str]:
    """Each argument may itself hold several phrases separated by ';'."""
    return list(parse_keywords(KEYWORD_SEPARATOR.join(items)))
