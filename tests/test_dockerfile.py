"""The Dockerfile, .dockerignore and compose.yaml, checked without a container engine (the
real build and run: bench/container.py): every file it copies exists and is in the build
context, it installs what the README installs with the dependencies in a layer of their own,
leaves no pip behind, runs as a non-root user with state on a group-0-writable volume, is
configured only by valid DIGEST_* variables, and its commands are real `digest` commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

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


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from one FROM to the next)."""
    found: list[list[tuple[str, str]]] = []
    for word, args in instructions():
        if word == "FROM":
            found.append([])
        found[-1].append((word, args))
    return found


def final() -> list[tuple[str, str]]:
    return stages()[-1]


def one(name: str, stage: list[tuple[str, str]] | None = None) -> str:
    [args] = [a for word, a in (final() if stage is None else stage) if word == name]
    return args


def runs(stage: list[tuple[str, str]]) -> list[str]:
    return [a for word, a in stage if word == "RUN"]


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
    for stage in stages():
        assert re.fullmatch(r"python:3\.1[1-9]-slim( AS \w+)?", one("FROM", stage))
    assert one("FROM", stages()[0]).split()[0] == one("FROM").split()[0]  # the venv's python
    assert one("USER") == "10001:0"  # numeric: Kubernetes' runAsNonRoot can check it
    [setup] = runs(final())
    assert "useradd --create-home --uid 10001 --gid 0 digest" in setup
    # /data: digest's, and group 0's (platforms that pick an arbitrary uid run it in group 0)
    assert "mkdir /data && chown digest:0 /data && chmod g+rwX /data" in setup
    assert json.loads(one("VOLUME")) == ["/data"]
    workdirs = [a for word, a in final() if word == "WORKDIR"]
    assert workdirs[-1] == "/data"  # relative paths (and `digest send --dry-run`) land there
    env = env_vars()
    assert env["DIGEST_DB"].startswith("/data/")
    assert env["DIGEST_SUBSCRIBERS"].startswith("/data/")
    assert "/app/.venv/bin" in env["PATH"].split(":")


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from a stage)."""
    found = []
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from="):
            *sources, dest = shlex.split(args)
            found.append((sources, dest))
    return found


def test_every_copied_file_exists_and_is_what_the_package_build_needs() -> None:
    copied: set[str] = set()
    for sources, _dest in copies():
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            copied.add(source)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *wheel["packages"]}
    needed |= set(wheel["force-include"])
    assert needed <= copied
    # The run stage takes only the venv the build stage made.
    [args] = [a for w, a in final() if w == "COPY"]
    assert args == "--from=build /app/.venv /app/.venv"


def test_the_build_context_is_only_what_the_build_copies() -> None:
    """An allow-list: a local database, .venv, .git or a stray __pycache__ never reaches the
    build (nor changes a layer's checksum)."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {source.rstrip("/") for sources, _ in copies() for source in sources}
    assert {"**/__pycache__", "**/*.pyc"} <= set(rules)


def test_dependencies_install_in_a_layer_that_sources_and_readme_do_not_invalidate() -> None:
    """The README's install (`python3 -m venv .venv && .venv/bin/pip install -q .`) in two
    steps: pyproject's dependencies, with only pyproject.toml copied, then digest itself."""
    build = stages()[0]
    words = [word for word, _ in build]
    first_copy, deps_run = words.index("COPY"), words.index("RUN")
    assert first_copy < deps_run
    assert build[first_copy][1] == "pyproject.toml ./"  # nothing else before the install
    deps = build[deps_run][1]
    listing, _, install = deps.partition(" > requirements.txt && ")
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt"
    # The listing is pyproject's own dependency list (run here on the real file).
    script = shlex.split(listing)
    assert script[:2] == ["python3", "-c"]
    listed = subprocess.run(
        [sys.executable, "-c", script[2]], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert listed == pyproject["project"]["dependencies"]
    # The sources come after; then the package alone, and the venv loses pip and setuptools.
    assert {a for w, a in build[deps_run:] if w == "COPY"} == {
        "README.md ./",
        "digest ./digest",
        "emails ./emails",
    }
    [package] = runs(build)[1:]
    assert package == (
        ".venv/bin/pip install -q --no-deps . "
        "&& .venv/bin/python -m pip uninstall -q -y pip setuptools"
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/digest run" in readme
    container = readme.split("## In a container")[1].split("\n## ")[0]
    assert "python3 -m venv .venv && .venv/bin/pip install -q ." in container
    assert "pip install -q --no-deps ." in container


def test_no_pip_at_run_time() -> None:
    [setup] = runs(final())
    assert setup.startswith(
        "if python3 -m pip --version > /dev/null 2>&1; then "
        "python3 -m pip uninstall -q -y --root-user-action=ignore pip setuptools wheel; fi"
    )
    assert not any(word == "ENV" and "PIP_" in args for word, args in final())


def test_it_is_configured_only_by_valid_digest_variables() -> None:
    env = env_vars()
    ours = {k: v for k, v in env.items() if k.startswith("DIGEST_")}
    others = set(env) - set(ours)
    assert others == {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PATH",
    }
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


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def interpolate(value: str) -> str | None:
    """A compose value with ${NAME:-default} -> the default, ${NAME:?...} -> None (required)."""
    if re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value):
        return None
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_runs_the_daemon_and_the_web_app_from_one_image_on_one_volume() -> None:
    services = compose()["services"]
    assert set(services) == {"daemon", "web"}
    daemon, web = services["daemon"], services["web"]
    assert daemon["image"] == web["image"] and daemon["build"] == web["build"] == "."
    assert daemon["volumes"] == web["volumes"] == ["data:/data"]
    assert "data" in compose()["volumes"]
    assert "command" not in daemon  # the image's CMD: digest run, and its HEALTHCHECK
    assert "healthcheck" not in daemon
    command = web["command"]
    assert command[:2] == ["digest", "serve"]
    digest_accepts(command)
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert web["ports"] == [f"{port}:{port}"]
    # The web app's own health check: python's urllib (the image has no curl) on /healthz.
    test = web["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"]
    assert f"urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=5)" in test[3]
    compile(test[3], "healthcheck", "exec")
    # A stop within the grace period: the daemon's DIGEST_STOP_TIMEOUT plus 3 s at least.
    for service in (daemon, web):
        assert service["restart"] == "unless-stopped"
        grace = int(service["stop_grace_period"].removesuffix("s"))
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        assert grace >= float(env["DIGEST_STOP_TIMEOUT"] or 0) + 3
        required = {k for k, v in env.items() if v is None}
        assert required == {"DIGEST_FROM", "DIGEST_SMTP_HOST", "DIGEST_SECRET"}
        given = {
            "DIGEST_FROM": "d@example.org",
            "DIGEST_SMTP_HOST": "smtp",
            "DIGEST_SECRET": "s" * 32,
        }
        filled = {k: given[k] if v is None else v for k, v in env.items()}
        Settings.from_env(filled)  # every variable is one of ours, every default valid
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    container = readme.split("## In a container")[1].split("\n## ")[0]
    assert "docker compose up -d" in container and "compose.yaml" in container
