"""Each image variant's dependency set resolves within constraints.txt (make image-gpu-check).

Building the GPU image downloads several GB of CUDA wheels, so it is not built in CI; this
resolves its requirement set (what the Dockerfile installs for VARIANT=gpu) against the
lock with uv, as the build would, and checks that every package it needs is pinned there.
Needs PyPI (the index pages), like ``make lock``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.image

UV = Path(sys.executable).parent / "uv"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)", re.M)


def variant_requirements(repo_root: Path, variant: str) -> list[str]:
    """The requirement lines the Dockerfile installs for ``variant`` (cpu or gpu)."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]["cuda"] if variant == "gpu" else []
    return project["dependencies"] + extras


def pins(text: str) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in PIN.findall(text)}


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_variant_resolves_within_the_lock(repo_root, tmp_path, variant):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(variant_requirements(repo_root, variant)) + "\n")
    resolved = tmp_path / "resolved.txt"
    result = subprocess.run(
        [str(UV), "pip", "compile", str(requirements), "--constraint",
         str(repo_root / "constraints.txt"), "--python-version", "3.11",
         "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--no-annotate",
         "--quiet", "--output-file", str(resolved)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    needed = pins(resolved.read_text())
    locked = pins((repo_root / "constraints.txt").read_text())
    assert {name: version for name, version in needed.items() if locked.get(name) != version} == {}
    cuda = {name for name in needed if name.startswith("nvidia-")}
    assert bool(cuda) == (variant == "gpu"), sorted(cuda)
