"""`digest serve` as a real subprocess on 127.0.0.1, and plain HTTP to it (urllib)."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlencode

from helpers import Digest
from standins import free_port


class Served:
    """`digest [-v] serve` running in `digest.home`; `url` is where it listens."""

    def __init__(self, digest: Digest, port: int | None = None, verbose: bool = False) -> None:
        self.digest = digest
        self.port = port or free_port()
        args = ["-v"] if verbose else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", *args, "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=digest.env(), cwd=digest.home,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it listens (or dies)
        self.stderr = ""
        if not line.startswith("Serving on "):
            self.stop()
            raise AssertionError(f"digest serve did not start: {line!r} {self.stderr}")
        self.url = line.split()[-1]

    def stop(self) -> int:
        """SIGTERM, as a container runtime sends; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        _, self.stderr = self.process.communicate(timeout=30)
        return self.process.returncode


def http(
    url: str,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of a GET, or of a form POST when `data` is given."""
    body = urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers=dict(headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)
