"""`digest subscribers ...`: editing and checking subscribers.csv from the command line, each
command a thin skin over digest/roster.py."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from digest import roster, store
from digest.cli_options import F, db_option, subscribers_option, user_errors
from digest.config import Settings
from digest.pipeline import enable_address
from digest.subscribers import Problem


@click.group()
def subscribers() -> None:
    """List, add, remove and edit subscribers in subscribers.csv; check the file; enable.

    Edits rewrite only the row they change (other rows, columns, order, quoting and a BOM stay
    as they were), atomically, and refuse to write over a file changed since it was read.
    """


@subscribers.command()
@click.argument("email")
@db_option
@user_errors
def enable(email: str, db: Path | None) -> None:
    """Send to EMAIL again after it was suspended for repeated permanent failures."""
    lifted = enable_address(Settings.from_env(db_path=db), email)
    if lifted is None:
        click.echo(f"{email} is not suspended; nothing changed.")
    else:
        click.echo(f"{email} is enabled again (suspended since {lifted.since}: {lifted.reason}).")


def _file(path: Path | None) -> Path:
    return Settings.from_env(subscribers_path=path).subscribers_path


filter_options = [
    click.option("--categories", help="Only papers in these arXiv categories, e.g. 'cs.CL; cs.*'."),
    click.option("--exclude", help="Phrases that drop a keyword match, e.g. 'survey'."),
    click.option("--authors", help="Papers by these authors, whatever the keywords: 'Li Wei'."),
    click.option("--frequency", help="'daily' (default) or 'weekly:DAY', e.g. 'weekly:mon'."),
]


def with_filters(func: F) -> F:
    for option in reversed(filter_options):
        func = option(func)
    return func


@subscribers.command("list")
@db_option
@subscribers_option
@user_errors
def subscribers_list(db: Path | None, subscribers: Path | None) -> None:
    """A table of every valid subscriber: email, name, keywords, status."""
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    rows, problems = roster.listing(settings.subscribers_path, store.open_db(settings.db_path))
    table = [("EMAIL", "NAME", "KEYWORDS", "STATUS")]
    table += [(r.email, r.name, r.keywords, r.status) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        click.echo("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]]))
    _problems(problems)


@subscribers.command("add")
@click.argument("email")
@click.option("--keyword", "-k", "keywords", multiple=True, required=True, help="Repeatable.")
@click.option("--name", default="", help="How to greet them.")
@with_filters
@subscribers_option
@user_errors
def subscribers_add(
    email: str, keywords: tuple[str, ...], name: str, subscribers: Path | None, **filters: str
) -> None:
    """Add a subscriber (at the end of the file)."""
    address = roster.add(_file(subscribers), email, keywords, name=name, options=filters)
    click.echo(f"Added {address}.")


@subscribers.command("set")
@click.argument("email")
@click.option("--name", help="How to greet them.")
@with_filters
@subscribers_option
@user_errors
def subscribers_set(email: str, subscribers: Path | None, **options: str | None) -> None:
    """Change a subscriber's name, categories, exclude phrases, authors or frequency.

    An empty value ('') clears it.
    """
    values = roster.update(_file(subscribers), email, options)
    click.echo(", ".join(f"{k}={v}" for k, v in values.items() if v))


@subscribers.command("remove")
@click.argument("email")
@subscribers_option
@user_errors
def subscribers_remove(email: str, subscribers: Path | None) -> None:
    """Remove a subscriber's row from the file."""
    click.echo(f"Removed {roster.remove(_file(subscribers), email)}.")


@subscribers.group("keywords")
def subscribers_keywords() -> None:
    """Add, remove or replace a subscriber's keywords."""


def _keywords_command(action: str, help_text: str) -> None:
    @subscribers_keywords.command(action, help=help_text)
    @click.argument("email")
    @click.argument("keywords", nargs=-1, required=True)
    @subscribers_option
    @user_errors
    def command(email: str, keywords: tuple[str, ...], subscribers: Path | None) -> None:
        new = roster.change_keywords(_file(subscribers), email, action, keywords)
        click.echo(f"{email.strip()}: {'; '.join(new)}")


_keywords_command("add", "Add keywords (after the existing ones).")
_keywords_command("remove", "Remove keywords (at least one must remain).")
_keywords_command("set", "Replace all keywords, in the order given.")


def _likes_command(action: str, help_text: str) -> None:
    @subscribers.command(action, help=help_text)
    @click.argument("email")
    @click.argument("ids", nargs=-1, required=True)
    @db_option
    @subscribers_option
    @user_errors
    def command(
        email: str, ids: tuple[str, ...], db: Path | None, subscribers: Path | None
    ) -> None:
        from digest import feedback_store

        settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
        likes = feedback_store.edit_likes(
            settings.subscribers_path, store.open_db(settings.db_path), email, action, ids
        )
        click.echo(f"{email.strip()} likes: {'; '.join(likes) if likes else 'nothing'}")


_likes_command("like", "Add arXiv ids (with or without version) to a subscriber's likes.")
_likes_command("unlike", "Remove arXiv ids from a subscriber's likes.")


@subscribers.command("check")
@subscribers_option
@user_errors
def subscribers_check(subscribers: Path | None) -> None:
    """Validate the file: one line per problem, exit status 1 if there is any."""
    path = _file(subscribers)
    problems = roster.check(path)
    _problems(problems)
    if not problems:
        click.echo(f"{path}: no problems.")


@subscribers.command("resubscribe")
@click.argument("email")
@db_option
@subscribers_option
@user_errors
def subscribers_resubscribe(email: str, db: Path | None, subscribers: Path | None) -> None:
    """Lift an unsubscribe, on purpose (pasting the row back into the file does not)."""
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    message = roster.resubscribe(settings.subscribers_path, store.open_db(settings.db_path), email)
    click.echo(message)


def _problems(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(f"Error: {problem}", err=True)
    if problems:
        sys.exit(1)
