"""subscribers.csv in: every valid row becomes a Subscriber, every bad row a Problem with its line.

A bad row never stops the others: `load` returns both lists and the caller decides.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from digest.errors import DigestError
from digest.match import author_terms, keyword_terms
from digest.models import Subscriber, split_version

REQUIRED_COLUMNS = ("email", "keywords")
OPTIONAL_COLUMNS = ("name", "categories", "exclude", "authors", "frequency", "likes")
KEYWORD_SEPARATOR = ";"
# The optional `trending` column: an empty cell keeps the default (the section is shown).
TRENDING_VALUES = {"yes": True, "on": True, "true": True, "1": True}
TRENDING_VALUES |= {"no": False, "off": False, "false": False, "0": False}
# An arXiv category (`cs.CL`, `math.AG`, `hep-th`) or a whole archive (`cs.*`): nothing else, so
# a category can never become query syntax.
CATEGORY = re.compile(r"^[a-z-]+(\.[A-Za-z-]+|\.\*)?$")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKDAYS = tuple(day[:3] for day in DAY_NAMES)
# An arXiv id, new style (`2401.12345`, `2401.12345v2`) or old (`hep-th/9901001v1`).
ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")
FREQUENCY_HELP = "use 'daily' or 'weekly:DAY' with DAY one of mon, tue, wed, thu, fri, sat, sun"


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def load(path: Path) -> tuple[list[Subscriber], list[Problem]]:
    """Read the subscribers file. Raises DigestError only when the file as a whole is unusable."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DigestError(
            f"{path}: no such file. Create it with a header row 'email,name,keywords' "
            f"or point DIGEST_SUBSCRIBERS at yours."
        ) from None
    with handle:
        try:
            return _parse(path, handle)
        except UnicodeDecodeError as exc:
            raise DigestError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
        except csv.Error as exc:
            raise DigestError(f"{path}: not a readable CSV file ({exc})") from None


def _parse(path: Path, handle: object) -> tuple[list[Subscriber], list[Problem]]:
    reader = csv.reader(handle)  # type: ignore[arg-type]
    header = next(reader, None)
    if header is None:
        raise DigestError(f"{path}: the file is empty; it needs a header row 'email,keywords'")
    columns = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DigestError(
            f"{path}:1: the header has no {' or '.join(repr(m) for m in missing)} column; "
            f"the first row must name the columns, e.g. 'email,name,keywords'"
        )

    subscribers: list[Subscriber] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    line = reader.line_num + 1
    for row in reader:
        row_line, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        values = dict(zip(columns, row, strict=False))
        subscriber, problem = _subscriber(values, row_line)
        if problem:
            problems.append(Problem(path, row_line, problem))
            continue
        assert subscriber is not None
        if subscriber.key in first_line:
            problems.append(
                Problem(
                    path,
                    row_line,
                    f"{subscriber.email} is already listed on line {first_line[subscriber.key]}; "
                    f"keep one row per address",
                )
            )
            continue
        first_line[subscriber.key] = row_line
        subscribers.append(subscriber)
    return subscribers, problems


def check_row(values: dict[str, str], line: int = 0) -> str | None:
    """What is wrong with one row (its cells by column name), or None when it is valid."""
    return _subscriber(values, line)[1]


def parse_row(values: dict[str, str], line: int = 0) -> tuple[Subscriber | None, str | None]:
    """One row (its cells by column name) as `load` reads it: (subscriber, None) when it is
    valid, (None, what is wrong) when not."""
    return _subscriber(values, line)


def _subscriber(values: dict[str, str], line: int) -> tuple[Subscriber | None, str | None]:
    raw_email = (values.get("email") or "").strip()
    if not raw_email:
        return None, "the email column is empty"
    try:
        email = validate_email(raw_email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return None, f"{raw_email!r} is not an email address: {exc}"
    keywords = parse_keywords(values.get("keywords") or "")
    if not keywords:
        return None, f"{email} has no keyword; list phrases separated by ';' in 'keywords'"
    unusable = [k for k in keywords if not keyword_terms(k)]
    if unusable:
        return None, (
            f"keyword {unusable[0]!r} of {email} has no letters or digits to search for; "
            f"use words, e.g. 'graph neural network'"
        )
    name = (values.get("name") or "").strip()
    categories = parse_keywords(values.get("categories") or "")
    bad = [c for c in categories if not CATEGORY.match(c)]
    if bad:
        return None, (
            f"category {bad[0]!r} of {email} is not an arXiv category; "
            f"write e.g. 'cs.CL; cs.LG' or 'cs.*'"
        )
    exclude = parse_keywords(values.get("exclude") or "")
    unusable = [k for k in exclude if not keyword_terms(k)]
    if unusable:
        return None, (
            f"exclude phrase {unusable[0]!r} of {email} has no letters or digits; "
            f"use words, e.g. 'survey'"
        )
    authors = parse_keywords(values.get("authors") or "")
    unusable = [a for a in authors if not author_terms(a)]
    if unusable:
        return None, (
            f"author {unusable[0]!r} of {email} has no letters; write the name as arXiv shows "
            f"it, e.g. 'Li Wei'"
        )
    trending_cell = (values.get("trending") or "").strip().lower()
    if trending_cell and trending_cell not in TRENDING_VALUES:
        return None, (
            f"trending={values.get('trending')!r} for {email} is not valid; "
            f"use yes or no (or leave it empty)"
        )
    trending = TRENDING_VALUES.get(trending_cell, True)
    try:
        weekday = parse_frequency(values.get("frequency") or "")
    except ValueError as exc:
        return None, f"frequency of {email}: {exc}"
    likes, bad_like = parse_likes(values.get("likes") or "")
    if bad_like is not None:
        return None, (
            f"like {bad_like!r} of {email} is not an arXiv id; write ids such as "
            f"'2506.13741' or '2506.13741v2', separated by ';'"
        )
    return (
        Subscriber(
            email=email,
            keywords=keywords,
            name=name,
            line=line,
            categories=categories,
            exclude=exclude,
            authors=authors,
            weekday=weekday,
            trending=trending,
            likes=likes,
        ),
        None,
    )


def parse_likes(cell: str) -> tuple[tuple[str, ...], str | None]:
    """A likes cell -> (ids without version, in order, each once; the first bad id or None).
    Ids may be written with or without version, or as an arxiv.org/abs/ link."""
    ids: dict[str, None] = {}
    for item in parse_keywords(cell):
        raw = re.sub(r"^(?:https?://)?(?:www\.)?arxiv\.org/(?:abs|pdf)/", "", item.strip())
        raw = raw.removeprefix("arXiv:").removeprefix("arxiv:")
        if not ARXIV_ID.match(raw):
            return (), item
        ids[split_version(raw)[0]] = None
    return tuple(ids), None


def parse_frequency(cell: str) -> int | None:
    """'' or 'daily' -> None; 'weekly:mon' -> 0 .. 'weekly:sun' -> 6. ValueError otherwise."""
    text = "".join(cell.split()).lower()
    if text in ("", "daily"):
        return None
    kind, _, day = text.partition(":")
    if kind == "weekly":
        for index, name in enumerate(DAY_NAMES):
            if day in (name, name[:3]):
                return index
        if not day:
            raise ValueError(f"'weekly' needs a weekday, e.g. 'weekly:mon'; {FREQUENCY_HELP}")
    raise ValueError(f"{cell.strip()!r} is not a frequency; {FREQUENCY_HELP}")


def format_frequency(weekday: int | None) -> str:
    return "daily" if weekday is None else f"weekly:{WEEKDAYS[weekday]}"


def parse_keywords(cell: str) -> tuple[str, ...]:
    """Split a keywords cell; drop empty and repeated (case-insensitive) phrases, keep order."""
    seen: set[str] = set()
    keywords: list[str] = []
    for part in cell.split(KEYWORD_SEPARATOR):
        keyword = " ".join(part.split())
        if keyword and keyword.casefold() not in seen:
            seen.add(keyword.casefold())
            keywords.append(keyword)
    return tuple(keywords)
