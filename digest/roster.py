"""Editing subscribers.csv in place, the way a careful person would with a text editor.

Only the rows an edit touches are rewritten; every other row keeps its exact text (quoting,
spacing, line endings), the row order, every other column and a UTF-8 BOM stay as they were.
The file is written atomically (a temporary file beside it, then `os.replace`), and never over
a file that changed since it was read: the edit is refused and nothing is lost.

The operations (`add`, `remove`, `set_keywords`, ...) each read, change one row, validate the
result with the same rules `digest send` uses, and write.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils
from email_validator import EmailNotValidError, validate_email

from digest import store
from digest.errors import DigestError
from digest.models import subscriber_key
from digest.subscribers import (
    KEYWORD_SEPARATOR,
    Problem,
    check_row,
    format_frequency,
    load,
    parse_keywords,
    parse_likes,
)

BOM = "\ufeff"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
LIST_COLUMNS = ("keywords", "categories", "exclude", "authors", "likes")


def address_key(raw: str) -> str:
    """How two spellings of an address compare (`models.subscriber_key`)."""
    return subscriber_key(raw)


def valid_address(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise DigestError(f"{raw.strip()!r} is not an email address: {exc}") from None


@dataclass
class Record:
    """One CSV record: the exact text it had in the file and its cells."""

    text: str
    cells: list[str]
    line: int  # first physical line, 1-based
    changed: bool = False


@dataclass
class Document:
    path: Path
    original: bytes
    bom: bool
    newline: str
    quote_all: bool
    header: Record
    records: list[Record] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [name.strip().lower() for name in self.header.cells]

    @classmethod
    def read(cls, path: Path) -> Document:
        try:
            original = path.read_bytes()
        except FileNotFoundError:
            raise DigestError(
                f"{path}: no such file. Create it with a header row 'email,name,keywords' "
                f"or point DIGEST_SUBSCRIBERS at yours."
            ) from None
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DigestError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
        bom = text.startswith(BOM)
        text = text.removeprefix(BOM)
        lines = _LINE.findall(text)
        first_end = re.search(r"\r\n|\r|\n", text)
        newline = first_end[0] if first_end else "\n"
        records: list[Record] = []
        reader = csv.reader(iter(lines))
        consumed = 0
        try:
            for cells in reader:
                start, consumed = consumed, reader.line_num
                records.append(Record("".join(lines[start:consumed]), cells, start + 1))
        except csv.Error as exc:
            raise DigestError(f"{path}: not a readable CSV file ({exc})") from None
        if not records:
            raise DigestError(f"{path}: the file is empty; it needs a header row 'email,keywords'")
        header, rows = records[0], records[1:]
        quote_all = all(r.text.startswith('"') for r in records if r.text.strip())
        doc = cls(path, original, bom, newline, quote_all, header, rows)
        missing = [c for c in ("email", "keywords") if c not in doc.columns]
        if missing:
            raise DigestError(
                f"{path}:1: the header has no {' or '.join(repr(m) for m in missing)} column; "
                f"the first row must name the columns, e.g. 'email,name,keywords'"
            )
        return doc

    # Finding and changing rows ------------------------------------------------------------

    def find(self, email: str) -> Record:
        key = address_key(email)
        index = self.columns.index("email")
        for record in self.records:
            if len(record.cells) > index and address_key(record.cells[index]) == key:
                return record
        raise DigestError(f"{email.strip()} is not in {self.path}; see `digest subscribers list`")

    def get(self, record: Record, column: str) -> str:
        index = self.columns.index(column)
        return record.cells[index] if index < len(record.cells) else ""

    def set(self, record: Record, column: str, value: str) -> None:
        self.ensure_column(column)
        index = self.columns.index(column)
        if len(record.cells) <= index:
            record.cells.extend([""] * (index + 1 - len(record.cells)))
        record.cells[index] = value
        record.changed = True

    def ensure_column(self, column: str) -> None:
        """Add an optional column at the end of the header (other rows get nothing: a short
        row reads as empty cells, so their text stays as it was)."""
        if column not in self.columns:
            self.header.cells.append(column)
            self.header.changed = True

    def append(self, values: Mapping[str, str]) -> Record:
        for column in values:
            self.ensure_column(column)
        cells = [values.get(column, "") for column in self.columns]
        record = Record("", cells, 0, changed=True)
        self.records.append(record)
        return record

    def remove(self, record: Record) -> None:
        self.records.remove(record)

    def values(self, record: Record) -> dict[str, str]:
        return dict(zip(self.columns, record.cells, strict=False))

    # Writing --------------------------------------------------------------------------------

    def _format(self, cells: list[str]) -> str:
        out = io.StringIO()
        quoting = csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL
        csv.writer(out, lineterminator=self.newline, quoting=quoting).writerow(cells)
        return out.getvalue()

    def text(self) -> str:
        parts: list[str] = []
        for record in [self.header, *self.records]:
            text = self._format(record.cells) if record.changed else record.text
            if parts and not parts[-1].endswith(("\n", "\r")):
                parts[-1] += self.newline  # the old last row had no line end
            parts.append(text)
        return (BOM if self.bom else "") + "".join(parts)

    def write(self) -> None:
        """Replace the file atomically, unless it changed since it was read."""
        data = self.text().encode("utf-8")
        try:
            now = self.path.read_bytes()
        except FileNotFoundError:
            now = b""
        if hashlib.sha256(now).digest() != hashlib.sha256(self.original).digest():
            raise DigestError(
                f"{self.path} changed since it was read (edited by someone else?); "
                f"nothing was written: run the command again"
            )
        mode = self.path.stat().st_mode & 0o777
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, mode)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self.original = data


def _validate(doc: Document, record: Record) -> None:
    """The edited row must be one `digest send` accepts, and its address listed once."""
    problem = check_row(doc.values(record), record.line)
    if problem:
        raise DigestError(f"{problem}; nothing was written")
    key = address_key(doc.get(record, "email"))
    for other in doc.records:
        if other is not record and address_key(doc.get(other, "email")) == key:
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
    doc = Document.read(path)
    address = valid_address(email)
    values = {"email": address, "keywords": _join(_phrases(keywords))}
    if name:
        values["name"] = name
    values.update({k: v for k, v in (options or {}).items() if v is not None})
    record = doc.append(values)
    _validate(doc, record)
    doc.write()
    return address


def remove(path: Path, email: str) -> str:
    doc = Document.read(path)
    record = doc.find(email)
    doc.remove(record)
    doc.write()
    return doc.get(record, "email").strip()


def change_keywords(path: Path, email: str, action: str, keywords: Iterable[str]) -> list[str]:
    """`action` is add, remove or set; returns the keywords after the change."""
    doc = Document.read(path)
    record = doc.find(email)
    current = list(parse_keywords(doc.get(record, "keywords")))
    given = _phrases(keywords)
    folded = [k.casefold() for k in current]
    if action == "add":
        new = current + [k for k in given if k.casefold() not in folded]
    elif action == "remove":
        unknown = [k for k in given if k.casefold() not in folded]
        if unknown:
            raise DigestError(
                f"{doc.get(record, 'email').strip()} has no keyword {unknown[0]!r}; "
                f"their keywords are: {_join(current)}"
            )
        drop = {k.casefold() for k in given}
        new = [k for k in current if k.casefold() not in drop]
        if not new:
            raise DigestError(
                f"that would leave {doc.get(record, 'email').strip()} without a keyword; "
                f"use `digest subscribers remove` to remove the subscriber"
            )
    elif action == "set":
        new = given
    else:
        raise ValueError(action)
    doc.set(record, "keywords", _join(new))
    _validate(doc, record)
    doc.write()
    return new


def update(path: Path, email: str, options: Mapping[str, str | None]) -> dict[str, str]:
    """Set optional columns (name, categories, exclude, authors, frequency) of one subscriber;
    a None value is left as it is, an empty one clears the cell."""
    doc = Document.read(path)
    record = doc.find(email)
    for column, value in options.items():
        if value is not None:
            if column in LIST_COLUMNS:
                value = _join(parse_keywords(value))
            doc.set(record, column, value)
    _validate(doc, record)
    doc.write()
    return doc.values(record)


def change_likes(path: Path, email: str, action: str, ids: Iterable[str]) -> list[str]:
    """`action` is like or unlike: add the arXiv ids to (or remove them from) the subscriber's
    likes column; returns their likes after the change (ids without version)."""
    given, bad = parse_likes(KEYWORD_SEPARATOR.join(ids))
    if bad is not None:
        raise DigestError(
            f"{bad!r} is not an arXiv id; write ids such as '2506.13741' or '2506.13741v2'"
        )
    doc = Document.read(path)
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
        doc.write()
    return new


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
