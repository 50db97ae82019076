"""What every command of the command line shares: `Error: ...` for user-facing errors, and
the options naming the database and the subscribers file."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import volume
from digest.errors import DigestError

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


db_option = click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="The database [DIGEST_DB]."
)
subscribers_option = click.option(
    "--subscribers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The subscribers file [DIGEST_SUBSCRIBERS].",
)
