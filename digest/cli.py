"""The command line: a thin skin over the library. Each command parses its arguments, calls one
library function and turns DigestError into `Error: ...` on standard error with exit status 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import __version__
from digest.config import Settings
from digest.errors import DigestError
from digest.pipeline import Outcome, RunReport, enable_address, run_send

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, prog_name="digest")
@click.option("-v", "--verbose", is_flag=True, help="Log each step to standard error.")
def main(verbose: bool) -> None:
    """Email each subscriber the new arXiv papers that match their keywords.

    Settings come from DIGEST_* environment variables; see the README.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


db_option = click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="The database [DIGEST_DB]."
)
subscribers_option = click.option(
    "--subscribers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The subscribers file [DIGEST_SUBSCRIBERS].",
)


@main.command()
@click.option("--dry-run", is_flag=True, help="Build every email but send and record nothing.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("previews"),
    show_default=True,
    help="With --dry-run: where to write each subscriber's .html, .txt and .eml.",
)
@db_option
@subscribers_option
@user_errors
def send(dry_run: bool, out: Path, db: Path | None, subscribers: Path | None) -> None:
    """Fetch new papers, email every subscriber their digest, record what was delivered."""
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    report = run_send(settings, dry_run=dry_run, out_dir=out, progress=_print_outcome)
    _print_report(report, out)
    if not report.ok:
        sys.exit(1)


def _print_outcome(outcome: Outcome) -> None:
    if outcome.status == "nothing-new":
        click.echo(f"{outcome.email}: nothing new")
    elif outcome.status == "suspended":
        click.echo(f"{outcome.email}: {outcome.detail}")
    elif outcome.status in ("failed", "deferred", "pending"):
        click.echo(f"{outcome.email}: NOT sent: {outcome.detail}")
    else:
        what = "sent" if outcome.status == "sent" else "preview written"
        if outcome.resumed:
            what += " (left pending by an earlier run, same Message-ID)"
        size = f"{outcome.size / 1024:.0f} KB"
        click.echo(f"{outcome.email}: {outcome.papers} papers, {size}, {what}")


def _print_report(report: RunReport, out: Path) -> None:
    fetched = f"{report.papers_fetched} papers fetched in {report.arxiv_requests} arXiv requests"
    if report.dry_run:
        previews = sum(1 for o in report.outcomes if o.status == "previewed")
        click.echo(f"Dry run: {fetched}; {previews} previews in {out}/; nothing sent or recorded.")
    else:
        click.echo(f"{fetched}; {report.sent} emails sent, {len(report.failed)} failed.")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}", err=True)
    for problem in report.problems:
        click.echo(f"Error: {problem}", err=True)
    for outcome in report.failed:
        click.echo(f"Error: {outcome.email}: {outcome.detail}", err=True)


@main.group()
def subscribers() -> None:
    """Manage the subscribers."""


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
