"""Problems with the files digest keeps (the database and its folder, the subscribers file),
told as what to change: the path, the user id the process runs as, and the fix.

In a container these are the volume's problems: a folder owned by another user, a volume
mounted read-only, a platform that runs the image under an arbitrary user id (group 0)."""

from __future__ import annotations

import errno
import os
import sqlite3
import uuid
from pathlib import Path

from digest.errors import DigestError


def whoami() -> str:
    return f"user id {os.geteuid()} (group {os.getegid()})"


def _folder(path: Path) -> Path:
    return path.absolute().parent


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (tried for real: a file made and removed), or
    None when they can."""
    if _read_only_fs(folder):
        return (
            f"the folder {folder} is on a read-only file system: mount it read-write "
            f"(in a container: no ':ro' on the volume, and --read-only needs the volume anyway)"
        )
    probe = folder / f".digest-write-test-{uuid.uuid4().hex}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except PermissionError:
        return (
            f"the folder {folder} is not writable for {whoami()}: give that user write access "
            f"(e.g. chown {os.geteuid()} {folder}, or chgrp {os.getegid()} {folder} && "
            f"chmod g+rwX {folder})"
        )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return f"the folder {folder} has no space left: free some space on its disk"
        return f"cannot create files in the folder {folder}: {exc.strerror}"
    return None


def file_problem(path: Path, *, write: bool) -> str | None:
    """Why the existing file `path` cannot be read (or written, with `write`), or None."""
    if not path.exists():
        return None
    mode = os.R_OK | (os.W_OK if write else 0)
    if os.access(path, mode, effective_ids=os.access in os.supports_effective_ids):
        return None
    need = "readable and writable" if write else "readable"
    return (
        f"{path} is not {need} for {whoami()}: chown {os.geteuid()} {path} "
        f"(or chmod {'u+rw' if write else 'a+r'} it if that user owns it)"
    )


def database_problem(path: Path) -> str | None:
    """Why the database at `path` cannot be opened for writing (its folder, the file and its
    -wal/-shm companions), or None when nothing is visibly wrong."""
    folder = _folder(path)
    if not folder.is_dir():
        return None  # store.open_db says so
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if problem := file_problem(part, write=True):
            if _read_only_fs(folder):
                return folder_problem(folder)
            return problem
    return folder_problem(folder)


def check_database_file(path: Path) -> None:
    """Raise the user's error when the database file exists but this user may not write it
    (SQLite would open it read-only, and the first write would fail mid-run)."""
    if problem := file_problem(path, write=True):
        if _read_only_fs(_folder(path)):
            problem = folder_problem(_folder(path)) or problem
        raise DigestError(f"{path}: cannot use the database: {problem}")


def database_error(path: Path, exc: sqlite3.Error) -> DigestError | None:
    """The user's error for SQLite failing to open or write `path` because of the file system
    (permissions, a read-only mount, a full disk), or None when that is not the cause."""
    problem = database_problem(path)
    if problem is None:
        return None
    return DigestError(f"{path}: cannot use the database ({exc}): {problem}")


def os_error(exc: OSError) -> DigestError | None:
    """The user's error for a file of ours that cannot be opened (permission denied, a folder
    where a file should be, a read-only file system), or None for other errors."""
    if exc.filename is None:
        return None
    path = Path(os.fsdecode(exc.filename))
    if isinstance(exc, PermissionError):
        if path.exists():
            problem = file_problem(path, write=False) or folder_problem(_folder(path))
            if problem is None:  # readable, so it was a write that failed
                problem = f"{path} is not writable for {whoami()}: chown {os.geteuid()} {path}"
        else:
            problem = folder_problem(_folder(path)) or f"permission denied for {whoami()}"
        return DigestError(f"{path}: {exc.strerror}: {problem}")
    if isinstance(exc, IsADirectoryError):
        return DigestError(f"{path}: is a folder, not a file: point the setting at the file")
    if exc.errno in (errno.EROFS, errno.ENOSPC):
        return DigestError(f"{path}: {exc.strerror}: {folder_problem(_folder(path))}")
    return None
