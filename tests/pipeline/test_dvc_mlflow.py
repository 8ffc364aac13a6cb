"""A real `dvc repro` of the whole DAG in a copy of the repo, tracked by a real MLflow server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from mlflow import MlflowClient

from oasis_vqvae.config import _apply_override
from oasis_vqvae.stages import STAGES

pytestmark = pytest.mark.slow

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
    """The repo copy after one full pipeline run, tracked by the MLflow server.

    The pipeline run takes two `dvc repro`s: in the first, train-pixelcnn fails inside its
    tracked stage (a plain file stands where its checkpoint folder goes, so the stage crashes
    as on a full disk); the second, after the fix, runs what is left.
    """
    repo = tmp_path_factory.mktemp("repo")
    _copy_repo(repo_root, repo, tiny_overrides)
    env = cli_env(MLFLOW_TRACKING_URI=mlflow_server)
    blocker = repo / "models" / ".pixelcnn.checkpoint"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a checkpoint folder")
    failed = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    assert failed.returncode != 0 and "failed to reproduce 'train-pixelcnn'" in failed.stderr, (
        failed.stdout[-3000:] + failed.stderr[-3000:]
    )
    blocker.unlink()
    second = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "Running stage 'train-vqvae'" not in second, "the rerun skips what finished"
    return repo, env, failed.stdout + failed.stderr + second


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
    # Read as a file (`dvc repro > log`): lines, no progress-bar redraws, a line per epoch.
    assert "\r" not in log, "progress bars redraw in a log file"
    assert len(re.findall(r"progress: epoch \d+/2 ", log)) == 2 + 2  # vqvae, pixelcnn
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


def test_mlflow_has_one_parent_with_a_child_per_stage_and_models(repro, mlflow_server):
    """One parent for the pipeline run, also across the failed attempt and the rerun."""
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("oasis-vqvae")
    parents = client.search_runs([experiment.experiment_id], "tags.`oasis.role` = 'pipeline'")
    assert len(parents) == 1, [p.info.status for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert 0.0 < parent.data.metrics["ssim_mean"] <= 1.0
    assert parent.data.params["vqvae.epochs"] == "2"
    assert parent.data.tags["data_hash"]
    assert len(parent.data.tags["git_commit"]) == 40
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_stage = {run.data.tags["oasis.stage"]: run for run in children if _finished(run)}
    assert set(by_stage) == set(STAGES) and len(by_stage) == len(STAGES)
    failed = [run.data.tags["oasis.stage"] for run in children if not _finished(run)]
    assert failed == ["train-pixelcnn"], "the failed attempt stays beside its rerun"

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


def test_mlflow_rest_api_shows_model_training_dataset_lineage_and_version_metrics(
    repro, mlflow_server
):
    """What the MLflow 3 UI reads, through the server's REST API."""
    repo, _, _ = repro
    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = requests.get(
        f"{api}/experiments/get-by-name", params={"experiment_name": "oasis-vqvae"}, timeout=30
    ).json()["experiment"]
    # Model training, so the UI opens on the runs table, not on the GenAI overview.
    assert _tags(experiment)["mlflow.experimentKind"] == "custom_model_development"

    manifest = json.loads((repo / "data" / "dataset" / "manifest.json").read_text())
    runs = requests.post(
        f"{api}/runs/search",
        json={
            "experiment_ids": [experiment["experiment_id"]],
            "filter": "tags.`oasis.stage` = 'train-vqvae' and attributes.status = 'FINISHED'",
        },
        timeout=30,
    ).json()["runs"]
    parent_id = _tags(runs[0]["data"])["mlflow.parentRunId"]
    parent = requests.get(f"{api}/runs/get", params={"run_id": parent_id}, timeout=30).json()
    for run in (runs[0], parent["run"]):  # the stage run and its pipeline run
        (logged,) = run["inputs"]["dataset_inputs"]
        dataset = logged["dataset"]
        # MLflow's digest column holds 36 characters: the hash's first 36 hex digits.
        assert dataset["digest"] == manifest["content_hash"].removeprefix("sha256:")[:36]
        assert json.loads(dataset["source"])["uri"] == str((repo / "data" / "dataset").resolve())
        input_tags = _tags(logged)
        assert input_tags["mlflow.data.context"] == "training"
        assert input_tags["oasis.content_hash"] == manifest["content_hash"]

    metrics = json.loads((repo / "models" / "vqvae" / "metrics.json").read_text())
    versions = requests.get(
        f"{api}/model-versions/search", params={"filter": "name='oasis-vqvae'"}, timeout=30
    ).json()["model_versions"]
    version_tags = _tags(versions[0])
    assert float(version_tags["best_val_ssim"]) == pytest.approx(metrics["best_val_ssim"], 1e-5)
    assert int(version_tags["best_epoch"]) == metrics["best_epoch"]


def _tags(entity) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in entity.get("tags", [])}


def _finished(run) -> bool:
    return run.info.status == "FINISHED"


def _commit_workspace(repo):
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["add", "-A"], ["commit", "-qm", "baseline", "--allow-empty"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)


EXPERIMENT_COUNT = 24


def test_experiment_is_a_second_pipeline_run(repro, mlflow_server):
    # The finished pipeline becomes the baseline commit; the experiment's results stay in the
    # workspace, where the next test diffs them against it (no third run needed).
    repo, env, _ = repro
    _commit_workspace(repo)
    log = dvc(repo, env, "exp", "run", "-S", f"generate.count={EXPERIMENT_COUNT}")
    assert "Running stage 'generate'" in log and "Running stage 'train-vqvae'" not in log
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    counts = [block.get("count") for block in _find(shown, "generate")]
    assert EXPERIMENT_COUNT in counts, "experiment listed"
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("oasis-vqvae")
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`oasis.role` = 'pipeline'", order_by=["start_time DESC"]
    )
    assert len(parents) == 2
    newest = parents[0]
    assert newest.data.params["generate.count"] == str(EXPERIMENT_COUNT)
    assert newest.data.metrics["samples"] == EXPERIMENT_COUNT
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{newest.info.run_id}'"
    )
    # What reads the samples reruns: generate, evaluate and utility.
    assert {run.data.tags["oasis.stage"] for run in children} == {"generate", "evaluate", "utility"}


def test_metrics_and_plots_diff_against_the_last_commit(repro):
    # Runs after the experiment: its results in the workspace against the baseline commit.
    repo, env, _ = repro
    count = yaml.safe_load(subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout)["generate"]["count"]  # fmt: skip
    new = EXPERIMENT_COUNT
    changed = json.loads(dvc(repo, env, "params", "diff", "--json"))["params.yaml"]
    assert changed["generate.count"] == {"old": count, "new": new, "diff": new - count}
    metrics = json.loads(dvc(repo, env, "metrics", "diff", "--json"))
    samples = metrics["outputs/eval/metrics.json"]["samples"]
    assert samples == {"old": count, "new": new, "diff": new - count}
    dvc(repo, env, "plots", "diff", "HEAD", "-o", "plots-diff")
    page = (repo / "plots-diff" / "index.html").read_text()
    assert "HEAD" in page and "workspace" in page and "PixelCNN bits per code" in page
