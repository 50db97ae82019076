"""The command line: a thin skin over the library. Each command parses its arguments, calls one
library function and turns DigestError into `Error: ...` on standard error with exit status 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import __version__, bounces, roster, scheduler, store, volume
from digest import progress as progress_display
from digest import status as status_report
from digest.archive import DEFAULT_MAX, FORMATS, run_archive
from digest.config import Settings
from digest.errors import DigestError
from digest.pipeline import enable_address, run_send
from digest.report import RunReport
from digest.subscribers import Problem
from digest.testsend import send_test

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a file of ours we may not read or write (e.g. on a volume)
            if error := volume.os_error(exc):
                raise click.ClickException(str(error)) from None
            raise

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
@click.option(
    "--subscriber",
    "test_for",
    metavar="EMAIL",
    help="A test send: build only this subscriber's digest of what they are owed now...",
)
@click.option(
    "--to",
    "test_to",
    metavar="ADDRESS",
    help="...and send it to ADDRESS, Subject marked [test]; nothing is recorded.",
)
@db_option
@subscribers_option
@user_errors
def send(
    dry_run: bool,
    out: Path,
    test_for: str | None,
    test_to: str | None,
    db: Path | None,
    subscribers: Path | None,
) -> None:
    """Fetch new papers, email every subscriber their digest, record what was delivered."""
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    if test_for is not None or test_to is not None:
        if test_for is None or test_to is None or dry_run:
            raise click.UsageError("a test send takes both --subscriber and --to, no --dry-run")
        sent = send_test(settings, test_for, test_to)
        what = f"test email for {sent.subscriber} ({sent.papers} papers, {sent.size // 1024} KB)"
        if not sent.accepted:
            raise DigestError(f"{what} to {sent.to}: {sent.detail}")
        click.echo(f"{what} sent to {sent.to}; nothing recorded")
        return
    shown = progress_display.for_terminal(sys.stdout.isatty())
    try:
        report = run_send(
            settings, dry_run=dry_run, out_dir=out, progress=shown.advance, on_start=shown.start
        )
    finally:
        shown.close()
    _print_report(report, out)
    if not report.ok:
        sys.exit(1)


@main.command()
@db_option
@subscribers_option
@user_errors
def run(db: Path | None, subscribers: Path | None) -> None:
    """The daemon: one `send` a day at DIGEST_SEND_AT in DIGEST_TIMEZONE, until SIGTERM/SIGINT.

    Started after today's send time with today's run not done, it runs at once. A failed run is
    retried later that day with backoff. Logs one line per event to standard error.
    """
    logging.getLogger("digest").setLevel(logging.INFO)
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    sys.exit(scheduler.run_daemon(settings))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON for scripts.")
@click.option(
    "--check",
    is_flag=True,
    help="Print nothing but problems; exit 1 when the daemon is not running or missed a run, "
    "or the subscribers file or the database is unusable.",
)
@click.option("--runs", default=5, show_default=True, help="How many recent runs to show.")
@click.option(
    "--grace",
    default=60,
    show_default=True,
    help="With --check: minutes after the send time before a missing run counts as missed.",
)
@db_option
@subscribers_option
@user_errors
def status(
    as_json: bool, check: bool, runs: int, grace: int, db: Path | None, subscribers: Path | None
) -> None:
    """The last runs, failed emails, what is owed, the daemon and when the next run is due.

    --check (a container's HEALTHCHECK) also fails when the subscribers file is missing or
    lists no valid subscriber, or the database cannot be written.
    """
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    found = status_report.gather(settings, runs=runs, grace=timedelta(minutes=grace))
    if as_json:
        click.echo(found.to_json())
    elif not check:
        click.echo(status_report.render_text(found, settings))
    if check:
        for problem in found.problems:
            click.echo(f"Error: {problem}", err=True)
        if not found.healthy:
            sys.exit(1)


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


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the page; '-' for standard output.  [default: archive.md or archive.html]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="md",
    show_default=True,
    help="md: GitHub Markdown (publishable as a README); html: a standalone page.",
)
@click.option(
    "--max-per-keyword",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX,
    show_default=True,
    help="Newest papers kept per keyword.",
)
@click.option(
    "--keyword",
    "keywords",
    multiple=True,
    help="A keyword to list (repeatable).  [default: every keyword any subscriber follows]",
)
@db_option
@subscribers_option
@user_errors
def archive(
    out: Path | None,
    fmt: str,
    max_per_keyword: int,
    keywords: tuple[str, ...],
    db: Path | None,
    subscribers: Path | None,
) -> None:
    """Write the per-keyword page of the newest papers in the database (no fetching)."""
    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    page = run_archive(settings, out=out, fmt=fmt, keywords=keywords, limit=max_per_keyword)
    if page.path is None:
        click.echo(page.text, nl=False)
    else:
        counts = f"{page.paper_count} papers for {len(page.tables)} keywords"
        click.echo(f"Wrote {page.path}: {counts}.")
    for problem in page.problems:
        click.echo(f"Error: {problem}", err=True)
    if page.problems:
        sys.exit(1)


# digest subscribers ---------------------------------------------------------------------------


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


# digest serve ---------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="0: any free port.")
@db_option
@subscribers_option
@user_errors
def serve(host: str, port: int, db: Path | None, subscribers: Path | None) -> None:
    """The web app behind the unsubscribe links in emails (DIGEST_PUBLIC_URL points at it)."""
    from digest import web

    settings = Settings.from_env(db_path=db, subscribers_path=subscribers)
    web.serve(settings, host, port, ready=lambda url: click.echo(f"Serving on {url}", err=False))


# digest bounces -------------------------------------------------------------------------------


@main.command("bounces")
@db_option
@user_errors
def bounces_command(db: Path | None) -> None:
    """Read DIGEST_BOUNCE_MAILBOX (an imaps:// or imap:// URL, or a Maildir): suspend the
    addresses that hard-bounce or complain, count soft bounces, mark each message processed.
    A report that names no email of ours suspends no one. The daemon runs this before each send.
    """
    settings = Settings.from_env(db_path=db)
    run = bounces.read_bounces(settings)
    click.echo(bounces.summary(run))
    for level, text in bounces.lines(run):
        click.echo(f"Warning: {text}" if level == "warning" else text, err=level == "warning")
