"""Stages read and write gs:// URIs: ingest from a bucket folder or zip, outputs to a bucket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile

import pytest

from oasis_vqvae import storage
from oasis_vqvae.data.shards import read_manifest
from oasis_vqvae.stages import stage_function
from oasis_vqvae.stages.ingest import write_dataset
from tests.conftest import make_config
from tests.gcs.conftest import put_tree


def test_ingest_from_a_gs_folder_gives_the_local_folder_dataset(bucket, png_folder, tmp_path):
    local = png_folder(slices=2)
    uri = put_tree(bucket, local, "oasis/slices")
    from_gcs = write_dataset(make_config(source=uri), tmp_path / "gcs")
    from_disk = write_dataset(make_config(source=str(local)), tmp_path / "disk")
    manifest = read_manifest(from_gcs)
    assert manifest["content_hash"] == read_manifest(from_disk)["content_hash"]
    assert manifest["source"]["location"] == uri
    assert manifest["counts"] == {"train": 6, "validate": 2, "test": 2}


def test_labels_csv_from_gs(bucket, png_folder, tmp_path):
    local = png_folder(slices=1)
    rows = "".join(
        f"{case},{60 + case},{'FM'[case % 2]},{0.5 * (case % 2)}\n" for case in range(1, 6)
    )
    bucket.blob("oasis/labels.csv").upload_from_string("case,age,sex,cdr\n" + rows)
    uri = f"gs://{bucket.name}/oasis/labels.csv"
    manifest = read_manifest(
        write_dataset(make_config(source=str(local), labels=uri), tmp_path / "gcs")
    )
    assert manifest["source"]["labels"] == uri
    assert manifest["subject_metadata"]["OAS-case-003"] == {"age": 63.0, "sex": "M", "cdr": 0.5}
    assert manifest["conditions"]["cdr"]["values"] == [0.0, 0.5]


def test_ingest_from_a_gs_zip(bucket, png_zip, png_folder, tmp_path):
    archive = png_zip(slices=2)
    assert zipfile.is_zipfile(archive)
    bucket.blob("oasis/keras_png_slices_data.zip").upload_from_filename(archive)
    uri = f"gs://{bucket.name}/oasis/keras_png_slices_data.zip"
    from_gcs = write_dataset(make_config(source=uri), tmp_path / "gcs")
    from_disk = write_dataset(make_config(source=str(png_folder(slices=2))), tmp_path / "disk")
    assert read_manifest(from_gcs)["content_hash"] == read_manifest(from_disk)["content_hash"]


def _cli(stage, overrides, *args, env):
    command = [
        sys.executable, "-m", "oasis_vqvae", stage,
        *[arg for item in overrides for arg in ("--set", item)], *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_stages_write_to_gs_and_the_next_stage_reads_from_gs(
    bucket, tiny_overrides, cli_env, repo_root, tmp_path, monkeypatch
):
    run = f"gs://{bucket.name}/runs/1"
    overrides = [*tiny_overrides, "tracking.enabled=false"]
    params = ["--params", str(repo_root / "params.yaml")]
    # A staging directory of its own, to check that nothing stays behind on this machine.
    env = cli_env(OASIS_VQVAE_STAGING=str(tmp_path / "staging"))
    ingest = _cli("ingest", overrides, *params, "--out", f"{run}/dataset", env=env)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    train = _cli(
        "train-vqvae", overrides, *params,
        "--data", f"{run}/dataset", "--out", f"{run}/vqvae", env=env,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]

    names = {blob.name.removeprefix("runs/1/") for blob in bucket.list_blobs(prefix="runs/1/")}
    assert {"dataset/manifest.json", "dataset/_COMPLETE.json"} <= names
    expected = {"vqvae.keras", "history.csv", "metrics.json", "loss_curves.png", "_COMPLETE.json"}
    assert {f"vqvae/{name}" for name in expected} <= names
    staged = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert staged == [], "staged outputs and checkpoints are removed after the upload"

    monkeypatch.setenv("OASIS_VQVAE_STAGING", str(tmp_path / "staging"))
    back = storage.download(f"{run}/vqvae", tmp_path / "back")
    metrics = json.loads((back / "metrics.json").read_text())
    assert metrics["best_epoch"] >= 1
    from oasis_vqvae.stages.common import VQVAE_FILE, load_model

    assert load_model(back, VQVAE_FILE).name == "vqvae"


def test_stage_function_passes_local_paths_through(tiny_params, tmp_path):
    out = stage_function("ingest")(tiny_params(), out=str(tmp_path / "dataset"))
    assert read_manifest(out)["counts"]["train"] > 0


@pytest.mark.slow
def test_a_killed_stage_writing_to_gs_resumes_from_its_staged_checkpoint(
    bucket, tiny_dataset, tiny_overrides, cli_env, repo_root, tmp_path
):
    out = f"gs://{bucket.name}/runs/2/vqvae"
    overrides = [*tiny_overrides, "tracking.enabled=false", "vqvae.epochs=60"]
    args = ["--params", str(repo_root / "params.yaml"), "--data", str(tiny_dataset), "--out", out]
    command = [
        sys.executable, "-m", "oasis_vqvae", "train-vqvae",
        *[arg for item in overrides for arg in ("--set", item)], *args,
    ]  # fmt: skip
    staging = tmp_path / "staging"
    env = cli_env(OASIS_VQVAE_STAGING=str(staging))
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline:
        if list(staging.rglob("training_metadata.json")):
            break
        time.sleep(0.05)
    first.kill()
    first.wait()
    assert list(staging.rglob("training_metadata.json")), "no checkpoint before the deadline"
    assert not list(bucket.list_blobs(prefix="runs/2/")), "a killed stage uploads nothing"

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming after epoch" in second.stderr
    assert bucket.get_blob(f"runs/2/vqvae/{storage.MARKER}") is not None
