"""`make lint` and `make type-check` stay green."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import repo_root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=repo_root(), capture_output=True, text=True, timeout=300)


def test_ruff():
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy():
    out = run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
