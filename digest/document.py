"""subscribers.csv as a text document: rows keep their exact text unless an edit touches them.

Only the rows an edit touches are rewritten; every other row keeps its exact text (quoting,
spacing, line endings), the row order, every other column and a UTF-8 BOM stay as they were.
The file is written atomically (a temporary file beside it, then `os.replace`), and never over
a file that changed since it was read: the edit is refused and nothing is lost.

A document knows where each address is (`positions`, built once, kept up to date by its own
edits), so finding one row of 100,000 does not validate the other 99,999. `copy()` is cheap and
copy-on-write: a row is copied only when an edit takes it, so a cached document can be shared
by readers while an edit works on its copy.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from digest.errors import DigestError
from digest.models import subscriber_key

BOM = "\ufeff"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
# An unquoted ASCII address without an IDNA domain: the library's normalised form of it differs
# from the text only in case, so its key is the casefolded text (tests/test_locking.py checks
# this against email-validator; it is ~40x faster, which matters at 100,000 rows).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")

Identity = tuple[int, int, int]
"""(inode, size, mtime in ns) of a file: when all three are unchanged, so is the file."""


def address_key(raw: str) -> str:
    """How two spellings of an address compare (`models.subscriber_key`)."""
    return subscriber_key(raw)


def valid_address(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise DigestError(f"{raw.strip()!r} is not an email address: {exc}") from None


def identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _line_count(text: str) -> int:
    """Physical lines in a record's text (its line ends: \\r\\n, \\r or \\n)."""
    breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
    return breaks + (0 if text.endswith(("\n", "\r")) or not text else 1)


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
    bom: bool
    newline: str
    quote_all: bool
    header: Record
    records: list[Record] = field(default_factory=list)
    identity: Identity | None = None  # of the file as it was read or last written
    _first: dict[str, int] | None = field(default=None, repr=False)  # key -> first position
    _more: dict[str, list[int]] = field(default_factory=dict, repr=False)  # listed twice or more
    _own: set[int] = field(default_factory=set, repr=False)  # ids of the rows this copy owns
    _touched: list[Record] = field(default_factory=list, repr=False)  # taken or appended rows
    # The file's last row when it had no line end: its text has one here, taken off on writing
    # while it is still the last row, unchanged.
    _unterminated: Record | None = field(default=None, repr=False)
    _renumber: bool = field(default=False, repr=False)
    _index_shared: bool = field(default=False, repr=False)  # copied before it is changed
    _texts: list[bytes] = field(default_factory=list, repr=False)  # each row as in the file
    # A copy shares the row lists of the document it was made from (copying 100,000 items per
    # edit costs more than the edit): rows it takes live in `_overlay` until it is written,
    # and `_texts` (read only by writers, who hold the lock) is patched in place and restored
    # if the write fails. Appending or removing a row gives the copy lists of its own first.
    _lists_shared: bool = field(default=False, repr=False)
    _overlay: dict[int, Record] = field(default_factory=dict, repr=False)
    _saved: dict[int, bytes] = field(default_factory=dict, repr=False)  # _texts before parts()

    @property
    def columns(self) -> list[str]:
        return [name.strip().lower() for name in self.header.cells]

    @classmethod
    def read(cls, path: Path) -> Document:
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                original = handle.read()
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
        unterminated = records[-1] if not records[-1].text.endswith(("\n", "\r")) else None
        if unterminated is not None:
            unterminated.text += newline
        header, rows = records[0], records[1:]
        quote_all = all(r.text.startswith('"') for r in records if r.text.strip())
        doc = cls(path, bom, newline, quote_all, header, rows, identity(stat))
        doc._unterminated = unterminated
        doc._texts = [r.text.encode("utf-8") for r in rows]
        missing = [c for c in ("email", "keywords") if c not in doc.columns]
        if missing:
            raise DigestError(
                f"{path}:1: the header has no {' or '.join(repr(m) for m in missing)} column; "
                f"the first row must name the columns, e.g. 'email,name,keywords'"
            )
        return doc

    def copy(self) -> Document:
        """A copy to edit: the row list and index are copied, the rows only when taken."""
        self.positions("")  # build the index once, in the shared document
        assert self._first is not None
        header = Record(self.header.text, list(self.header.cells), 1, self.header.changed)
        return Document(
            self.path, self.bom, self.newline, self.quote_all, header,
            self.records, self.identity, self._first, self._more,
            _unterminated=self._unterminated if self._unterminated is not self.header else header,
            _index_shared=True, _texts=self._texts, _lists_shared=True,
        )  # fmt: skip

    # Finding rows ---------------------------------------------------------------------------

    def positions(self, email: str) -> list[int]:
        """Where the rows with this address are, in file order (usually one or none)."""
        if self._first is None:
            first: dict[str, int] = {}
            more: dict[str, list[int]] = {}
            index = self.columns.index("email")
            for position, record in enumerate(self.records):
                if len(record.cells) > index:
                    key = address_key(record.cells[index])
                    if key in first:
                        more.setdefault(key, []).append(position)
                    else:
                        first[key] = position
            self._more = more  # then the index: a reader that sees it sees both
            self._first = first
        key = address_key(email)
        first = self._first.get(key)
        if first is None:
            return []
        return [first, *self._more.get(key, ())]

    def _index_row(self, key: str, position: int) -> None:
        assert self._first is not None
        if self._index_shared:
            self._first = dict(self._first)
            self._more = {k: list(v) for k, v in self._more.items()}
            self._index_shared = False
        if key in self._first:
            self._more.setdefault(key, []).append(position)
        else:
            self._first[key] = position

    def find(self, email: str) -> Record:
        """The first row with this address, to be edited (this document's own copy of it)."""
        found = self.positions(email)
        if not found:
            raise DigestError(
                f"{email.strip()} is not in {self.path}; see `digest subscribers list`"
            )
        return self.take(found[0])

    def row(self, position: int) -> Record:
        """The row at `position` (this document's own copy when it took it)."""
        return self._overlay.get(position) or self.records[position]

    def _own_lists(self) -> None:
        if self._lists_shared:
            records = list(self.records)
            for position, record in self._overlay.items():
                records[position] = record
            self.records, self._texts = records, list(self._texts)
            self._overlay, self._lists_shared = {}, False

    def take(self, position: int) -> Record:
        record = self.row(position)
        if id(record) not in self._own:
            shared, record = record, Record(record.text, list(record.cells), record.line)
            record.changed = shared.changed
            if shared is self._unterminated:
                self._unterminated = record
            if self._lists_shared:
                self._overlay[position] = record
            else:
                self.records[position] = record
            self._own.add(id(record))
            self._touched.append(record)
        return record

    def position(self, record: Record) -> int:
        for position in self.positions(self.get(record, "email")):
            if self.row(position) is record:
                return position
        return next(i for i in range(len(self.records)) if self.row(i) is record)

    # Changing rows ---------------------------------------------------------------------------

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
        self._own_lists()
        last = self.records[-1] if self.records else self.header
        record = Record("", cells, last.line + _line_count(last.text), changed=True)
        self.positions("")
        self.records.append(record)
        self._texts.append(b"")
        self._own.add(id(record))
        self._touched.append(record)
        self._index_row(address_key(self.get(record, "email")), len(self.records) - 1)
        return record

    def remove(self, record: Record) -> None:
        position = self.position(record)
        self._own_lists()
        del self.records[position]
        del self._texts[position]
        self._touched = [r for r in self._touched if r is not record]
        self._first, self._more, self._renumber, self._index_shared = None, {}, True, False

    def values(self, record: Record) -> dict[str, str]:
        return dict(zip(self.columns, record.cells, strict=False))

    # Writing --------------------------------------------------------------------------------

    def _format(self, cells: list[str]) -> str:
        out = io.StringIO()
        quoting = csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL
        csv.writer(out, lineterminator=self.newline, quoting=quoting).writerow(cells)
        return out.getvalue()

    def parts(self) -> tuple[bytes, bytes]:
        """The file's bytes as (BOM and header, rows): each row's own bytes, the changed ones
        written anew (in `_texts`: call `_restore` when they are not written after all)."""
        for record in self._touched:
            if record.changed:
                position = self.position(record)
                self._saved.setdefault(position, self._texts[position])
                self._texts[position] = self._format(record.cells).encode("utf-8")
        header = self._format(self.header.cells) if self.header.changed else self.header.text
        head = ((BOM if self.bom else "") + header).encode("utf-8")
        last = self.row(len(self.records) - 1) if self.records else self.header
        cut = len(self.newline) if last is self._unterminated and not last.changed else 0
        if not self.records:  # cut: the file's last row still has no line end
            return head[: -cut or None], b""
        if not cut:
            return head, b"".join(self._texts)
        end = self._texts[-1]
        self._texts[-1] = end[:-cut]
        try:
            return head, b"".join(self._texts)
        finally:
            self._texts[-1] = end

    def _restore(self) -> None:
        for position, data in self._saved.items():
            self._texts[position] = data
        self._saved = {}

    def text(self) -> str:
        try:
            return b"".join(self.parts()).decode("utf-8")
        finally:
            self._restore()

    def write(self) -> None:
        """Replace the file atomically, unless it changed since it was read (its inode, size or
        modification time differ from when it was read or last written here)."""
        self.stage()()

    def stage(self) -> Callable[[], None]:
        """Write the new file beside the old one (synced to disk); the function returned puts
        it in place. Refused when the file changed since it was read."""
        try:
            now = identity(os.stat(self.path))
        except FileNotFoundError:
            now = None
        if now != self.identity:
            raise DigestError(
                f"{self.path} changed since it was read (edited by someone else?); "
                f"nothing was written: run the command again"
            )
        mode = self.path.stat().st_mode & 0o777
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:  # (parts() patches _texts: restored on error)
                for part in self.parts():
                    handle.write(part)
                handle.flush()
                os.fsync(handle.fileno())
                os.chmod(temp, mode)
                written = identity(os.fstat(handle.fileno()))
        except BaseException:
            self._restore()
            Path(temp).unlink(missing_ok=True)
            raise

        def publish() -> None:
            try:
                os.replace(temp, self.path)
            except BaseException:
                self._restore()
                Path(temp).unlink(missing_ok=True)
                raise
            self._saved = {}
            for position, record in self._overlay.items():  # readers see the new rows now
                self.records[position] = record
            self._overlay = {}
            self.identity = written
            self._settle()

        return publish

    def _settle(self) -> None:
        """After writing: the rewritten rows' text is what the file now holds, and line
        numbers follow any row that was removed or changed its number of lines."""
        for record in [self.header, *self._touched]:
            if record.changed:
                text = self._format(record.cells)
                if record.text and _line_count(text) != _line_count(record.text):
                    self._renumber = True
                record.text, record.changed = text, False
        self._touched, self._own = [], set()
        if self._renumber:
            line = 1 + _line_count(self.header.text)
            for record in self.records:
                record.line = line
                line += _line_count(record.text)
            self._renumber = False
