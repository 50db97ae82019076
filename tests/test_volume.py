"""The files on digest's volume (the database's folder, the database, subscribers.csv) when the
user digest runs as may not use them: one `Error:` line naming the path, the user id and the
fix, never a traceback; the health check says so too.

Permissions do not stop root, so as root the commands run as an unprivileged user (setpriv,
util-linux), as in the container (uid 10001); as any other user they run as that user."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Digest

NOBODY = 65534


def as_user() -> tuple[list[str], int, int]:
    """(command prefix, uid, gid) to run a command as an unprivileged user."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"], NOBODY, NOBODY


@pytest.fixture
def home(digest: Digest) -> Iterator[Path]:
    """A folder the unprivileged user can reach (pytest's tmp_path is private to its owner)
    holding the subscribers file and a `data` folder owned by that user."""
    _, uid, gid = as_user()
    folder = Path(tempfile.mkdtemp(prefix="digest-volume-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    os.chown(data, uid, gid)
    shutil.copy(digest.csv_path, data / "subscribers.csv")
    os.chown(data / "subscribers.csv", uid, gid)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder)


def run(
    digest: Digest, home: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    prefix, _, _ = as_user()
    env = {
        **digest.env(),
        "DIGEST_DB": str(home / "data" / "digest.db"),
        "DIGEST_SUBSCRIBERS": str(home / "data" / "subscribers.csv"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [*prefix, sys.executable, "-m", "digest", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_database_folder_the_user_cannot_write_is_one_error_line(
    digest: Digest, home: Path
) -> None:
    _, uid, gid = as_user()
    data = home / "data"
    data.chmod(0o555)  # e.g. a volume owned by another user, as `docker run --user N` finds it

    for command in (["run"], ["send"]):
        result = run(digest, home, *command)
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert result.stderr == (
            f"Error: {data}/digest.db: cannot use the database (unable to open database file): "
            f"the folder {data} is not writable for user id {uid} (group {gid}): give that "
            f"user write access (e.g. chown {uid} {data}, or chgrp {gid} {data} && "
            f"chmod g+rwX {data})\n"
        )
    assert sorted(p.name for p in data.iterdir()) == ["subscribers.csv"]
    assert digest.smtp.messages == []

    data.chmod(0o755)  # the fix the message gives (the folder is that user's): it works
    assert run(digest, home, "send").returncode == 0
    assert len(digest.smtp.messages) == 2


def test_a_database_file_of_another_user_is_one_error_line(digest: Digest, home: Path) -> None:
    _, uid, gid = as_user()
    db = home / "data" / "digest.db"
    assert run(digest, home, "send").returncode == 0
    for path in db.parent.glob("digest.db*"):  # e.g. restored from a backup by root
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
            path.chmod(0o644)
        else:  # not root: our own file, made read-only
            path.chmod(0o444)

    result = run(digest, home, "send")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: {db}: cannot use the database: {db} is not readable and writable for "
        f"user id {uid} (group {gid}): chown {uid} {db} (or chmod u+rw it if that user owns it)\n"
    )
    assert len(digest.smtp.messages) == 2  # nothing more sent


def test_an_unreadable_subscribers_file_is_one_error_line(digest: Digest, home: Path) -> None:
    _, uid, gid = as_user()
    csv = home / "data" / "subscribers.csv"
    csv.chmod(0)

    result = run(digest, home, "send")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: {csv}: Permission denied: {csv} is not readable for user id {uid} "
        f"(group {gid}): chown {uid} {csv} (or chmod a+r it if that user owns it)\n"
    )
    assert digest.smtp.messages == []


def test_the_health_check_fails_when_the_database_folder_becomes_read_only(
    digest: Digest, home: Path
) -> None:
    """The daemon (as the unprivileged user) runs and sends; then its folder is made read-only
    under it: `digest status --check` says so, with the fix; writable again, healthy again."""
    _, uid, gid = as_user()
    data = home / "data"
    prefix, _, _ = as_user()
    env = {
        **digest.env(),
        "DIGEST_DB": str(data / "digest.db"),
        "DIGEST_SUBSCRIBERS": str(data / "subscribers.csv"),
        "DIGEST_SEND_AT": "00:00",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    daemon = subprocess.Popen(
        [*prefix, sys.executable, "-m", "digest", "run"],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    hang = threading.Timer(60, daemon.kill)  # a daemon that never logs its run: fail, not hang
    hang.start()
    try:
        assert daemon.stderr is not None
        log = []
        for line in daemon.stderr:
            log.append(line)
            if " emails sent" in line:
                break
        assert any("2 emails sent, 0 failed" in line for line in log), "".join(log)
        healthy = run(digest, home, "status", "--check")
        assert (healthy.returncode, healthy.stderr) == (0, "")

        data.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        sick = run(digest, home, "status", "--check")
        assert (sick.returncode, sick.stdout) == (1, "")
        assert sick.stderr == (
            f"Error: {data}/digest.db: the database cannot be written: the folder {data} is "
            f"not writable for user id {uid} (group {gid}): give that user write access (e.g. "
            f"chown {uid} {data}, or chgrp {gid} {data} && chmod g+rwX {data})\n"
        )

        data.chmod(0o755)
        again = run(digest, home, "status", "--check")
        assert (again.returncode, again.stderr) == (0, "")
    finally:
        hang.cancel()
        daemon.terminate()
        assert daemon.wait(timeout=60) == 0
