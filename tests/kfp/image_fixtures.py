"""Fixtures of the image tests: a container engine, the image built from this tree, the API.

The image is tagged by a hash of what goes into it (Dockerfile, pyproject.toml, the lock,
README.md, src/), so a second run on an unchanged tree reuses it and builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import containers

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "components" / "image.sh"
TEST_REPOSITORY = "localhost/oasis-vqvae-test"
INSTALL = (
    "install Podman (apt-get install podman buildah runc debootstrap) or Docker with a "
    "running daemon; .ci/run does"
)
CONTEXT = ("components/Dockerfile", "pyproject.toml", "constraints.txt", "README.md")


def context_hash(root: Path = REPO) -> str:
    """SHA-256 of every file the image is built from (as .dockerignore lets into the build)."""
    files = [root / name for name in CONTEXT]
    files += sorted(
        path
        for path in (root / "src").rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.endswith(".egg-info") for part in path.parts)
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run(*command: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, text output captured; a failure shows its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")  # fmt: skip
    return result


@pytest.fixture(scope="session")
def engine() -> str:
    """``docker`` or ``podman``: the command line that runs containers here."""
    result = run(str(IMAGE_SH), "engine", check=False, timeout=180)
    if result.returncode:
        pytest.skip(f"no container engine answers: {INSTALL}")
    name = result.stdout.strip()
    if name == "buildah":
        pytest.skip(f"buildah builds images but does not run them: {INSTALL}")
    return name


def _has_image(engine: str, tag: str) -> bool:
    return run(engine, "image", "inspect", tag, check=False).returncode == 0


def _base_image(engine: str) -> str:
    """$OASIS_VQVAE_BASE_IMAGE, else the debootstrap base (made now if it can be), else default."""
    if os.environ.get("OASIS_VQVAE_BASE_IMAGE"):
        return os.environ["OASIS_VQVAE_BASE_IMAGE"]
    makefile = (REPO / "Makefile").read_text()
    local_base = re.search(r"^LOCAL_BASE := (\S+)$", makefile, re.M).group(1)
    default = re.search(r"^BASE_IMAGE \?= (\S+)$", makefile, re.M).group(1)
    if _has_image(engine, local_base):
        return local_base
    if shutil.which("debootstrap") and os.getuid() == 0:
        run("make", "-C", str(REPO), "image-base", timeout=1800)
        return local_base
    return default


@pytest.fixture(scope="session")
def image(engine: str) -> str:
    """The tag of the CPU image of this tree, built by ``make image`` unless already there."""
    tag = f"{TEST_REPOSITORY}:{context_hash()[:16]}"
    if not _has_image(engine, tag):
        base = _base_image(engine)
        run("make", "-C", str(REPO), "image", f"IMAGE={tag}", f"BASE_IMAGE={base}", timeout=3600)
    return tag


@pytest.fixture(scope="session")
def docker_api(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``DOCKER_HOST`` of an engine's Docker API; starts Podman's service if none answers."""
    saved = os.environ.get("DOCKER_HOST")
    service = None
    try:
        try:
            containers.connect().close()
        except containers.ContainerError:
            if engine != "podman":
                pytest.skip(f"no Docker API answers at $DOCKER_HOST: {INSTALL}")
            service, host = _start_podman_service(tmp_path_factory.mktemp("podman"))
            os.environ["DOCKER_HOST"] = host
        yield os.environ.get("DOCKER_HOST", "")
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


def _start_podman_service(folder: Path) -> tuple[subprocess.Popen, str]:
    socket = folder / "podman.sock"
    host = f"unix://{socket}"
    log = (folder / "service.log").open("w")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", host], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if socket.is_socket():
            os.environ["DOCKER_HOST"] = host
            try:
                containers.connect().close()
                return service, host
            except containers.ContainerError:
                pass
        if service.poll() is not None:
            break
        time.sleep(0.5)
    service.kill()
    raise RuntimeError(
        f"podman system service did not answer: {(folder / 'service.log').read_text()}"
    )
