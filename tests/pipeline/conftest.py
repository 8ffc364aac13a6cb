"""Fixtures for end-to-end tests: tiny params, a tiny dataset, a real MLflow server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from oasis_vqvae.config import load_params

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Small enough that the whole pipeline trains in about a minute on two CPU cores.
TINY = [
    "data.image_size=32",
    "data.synthetic.subjects=12",  # both CDR classes in every split (the utility stage needs it)
    "data.synthetic.slices_per_subject=3",
    "data.workers=1",
    "vqvae.filters=[8, 16]",
    "vqvae.residual_blocks=1",
    "vqvae.residual_filters=8",
    "vqvae.embedding_dim=8",
    "vqvae.num_embeddings=16",
    "vqvae.epochs=2",
    "vqvae.batch_size=8",
    "pixelcnn.filters=16",
    "pixelcnn.residual_blocks=1",
    "pixelcnn.kernel_size=5",
    "pixelcnn.hidden_layers=1",
    "pixelcnn.embedding_dim=8",
    "pixelcnn.epochs=2",
    "pixelcnn.batch_size=8",
    "generate.count=16",
    "generate.batch_size=8",
    "evaluate.batch_size=16",
    # The tiny run has a few held-out slices and samples: far too few for a meaningful C2ST or
    # coverage, which evaluate refuses by default; these tests check the wiring, not power.
    "evaluate.min_images=2",
    "evaluate.coverage.k=1",
    "evaluate.bootstrap=50",
    "evaluate.c2st.steps=20",
    "evaluate.probe.steps=20",
    "utility.steps=10",
    "utility.filters=[8]",
    "utility.image_size=0",
    "utility.bootstrap=100",
    "utility.real_fractions=[0.5, 1.0]",
]


def _tiny_params(*extra: str):
    return load_params(REPO / "params.yaml", [*TINY, "tracking.enabled=false", *extra])


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """The ``--set`` overrides of the tiny set-up."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_params():
    """Factory of validated tiny params; tracking is off unless the extra overrides turn it on."""
    return _tiny_params


@pytest.fixture(scope="session")
def cli_env():
    """Factory of the environment for running the CLI or DVC as a subprocess of this venv."""
    return _cli_env


@pytest.fixture(scope="session")
def free_port():
    """Factory of free TCP ports on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oasis_vqvae.stages.ingest import ingest

    out = tmp_path_factory.mktemp("tiny") / "dataset"
    ingest(_tiny_params(), out)
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    # Without its GenAI job workers the server starts in seconds and needs a fraction of the memory.
    env = _cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(uri, server, root / "server.log")
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    # 300 s: on a shared 2-core machine under load the server has taken over 2 minutes to start.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout} s: {log.read_text()[-2000:]}")
