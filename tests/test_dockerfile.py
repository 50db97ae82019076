"""The Dockerfile, checked without a container engine: every file it copies exists, it installs
the way the README does, runs as a non-root user with state on a volume, is configured only by
valid DIGEST_* variables, and its CMD and HEALTHCHECK are real `digest` commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from digest.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    found = []
    for line in logical:
        word, _, args = line.strip().partition(" ")
        found.append((word.upper(), " ".join(args.split())))
    return found


def one(name: str) -> str:
    [args] = [a for word, a in instructions() if word == name]
    return args


def env_vars() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions():
        if word == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command)
    return command


def digest_accepts(command: list[str]) -> None:
    """`command` is the installed `digest` script with a subcommand and options it accepts."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert command[0] in pyproject["project"]["scripts"], command
    result = subprocess.run(
        [sys.executable, "-m", "digest", *command[1:], "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: python -m digest {command[1]} ")


def test_it_is_a_small_python_image_with_state_on_a_volume_and_a_non_root_user() -> None:
    assert re.fullmatch(r"python:3\.1[1-9]-slim", one("FROM"))
    user = one("USER")
    assert user not in {"root", "0"}
    assert f"useradd --create-home --uid 10001 {user}" in one("RUN")
    assert json.loads(one("VOLUME")) == ["/data"]
    workdirs = [a for word, a in instructions() if word == "WORKDIR"]
    assert workdirs[-1] == "/data"  # relative paths (and `digest send --dry-run`) land there
    env = env_vars()
    assert env["DIGEST_DB"].startswith("/data/")
    assert env["DIGEST_SUBSCRIBERS"].startswith("/data/")
    assert "/app/.venv/bin" in env["PATH"].split(":")


def test_every_copied_file_exists_and_is_what_the_package_build_needs() -> None:
    copied: set[str] = set()
    for word, args in instructions():
        if word == "COPY":
            *sources, _dest = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                copied.add(source)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *wheel["packages"]}
    needed |= set(wheel["force-include"])
    assert needed <= copied


def test_it_installs_exactly_as_the_readme_says() -> None:
    run = one("RUN")
    install = run.split(" && useradd")[0]
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q ."
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{install} && .venv/bin/digest run" in readme


def test_it_is_configured_only_by_valid_digest_variables() -> None:
    env = env_vars()
    ours = {k: v for k, v in env.items() if k.startswith("DIGEST_")}
    others = set(env) - set(ours)
    assert others == {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PATH"}
    settings = Settings.from_env(ours)
    assert settings.db_path == Path("/data/digest.db")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ours:
        assert f"`{name}`" in readme, f"{name} is not documented"


def test_the_default_command_is_the_daemon_and_the_healthcheck_is_status_check() -> None:
    cmd = exec_form(one("CMD"))
    assert cmd == ["digest", "run"]
    digest_accepts(cmd)
    healthcheck = one("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert re.fullmatch(r"(--[a-z-]+=\S+ ?)+", options.strip())
    check = exec_form(command)
    assert check == ["digest", "status", "--check"]
    digest_accepts(check)
    assert one("STOPSIGNAL") == "SIGTERM"
