"""Bad input of the container front ends, checked without an engine: one line naming the fix."""

from __future__ import annotations

import os
import shutil
import subprocess

from pipelines.cli import main
from pipelines.containers import make_writable_for


def test_run_local_in_docker_without_an_engine_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    status = main(
        ["run-local", "--runner", "docker", "--set", "tracking.enabled=false",
         "--output-dir", str(tmp_path / "root")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1
    assert f"no container engine answers at unix://{tmp_path}/no-engine.sock" in err
    assert "install Docker" in err and "podman system service" in err


def test_run_local_in_docker_refuses_a_tracking_store_on_this_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    status = main(["run-local", "--runner", "docker", "--output-dir", str(tmp_path / "root")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1
    assert "sqlite:///mlflow/mlflow.db" in err and "MLFLOW_TRACKING_URI=http://" in err


def test_make_image_without_an_engine_says_what_to_install(repo_root, tmp_path):
    # This machine's situation: a docker command whose daemon does not answer, no podman.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "timeout"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("OASIS_VQVAE_ENGINE", None)
    result = subprocess.run(
        [shutil.which("make"), "-C", str(repo_root), "image", "IMAGE=oasis-vqvae:never-built"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1, result.stderr
    assert "no container engine answers" in ours[0]
    assert "Docker" in ours[0] and "podman" in ours[0]


def test_the_pipeline_root_becomes_writable_for_the_image_user(tmp_path):
    root = tmp_path / "root"
    make_writable_for(root, "10001")
    if os.getuid() == 0:
        assert root.stat().st_uid == 10001
    else:
        assert root.stat().st_mode & 0o1777 == 0o1777
