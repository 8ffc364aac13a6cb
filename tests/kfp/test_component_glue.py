"""The glue every component body calls (oasis_vqvae.kubeflow), on a real ingest."""

from __future__ import annotations

import json
import os

import pytest

import components
from oasis_vqvae.errors import ConfigError
from oasis_vqvae.kubeflow import (
    component_params,
    integral_floats_to_int,
    pipeline_run_id,
    run_stage,
)
from oasis_vqvae.tracking import PIPELINE_RUN_ENV


def test_struct_doubles_become_ints_again():
    carried = {"data": {"image_size": 64.0, "split": {"train": 0.8}}, "vqvae": {"filters": [8.0]}}
    assert integral_floats_to_int(carried) == {
        "data": {"image_size": 64, "split": {"train": 0.8}},
        "vqvae": {"filters": [8]},
    }


def test_experiment_env_names_the_experiment(monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-the-cluster")
    assert component_params(components.default_params()).tracking.experiment == "from-the-cluster"


def test_a_wrong_key_names_the_pipeline_parameter():
    with pytest.raises(ConfigError, match=r"pipeline parameter params: vqvae.epoch: unknown key"):
        component_params({"vqvae": {"epoch": 3}})


@pytest.mark.parametrize(
    ("uri", "run_id"),
    [
        ("minio://mlpipeline/v2/artifacts/oasis-vqvae/5f1c-77/train-vqvae/vqvae", "5f1c-77"),
        ("gs://b/root/123456/oasis-vqvae-20261124/train-vqvae_-42/vqvae", "oasis-vqvae-20261124"),
        (
            "/tmp/root/oasis-vqvae-2026-11-24-07-03-30/ingest/dataset",
            "oasis-vqvae-2026-11-24-07-03-30",
        ),
        ("s3://b/r/oasis-vqvae/run-9/ingest/dataset?region=eu-west-1", "run-9"),
        ("root/ingest/dataset", None),
    ],
)
def test_the_run_folder_of_an_output_uri_names_the_run(uri, run_id):
    assert pipeline_run_id(uri) == run_id


class Output:
    """The two attributes of a KFP output artifact that run_stage uses."""

    def __init__(self, path):
        self.path = str(path)
        self.uri = str(path)


def test_run_stage_validates_sets_the_run_id_and_calls_the_stage(
    tmp_path, tiny_overrides, monkeypatch
):
    params = components.default_params(overrides=(*tiny_overrides, "tracking.enabled=false"))
    output = Output(tmp_path / "oasis-vqvae-run-1" / "ingest" / "dataset")
    out = run_stage("ingest", params, output)
    assert out == tmp_path / "oasis-vqvae-run-1" / "ingest" / "dataset"
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] > 0
    assert os.environ[PIPELINE_RUN_ENV] == "oasis-vqvae-run-1"


def test_an_explicit_run_id_wins(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setenv(PIPELINE_RUN_ENV, "mine")
    params = components.default_params(overrides=(*tiny_overrides, "tracking.enabled=false"))
    run_stage("ingest", params, Output(tmp_path / "run-2" / "ingest" / "dataset"))
    assert os.environ[PIPELINE_RUN_ENV] == "mine"
