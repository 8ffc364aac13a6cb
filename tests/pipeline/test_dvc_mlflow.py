"""A real `dvc repro` of the whole DAG in a copy of the repo, tracked by a real MLflow server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from oasis_vqvae.config import _apply_override
from oasis_vqvae.stages import STAGES

BIN = Path(sys.executable).parent


def _run(args, cwd, env, timeout=900):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _copy_repo(repo_root, dest, overrides):
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (repo_root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for override in overrides:
        _apply_override(params, override)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repro(tmp_path_factory, mlflow_server, repo_root, tiny_overrides, cli_env):
    """The repo copy after one full `dvc repro`, tracked by the MLflow server."""
    repo = tmp_path_factory.mktemp("repo")
    _copy_repo(repo_root, repo, tiny_overrides)
    env = cli_env(MLFLOW_TRACKING_URI=mlflow_server)
    first = _run([str(BIN / "dvc"), "repro"], repo, env)
    return repo, env, first


def _find(tree, key):
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                yield value
            yield from _find(value, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _find(item, key)


def dvc(repo, env, *args):
    return _run([str(BIN / "dvc"), *args], repo, env)


def test_repro_runs_every_stage_and_reports_ssim(repro):
    repo, env, log = repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    shown = json.loads(dvc(repo, env, "metrics", "show", "--json"))
    workspace = shown[""]["data"]
    evaluation = workspace["outputs/eval/metrics.json"]["data"]
    assert 0.0 < evaluation["ssim_mean"] <= 1.0
    assert "best_val_ssim" in workspace["models/vqvae/metrics.json"]["data"]


def test_second_repro_runs_no_stage(repro):
    repo, env, _ = repro
    again = dvc(repo, env, "repro")
    assert "Running stage" not in again
    assert "up to date" in again


def test_plots_render(repro):
    repo, env, _ = repro
    dvc(repo, env, "plots", "show", "-o", "plots-html")
    html = (repo / "plots-html" / "index.html").read_text()
    assert "VQ-VAE losses" in html and "PixelCNN bits per code" in html
    assert "nearest_training.png" in html


def test_mlflow_has_parent_with_a_child_per_stage_and_models(repro, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("oasis-vqvae")
    parents = client.search_runs([experiment.experiment_id], "tags.`oasis.role` = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert 0.0 < parent.data.metrics["ssim_mean"] <= 1.0
    assert parent.data.params["vqvae.epochs"] == "2"
    assert parent.data.tags["data_hash"]
    assert len(parent.data.tags["git_commit"]) == 40
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_stage = {run.data.tags["oasis.stage"]: run for run in children}
    assert set(by_stage) == set(STAGES) and len(children) == len(STAGES)
    assert all(run.info.status == "FINISHED" for run in children)

    vqvae_run = by_stage["train-vqvae"]
    assert vqvae_run.data.params["vqvae.num_embeddings"] == "16"
    assert vqvae_run.data.params["vqvae.precision"] == "auto"
    for stage in ("train-vqvae", "train-pixelcnn"):  # what auto chose; no GPU here
        assert by_stage[stage].data.tags["oasis.precision"] in {"float32", "mixed_bfloat16"}
    steps = [m.step for m in client.get_metric_history(vqvae_run.info.run_id, "val_ssim")]
    assert steps == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(vqvae_run.info.run_id)}
    assert {"history.csv", "loss_curves.png", "reconstructions.png"} <= artifacts
    assert by_stage["ingest"].data.params["data.image_size"] == "32"
    assert 0.0 <= parent.data.metrics["c2st_accuracy"] <= 1.0
    evaluate_artifacts = {a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id)}
    assert {"report.html", "nearest_training.png", "code_usage.png"} <= evaluate_artifacts

    for name, stage in (("oasis-vqvae", "train-vqvae"), ("oasis-pixelcnn", "train-pixelcnn")):
        versions = client.search_model_versions(f"name = '{name}'")
        assert versions, name
        assert versions[0].run_id == by_stage[stage].info.run_id


def test_experiment_is_a_second_pipeline_run(repro, mlflow_server):
    repo, env, _ = repro
    log = dvc(repo, env, "exp", "run", "-S", "generate.count=2")
    assert "Running stage 'generate'" in log and "Running stage 'train-vqvae'" not in log
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    counts = list(_find(shown, "generate"))
    assert {"count": 2} in [{"count": c.get("count")} for c in counts], "experiment listed"
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("oasis-vqvae")
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`oasis.role` = 'pipeline'", order_by=["start_time DESC"]
    )
    assert len(parents) == 2
    newest = parents[0]
    assert newest.data.params["generate.count"] == "2"
    assert newest.data.metrics["samples"] == 2
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{newest.info.run_id}'"
    )
    assert {run.data.tags["oasis.stage"] for run in children} == {"generate", "evaluate"}


def test_metrics_and_plots_diff_against_the_last_commit(repro):
    # Runs last: it commits the workspace, changes a parameter and reruns what depends on it.
    repo, env, _ = repro
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["add", "-A"], ["commit", "-qm", "baseline", "--allow-empty"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    count = yaml.safe_load((repo / "params.yaml").read_text())["generate"]["count"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _apply_override(params, f"generate.count={count + 1}")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, env, "repro")

    changed = json.loads(dvc(repo, env, "params", "diff", "--json"))["params.yaml"]
    assert changed["generate.count"] == {"old": count, "new": count + 1, "diff": 1}
    metrics = json.loads(dvc(repo, env, "metrics", "diff", "--json"))
    samples = metrics["outputs/eval/metrics.json"]["samples"]
    assert samples == {"old": count, "new": count + 1, "diff": 1}
    dvc(repo, env, "plots", "diff", "HEAD", "-o", "plots-diff")
    page = (repo / "plots-diff" / "index.html").read_text()
    assert "HEAD" in page and "workspace" in page and "PixelCNN bits per code" in page
