"""The glue every component body calls (oasis_vqvae.kubeflow), on a real ingest."""

from __future__ import annotations

import json
import os

import pytest

import components
from oasis_vqvae.errors import ConfigError
from oasis_vqvae.kubeflow import component_params, integral_floats_to_int, run_stage
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


def test_run_stage_validates_sets_the_run_id_and_calls_the_stage(
    tmp_path, tiny_overrides, monkeypatch
):
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    params = components.default_params(overrides=(*tiny_overrides, "tracking.enabled=false"))
    out = run_stage("ingest", params, "kfp-run-123", out=str(tmp_path / "dataset"))
    assert out == tmp_path / "dataset"
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] > 0
    assert os.environ[PIPELINE_RUN_ENV] == "kfp-run-123"


def test_an_unresolved_placeholder_is_not_a_run_id(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    params = components.default_params(overrides=(*tiny_overrides, "tracking.enabled=false"))
    run_stage("ingest", params, "{{$.pipeline_job_uuid}}", out=str(tmp_path / "dataset"))
    assert PIPELINE_RUN_ENV not in os.environ
