"""What a user installs: the wheel carries the templates, and the code finds them there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_templates_and_uses_them(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    [wheel] = tmp_path.glob("digest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    templates = {p.name for p in (ROOT / "emails").iterdir()}
    assert {f"digest/emails/{name}" for name in templates} <= names
    pages = {p.name for p in (ROOT / "digest" / "templates").iterdir()}  # digest serve's pages
    assert {f"digest/templates/{name}" for name in pages} <= names

    # Imported from the unpacked wheel (not the source tree), the package finds its own copy.
    found = subprocess.run(
        [sys.executable, "-c", "from digest.render import templates_dir; print(templates_dir())"],
        env={"PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == tmp_path / "site" / "digest" / "emails"


def test_python_dash_m_digest_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "send" in result.stdout


def test_code_is_lint_clean_and_formatted() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
