"""The command line: a thin skin over the library. Each command parses its arguments, calls one
library function and turns DigestError into `Error: ...` on standard error with exit status 1.

A module only one command (or the daemon) needs is imported inside that command: `digest send`
runs every day and imports only what a send uses (tests/test_send.py checks it)."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

import click

from digest import __version__
from digest import progress as progress_display
from digest.archive import DEFAULT_MAX, FORMATS, run_archive
from digest.cli_options import db_option, subscribers_option, user_errors
from digest.cli_subscribers import subscribers
from digest.config import Settings
from digest.errors import DigestError
from digest.pipeline import run_send
from digest.report import RunReport


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
        from digest.testsend import send_test  # a test send only

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
    from digest import scheduler  # the daemon only (with the bounce reader it runs)

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
    from digest import status as status_report  # this command only

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
    from digest import bounces  # imapclient and flufl.bounce: this command and the daemon only

    settings = Settings.from_env(db_path=db)
    run = bounces.read_bounces(settings)
    click.echo(bounces.summary(run))
    for level, text in bounces.lines(run):
        click.echo(f"Warning: {text}" if level == "warning" else text, err=level == "warning")


main.add_command(subscribers)
