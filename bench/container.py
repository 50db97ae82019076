"""The container check: build the image with podman and run it for real against loopback
stand-ins (the tests' aiosmtpd and arXiv servers), as `docker run` / `podman run` users do.

    .venv/bin/python bench/container.py            # prints one line per check, then a summary

Scenarios: the build (cache reuse after a README or stray __pycache__ change, no pip at run
time, uid 10001 in group 0, HEALTHCHECK kept); SIGTERM (`podman stop`, 10 s grace) while the
mail server hangs in DATA: exit 0 in time, the email pending, the restart sends it with the same
Message-ID, nobody twice; an idle stop; the health check healthy, then unhealthy with a reason
when subscribers.csv goes; volume problems (a bind mount the user may not write, a read-only
volume) as one Error: line, and what must work (--user N:0 on a fresh volume, --read-only);
`digest serve` beside the daemon on the same volume with compose.yaml's command and health
check. compose.yaml itself is not run by a compose engine here: Debian bookworm's
podman-compose 1.0.3 always adds a network of its own (so no host network to reach the
loopback stand-ins) and there is no docker compose; tests/test_dockerfile.py checks the file.

Not part of the pytest suite (slow, needs podman and root). Without podman it says so and exits
2. The base image cannot be pulled here (no registry but the package registries): when
python:3.11-slim is missing, a stand-in is made with mmdebstrap (Debian bookworm's python3 and
python3-venv, which is Python 3.11, plus this machine's CA certificates so pip can reach PyPI).
podman needs runc and raised ulimits here (a containers.conf of our own, CONTAINERS_CONF).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import ADA, ADA_ROW, GRACE, GRACE_ROW, SENDER, messages_to  # noqa: E402
from standins import ArxivStandin, SmtpStandin, free_port, load_papers, recent  # noqa: E402

BASE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/digest-check:latest"
CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""
GRACE_S = 10  # podman stop's default, as docker's


class Check:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def summary(self) -> int:
        failed = [name for name, ok, _ in self.results if not ok]
        print(f"\n{len(self.results) - len(failed)} of {len(self.results)} checks passed")
        for name in failed:
            print(f"  failed: {name}")
        return 1 if failed else 0


def sh(
    *args: str, timeout: float = 600, check: bool = False, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, input=input
    )
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def podman(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return sh("podman", *args, **kwargs)


def container_stderr(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The container's standard error lines, without podman's own (`time="..." level=...`,
    e.g. that it cannot start health check timers without systemd)."""
    return [line for line in result.stderr.splitlines() if not line.startswith('time="')]


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# Setup -----------------------------------------------------------------------------------------


def configure(work: Path) -> None:
    conf = work / "containers.conf"
    conf.write_text(CONF, encoding="utf-8")
    os.environ["CONTAINERS_CONF"] = str(conf)


def base_image(work: Path) -> str:
    if podman("image", "exists", BASE).returncode == 0:
        return f"{BASE} (present)"
    if podman("pull", "-q", BASE, timeout=120).returncode == 0:
        return f"{BASE} (pulled)"
    if not shutil.which("mmdebstrap"):
        raise SystemExit(
            f"{BASE} cannot be pulled and mmdebstrap is not installed to make a stand-in: "
            f"apt-get install -y mmdebstrap"
        )
    tarball = work / "base.tar"
    certs = "/usr/local/share/ca-certificates"
    hook = (
        f'mkdir -p "$1{certs}" && (cp {certs}/*.crt "$1{certs}/" 2>/dev/null || true) '
        f'&& chroot "$1" update-ca-certificates'
    )
    sh(
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        f"--customize-hook={hook}",
        "bookworm",
        str(tarball),
        timeout=1200,
        check=True,
    )
    podman(
        "import",
        "-q",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["python3"]',
        str(tarball),
        BASE,
        check=True,
    )
    return f"{BASE} (stand-in: mmdebstrap bookworm + python3 3.11 + python3-venv)"


def context_copy(work: Path) -> Path:
    """The build context as git has it (plus uncommitted edits), in a folder of its own, so
    the cache checks can change the README there."""
    context = work / "context"
    if context.exists():
        shutil.rmtree(context)
    files = sh("git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", check=True)
    for name in files.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            target = context / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return context


def build(context: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--pull=never",
        "-t",
        IMAGE,
        str(context),
        timeout=1800,
    )
    return result, time.monotonic() - started


def cached_steps(output: str) -> list[str]:
    """The build steps podman took from its cache ('STEP n/m: ...' followed by 'Using cache')."""
    steps, last = [], ""
    for line in output.splitlines():
        if "STEP " in line:
            last = line.split(": ", 1)[-1]
        elif "Using cache" in line and last:
            steps.append(last)
    return steps


# Running ---------------------------------------------------------------------------------------


class Stack:
    """The stand-ins on 127.0.0.1 and what the containers need to reach them (host network)."""

    def __init__(self) -> None:
        self.arxiv = ArxivStandin(recent(load_papers()))
        self.smtp = SmtpStandin().start()
        self.volumes: list[str] = []
        self.containers: list[str] = []

    def env(self, **extra: str) -> list[str]:
        send_at = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%H:%M")
        env = {
            "DIGEST_ARXIV_URL": self.arxiv.url,
            "DIGEST_ARXIV_DELAY": "0",
            "DIGEST_SMTP_HOST": self.smtp.host,
            "DIGEST_SMTP_PORT": str(self.smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SMTP_CONNECTIONS": "1",
            "DIGEST_FROM": SENDER,
            "DIGEST_SEND_AT": send_at if send_at > "00:05" else "00:00",
            "DIGEST_TIMEZONE": "UTC",
            "DIGEST_RETRY_BACKOFF": "0",
            "DIGEST_SECRET": "a-secret-long-enough-for-the-check",
            **extra,
        }
        return [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]

    def volume(self, name: str, csv: str | None) -> str:
        podman("volume", "rm", "-f", name)
        podman("volume", "create", name, check=True)
        self.volumes.append(name)
        if csv is not None:
            podman(
                "run",
                "--rm",
                "-i",
                "--network",
                "none",
                "-v",
                f"{name}:/data",
                IMAGE,
                "sh",
                "-c",
                "cat > /data/subscribers.csv",
                input=csv,
                check=True,
            )
        return name

    def start(self, name: str, *args: str, env: Sequence[str] = ()) -> str:
        podman("rm", "-f", name)
        podman("run", "-d", "--name", name, "--network", "host", *env, *args, check=True)
        self.containers.append(name)
        return name

    def logs(self, name: str) -> str:
        result = podman("logs", name)
        return result.stdout + result.stderr

    def exit_code(self, name: str) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def status(self, volume: str) -> dict[str, Any]:
        result = podman(
            "run", "--rm", "--network", "none", "-v", f"{volume}:/data", IMAGE, "digest",
            "status", "--json",
        )  # fmt: skip
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr}

    def close(self) -> None:
        for name in self.containers:
            podman("rm", "-f", "-t", "0", name)
        for name in self.volumes:
            podman("volume", "rm", "-f", name)
        self.smtp.stop()
        self.arxiv.close()


CSV = "email,name,keywords\n" + "".join(
    f"{row['email']},{row['name']},{row['keywords']}\n" for row in (ADA_ROW, GRACE_ROW)
)


def scenario_stop(check: Check, stack: Stack) -> None:
    """SIGTERM while the mail server hangs in DATA (its DIGEST_SMTP_TIMEOUT: 30 s)."""
    volume = stack.volume("digest-check-stop", CSV)
    gate = threading.Event()
    stack.smtp.data_gate = gate
    try:
        name = stack.start("digest-check-stop", "-v", f"{volume}:/data", IMAGE, env=stack.env())
        in_data = stack.smtp.data_waiting.wait(90)
        check("stop: the daemon's first email reaches DATA (and the server hangs)", in_data)
        started = time.monotonic()
        podman("stop", name, timeout=60)  # the default grace: 10 s, then SIGKILL
        took = time.monotonic() - started
    finally:
        gate.set()
        stack.smtp.data_gate = None
    code = stack.exit_code(name)
    log = stack.logs(name)
    check(
        "stop: `podman stop` while the server hangs -> exit 0 within the 10 s grace",
        code == 0 and took < GRACE_S,
        f"exit {code} after {took:.1f} s",
    )
    check("stop: the daemon says it cut the connection", "cut 1 mail server connection" in log)
    status = stack.status(volume)
    runs = status.get("runs", [{}])
    owed = [(o["subscriber"], o["status"]) for o in status.get("owed", [])]
    check(
        "stop: run recorded `stopped`, Ada's email pending",
        runs[0].get("status") == "stopped" and (ADA, "pending") in owed,
        f"run {runs[0].get('status')}: {runs[0].get('message')}; owed {owed}",
    )
    pending = podman(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/data", IMAGE, "python3", "-c",
        "import sqlite3; print(sqlite3.connect('/data/digest.db').execute("
        "\"SELECT message_id FROM emails WHERE status = 'pending'\").fetchone()[0])",
    ).stdout.strip()  # fmt: skip

    podman("start", name, check=True)
    sent = wait_until(lambda: len(stack.smtp.messages) >= 2, 90)
    ada, grace = messages_to(stack.smtp, ADA), messages_to(stack.smtp, GRACE)
    check(
        "stop: the restart sends Ada's pending email with the same Message-ID, and Grace's",
        sent and len(ada) == 1 and ada[0]["Message-ID"] == pending and len(grace) == 1,
        f"Ada {len(ada)} ({ada[0]['Message-ID'] if ada else '-'} vs {pending}), Grace {len(grace)}",
    )
    wait_until(lambda: "run 2 ok" in stack.logs(name), 30)
    check("health: healthy while the daemon runs after its run", health(name) == (0, ""))
    podman("exec", name, "rm", "/data/subscribers.csv", check=True)
    code_reason = health(name)
    check(
        "health: unhealthy with the reason once subscribers.csv is gone",
        code_reason[0] == 1 and "subscribers.csv: no such file" in code_reason[1],
        code_reason[1].strip(),
    )
    started = time.monotonic()
    podman("stop", name, timeout=60)
    took = time.monotonic() - started
    code = stack.exit_code(name)
    check("stop: idle -> exit 0 at once", code == 0 and took < 3, f"exit {code} in {took:.1f} s")
    check("nobody twice", len(stack.smtp.messages) == 2, f"{len(stack.smtp.messages)} messages")


def health(name: str) -> tuple[int, str]:
    """`podman healthcheck run` (the image's HEALTHCHECK; the timers need systemd, absent
    here) and the reason `digest status --check` gives."""
    run = podman("healthcheck", "run", name, timeout=60)
    reason = podman("exec", name, "digest", "status", "--check", timeout=60)
    return (0 if run.returncode == 0 else 1), reason.stderr


def scenario_volumes(check: Check, stack: Stack, work: Path) -> None:
    # A bind mount the image's user (10001) may not write: root's folder, mode 755.
    folder = work / "root-owned-data"
    folder.mkdir(mode=0o755, exist_ok=True)
    (folder / "subscribers.csv").write_text(CSV, encoding="utf-8")
    result = podman(
        "run", "--rm", "--network", "host", *stack.env(), "-v", f"{folder}:/data", IMAGE,
        timeout=120,
    )  # fmt: skip
    lines = container_stderr(result)
    check(
        "volume: an unwritable bind mount -> exit 1, one Error: line with /data, the uid, the fix",
        result.returncode == 1
        and len(lines) == 1
        and lines[0].startswith("Error: /data/digest.db: ")
        and "user id 10001 (group 0)" in lines[0]
        and "chmod g+rwX /data" in lines[0],
        lines[-1] if lines else f"exit {result.returncode}, nothing on stderr",
    )
    # A read-only volume.
    volume = stack.volume("digest-check-ro", CSV)
    result = podman(
        "run", "--rm", "--network", "host", *stack.env(), "-v", f"{volume}:/data:ro", IMAGE,
        timeout=120,
    )  # fmt: skip
    lines = container_stderr(result)
    check(
        "volume: a read-only volume -> exit 1, one Error: line saying so",
        result.returncode == 1 and len(lines) == 1 and "read-only file system" in lines[0],
        lines[-1] if lines else f"exit {result.returncode}",
    )
    # What must work: an arbitrary uid in group 0 on a fresh named volume, --read-only.
    for label, extra in (
        ("--user 12345:0 on a fresh named volume", ["--user", "12345:0"]),
        ("--read-only with the volume", ["--read-only"]),
    ):
        volume = stack.volume(f"digest-check-{extra[0].strip('-')}", CSV)
        result = podman(
            "run", "--rm", "--network", "host", *stack.env(), *extra, "-v", f"{volume}:/data",
            IMAGE, "digest", "send", timeout=180,
        )  # fmt: skip
        check(
            f"volume: {label} -> `digest send` works",
            result.returncode == 0,
            " ".join(result.stdout.split()) or " ".join(container_stderr(result)),
        )


def scenario_web(check: Check, stack: Stack) -> None:
    """`digest serve` from the same image on the daemon's volume, with compose.yaml's own
    health check command, and its stop."""
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    web = compose["services"]["web"]
    port = str(free_port())
    command = [
        *web["command"][: web["command"].index("--host")],
        "--host", "127.0.0.1", "--port", port,
    ]  # fmt: skip
    volume = stack.volume("digest-check-web", CSV)
    daemon = stack.start("digest-check-daemon", "-v", f"{volume}:/data", IMAGE, env=stack.env())
    name = stack.start(
        "digest-check-web", "-v", f"{volume}:/data", IMAGE, *command, env=stack.env()
    )
    test = web["healthcheck"]["test"][1:]
    test[-1] = test[-1].replace(":8080/", f":{port}/")
    up = wait_until(lambda: podman("exec", name, *test, timeout=30).returncode == 0, 30, 1.0)
    last = podman("exec", name, *test, timeout=30)
    check(
        "web: `digest serve` beside the daemon, compose.yaml's health check (GET /healthz, "
        "issue 14)",
        up,
        "healthy" if up else (last.stderr.strip().splitlines() or ["?"])[-1],
    )
    started = time.monotonic()
    podman("stop", name, timeout=60)
    took = time.monotonic() - started
    code = stack.exit_code(name)
    check(
        "web: `podman stop` -> exit 0 within the grace (SIGTERM handled: issue 14)",
        code == 0 and took < GRACE_S,
        f"exit {code} after {took:.1f} s",
    )  # fmt: skip
    podman("stop", daemon, timeout=60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "digest-ctr")
    args = parser.parse_args(argv)
    if not shutil.which("podman"):
        print(
            "podman is not available: the container check did not run (nothing was checked). "
            "Install it (Debian: apt-get install -y podman runc mmdebstrap) and run again."
        )
        return 2
    if os.geteuid() != 0:
        print("the container check runs podman as root (rootful): run it with sudo")
        return 2
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    configure(work)
    check = Check()
    print(f"podman: {podman('--version').stdout.strip()}; base image: {base_image(work)}")

    context = context_copy(work)
    result, took = build(context)
    if not check("build: podman build --format docker", result.returncode == 0, f"{took:.0f} s"):
        print(result.stdout[-3000:], result.stderr[-3000:])
        return check.summary()
    (context / "digest" / "__pycache__").mkdir(exist_ok=True)
    (context / "digest" / "__pycache__" / "stray.cpython-311.pyc").write_bytes(b"stray")
    again, took = build(context)
    output = again.stdout + again.stderr
    check(
        "build: a stray __pycache__ changes nothing (every step from the cache)",
        again.returncode == 0 and output.count("Using cache") == output.count("STEP ") - 2,
        f"{took:.0f} s, {output.count('Using cache')} of {output.count('STEP ')} steps cached"
        " (the FROMs are not counted)",
    )
    with (context / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nA README change.\n")
    again, took = build(context)
    cached = cached_steps(again.stdout + again.stderr)
    check(
        "build: after a README change the dependencies' layer is reused",
        again.returncode == 0 and any("requirements.txt" in step for step in cached),
        f"{took:.0f} s; from the cache: {'; '.join(step[:40] for step in cached)}",
    )
    inside = podman(
        "run", "--rm", "--network", "none", IMAGE, "sh", "-c",
        "id -u; id -g; stat -c '%U:%g %a' /data; python3 -m pip --version 2>&1; "
        "ls /app/.venv/lib/python3.11/site-packages | grep -c -E '^(pip|setuptools)' ; "
        "digest --version",
    ).stdout.split("\n")  # fmt: skip
    check("image: runs as uid 10001, gid 0", inside[:2] == ["10001", "0"], " ".join(inside[:2]))
    check("image: /data is digest:0, group-writable", inside[2] == "digest:0 775", inside[2])
    check(
        "image: no pip or setuptools at run time",
        "No module named pip" in inside[3] and inside[4] == "0",
        f"{inside[3]}; {inside[4]} pip/setuptools in the venv",
    )
    inspect = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    healthcheck = inspect.get("Healthcheck")
    check("image: HEALTHCHECK kept", bool(healthcheck) and "status" in json.dumps(healthcheck))
    size = int(inspect.get("Size", 0)) / 1e6
    print(f"image size: {size:.0f} MB ({IMAGE})")

    stack = Stack()
    try:
        scenario_stop(check, stack)
        scenario_volumes(check, stack, work)
        scenario_web(check, stack)
    finally:
        stack.close()
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
