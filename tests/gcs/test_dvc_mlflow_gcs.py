"""DVC remotes and MLflow artifact stores on gs://, against the emulator, with the real tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.pipeline.conftest import _wait_healthy

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_dvc_push_and_pull_through_a_gs_remote_with_endpointurl(
    bucket, gcs_emulator, cli_env, tmp_path
):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = cli_env()
    # Only the remote's endpointurl leads DVC to the emulator (gcsfs falls back to anonymous).
    env.pop("STORAGE_EMULATOR_HOST", None)
    data = os.urandom(300_000)
    (repo / "data.bin").write_bytes(data)
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "add", "-q", "data.bin"],
        ["dvc", "remote", "add", "-d", "gcs", f"gs://{bucket.name}/dvc"],
        ["dvc", "remote", "modify", "gcs", "endpointurl", gcs_emulator.host],
        ["dvc", "push"],
    ):
        _run(command, repo, env)
    stored = [blob for blob in bucket.list_blobs(prefix="dvc/files/md5/")]
    assert len(stored) == 1 and stored[0].download_as_bytes() == data

    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data.bin").unlink()
    _run(["dvc", "pull"], repo, env)
    assert (repo / "data.bin").read_bytes() == data


@pytest.fixture
def gcs_mlflow_server(bucket, gcs_emulator, cli_env, free_port, repo_root, tmp_path):
    """mlflow/server.sh with its artifacts in gs://BUCKET/mlflow on the emulator."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        "bash", str(repo_root / "mlflow" / "server.sh"),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", f"gs://{bucket.name}/mlflow", "--port", str(port),
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cli_env())
        try:
            _wait_healthy(uri, server, log_path)
            yield uri
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_mlflow_server_stores_artifacts_in_gs(gcs_mlflow_server, bucket, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=gcs_mlflow_server)
    experiment = client.create_experiment("gcs-artifacts")
    run = client.create_run(experiment).info.run_id
    client.log_text(run, "reconstructions of the test split", "report/notes.txt")
    names = [blob.name for blob in bucket.list_blobs(prefix="mlflow/")]
    assert [name for name in names if name.endswith(f"{run}/artifacts/report/notes.txt")]
    back = client.download_artifacts(run, "report/notes.txt", str(tmp_path))
    assert Path(back).read_text() == "reconstructions of the test split"


def test_mlflow_client_logs_straight_to_a_gs_artifact_location(bucket, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    location = f"gs://{bucket.name}/direct"
    experiment = client.create_experiment("direct", artifact_location=location)
    run = client.create_run(experiment).info.run_id
    client.log_text(run, "42", "metrics/answer.txt")
    blob = bucket.get_blob(f"direct/{run}/artifacts/metrics/answer.txt")
    assert blob is not None and blob.download_as_bytes() == b"42"
