"""A real kfp.local run of the whole pipeline with tiny params, tracked by a real MLflow server."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from oasis_vqvae.stages import STAGES
from oasis_vqvae.tracking import ROLE_TAG, STAGE_TAG
from pipelines.cli import main

pytestmark = pytest.mark.slow


def test_run_local_runs_the_dag_and_tracks_one_parent_run(
    tmp_path, tiny_overrides, mlflow_server, monkeypatch, capsys
):
    # The tasks are subprocesses of this one and inherit its environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    sets = [arg for item in tiny_overrides for arg in ("--set", item)]
    experiment = "kfp-local-test"
    status = main(
        ["run-local", *sets, "--set", f"tracking.experiment={experiment}",
         "--output-dir", str(tmp_path / "root")]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    evaluation = tmp_path / _printed(out, "evaluation:")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert 0.0 < metrics["ssim_mean"] <= 1.0
    report = tmp_path / _printed(out, "report:")
    assert report.read_bytes() == (evaluation / "report.html").read_bytes()
    assert "ssim_mean" in out

    # Every metric of metrics.json is on the KFP Metrics artifact.
    executor_output = json.loads((evaluation.parent / "executor_output.json").read_text())
    (artifact,) = executor_output["artifacts"]["metrics"]["artifacts"]
    assert artifact["metadata"] == pytest.approx(metrics)

    # Every task ran and left its output in its own folder of this run.
    run_dir = evaluation.parents[1]
    for stage in STAGES:
        assert (run_dir / stage).is_dir(), stage
    assert (run_dir / "ingest" / "dataset" / "manifest.json").is_file()
    assert (run_dir / "train-vqvae" / "vqvae" / "vqvae.keras").is_file()

    # One MLflow parent run, FINISHED by evaluate, with one child per task.
    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == run_dir.name  # the run folder of the output URIs
    assert parent.data.metrics["ssim_mean"] == pytest.approx(metrics["ssim_mean"])
    children = client.search_runs(
        [experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    )
    assert sorted(child.data.tags[STAGE_TAG] for child in children) == sorted(STAGES)


def _printed(out: str, label: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(label)]
    return line.removeprefix(label).strip()
