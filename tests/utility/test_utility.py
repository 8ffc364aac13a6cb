"""The utility stage on fabricated data: outputs, MLflow, determinism, bad input, leakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from oasis_vqvae import cli
from oasis_vqvae.classifier import Augmentation, Classifier
from oasis_vqvae.errors import ConfigError, DataError
from oasis_vqvae.stages import STAGES
from oasis_vqvae.stages.utility import ARMS, check_leakage, fraction_tag, utility
from oasis_vqvae.tracking import ROLE_TAG, STAGE_TAG

from .conftest import fabricate

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked_run(fabricated, utility_params, tmp_path_factory):
    """One tracked run of the stage: (output directory, tracking URI, params)."""
    root = tmp_path_factory.mktemp("utility-run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = utility_params("tracking.enabled=true")
    with pytest.MonkeyPatch.context() as patch:  # the environment wins over params
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        out = utility(params, **fabricated.args(), out=root / "utility")
    return out, uri, params


def test_writes_metrics_curve_figure_and_report(tracked_run):
    out, _, params = tracked_run
    assert {p.name for p in out.iterdir()} == {
        "metrics.json", "curve.csv", "utility_curve.png", "report.html",
    }  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    for arm in ARMS:
        for key in ("auc", "subject_auc", "balanced_accuracy", "subject_balanced_accuracy"):
            low, value, high = (metrics[f"{key}_{arm}{s}"] for s in ("_low", "", "_high"))
            assert 0.0 <= low <= high <= 1.0, (key, arm)
        assert metrics[f"auc_{arm}_seed_std"] >= 0.0
    assert metrics["tstr_over_real"] == pytest.approx(metrics["auc_tstr"] / metrics["auc_real"])
    # The fabricated label is visible: even a tiny CNN separates the classes.
    assert metrics["auc_real"] > 0.6
    for fraction in params.utility.real_fractions:
        tag = fraction_tag(fraction)
        gain = metrics[f"auc_real_synthetic_at_{tag}"] - metrics[f"auc_real_at_{tag}"]
        assert metrics[f"gain_synthetic_at_{tag}"] == pytest.approx(gain)
        assert metrics[f"gain_synthetic_at_{tag}_low"] <= metrics[f"gain_synthetic_at_{tag}_high"]
    assert metrics["auc_real_at_100pct"] == metrics["auc_real"]
    assert (metrics["train_subjects"], metrics["test_subjects"], metrics["test_slices"]) == (
        12, 6, 24,
    )  # fmt: skip
    # TSTR trains on as many synthetic slices as there are real ones; 1:1 in real + synthetic.
    assert metrics["synthetic_slices_tstr"] == metrics["train_slices"] == 48
    assert metrics["synthetic_slices_real_synthetic"] == 48
    curve = pd.read_csv(out / "curve.csv")
    assert curve["real_fraction"].tolist() == [0.5, 1.0]
    page = (out / "report.html").read_text()
    assert "Leakage guards (all passed)" in page and "synthetic only (TSTR)" in page


def test_mlflow_child_run_and_parent_metrics(tracked_run):
    _, uri, _ = tracked_run
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("oasis-vqvae")
    (child,) = client.search_runs([experiment.experiment_id], f"tags.`{STAGE_TAG}` = 'utility'")
    assert child.data.params["utility.target"] == "cdr"
    assert 0.0 <= child.data.metrics["auc_tstr"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"utility_curve.png", "curve.csv", "report.html"} <= artifacts
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert parent.data.metrics["tstr_over_real"] == pytest.approx(
        child.data.metrics["tstr_over_real"]
    )
    assert parent.info.status == "FINISHED"  # utility ran alone: it ends the parent itself


def test_same_inputs_give_identical_metrics(tracked_run, fabricated, utility_params, tmp_path):
    out, _, _ = tracked_run
    again = utility(utility_params(), **fabricated.args(), out=tmp_path / "again")
    assert (again / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    assert (again / "curve.csv").read_bytes() == (out / "curve.csv").read_bytes()


def test_joins_a_parent_run_that_evaluate_already_ended(tmp_path, monkeypatch):
    from oasis_vqvae import tracking
    from oasis_vqvae.config import load_params

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(REPO / "params.yaml")
    with tracking.stage_run("evaluate", params) as evaluate:
        evaluate.finish_pipeline({"ssim_mean": 0.9})
    with tracking.stage_run("utility", params, join_finished=True) as run:
        assert run.parent_id == evaluate.parent_id and not run.started_pipeline
        run.log_pipeline_metrics({"auc_real": 0.8})
    parent = MlflowClient(tracking_uri=uri).get_run(evaluate.parent_id)
    assert parent.data.metrics == {"ssim_mean": 0.9, "auc_real": 0.8}
    assert parent.info.status == "FINISHED"
    with tracking.stage_run("evaluate", params) as later:  # without it: a new pipeline run
        assert later.parent_id != evaluate.parent_id and later.started_pipeline


# --- bad input: one line naming the key and the counts --------------------------------------------


def copy(fabricated, tmp_path):
    root = tmp_path / "inputs"
    shutil.copytree(fabricated.data.parent, root)
    made = type(fabricated)(root / "dataset", root / "codes", root / "pixelcnn", root / "samples")
    made.splits = fabricated.splits
    return made


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["utility.target=mmse"], ConfigError,
         r"utility.target: 'mmse' is not a condition of the real dataset; it has \['age', 'cdr'"),
        (["utility.target=sex", "utility.threshold=null"], ConfigError,
         r"utility.target: 'sex' is not a condition of the samples .*pixelcnn.conditions"),
        (["utility.target=age", "utility.threshold=null"], ConfigError,
         "utility.threshold: the continuous target age needs a threshold"),
        (["utility.real_fractions=[0.05, 1.0]"], ConfigError,
         r"utility.real_fractions: 0.05 of the training subjects leaves a class without "
         r"subjects \(cdr <= 0: 6 -> 0, cdr > 0: 6 -> 0\)"),
    ],
)  # fmt: skip
def test_bad_settings_fail_before_training(
    fabricated, utility_params, tmp_path, overrides, error, message
):
    with pytest.raises(error, match=message):
        utility(utility_params(*overrides), **fabricated.args(), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_test_split_with_one_class_names_the_counts(utility_params, tmp_path):
    made = fabricate(tmp_path, counts={"train": 6, "validate": 1, "test": 1}, samples=8)
    with pytest.raises(
        DataError,
        match=r"the test split of .* has 1 of 2 classes of cdr "
        r"\(cdr <= 0: 1 subjects, 4 slices; cdr > 0: 0 subjects, 0 slices\)",
    ):
        utility(utility_params(), **made.args(), out=tmp_path / "out")  # fmt: skip


def test_multiclass_target_runs_through_the_checks(fabricated, utility_params):
    # Three CDR values, null threshold: one class per value; the fabricated test split has
    # all three, so the task is accepted (the classes are checked before any training).
    from oasis_vqvae.data.conditions import condition_specs
    from oasis_vqvae.data.shards import read_manifest
    from oasis_vqvae.stages.utility import make_task

    cfg = utility_params("utility.threshold=null").utility
    specs = condition_specs(read_manifest(fabricated.data))
    task = make_task(cfg, specs, specs)
    assert task.names == ("cdr = 0.0", "cdr = 0.5", "cdr = 1.0")
    assert [task.label(v) for v in (0.0, 1.0, None, float("nan"))] == [0, 2, None, None]


def test_cli_prints_one_line_and_exits_2(fabricated, tmp_path, capsys):
    args = [f"--{k}={v}" for k, v in fabricated.args().items()]
    status = cli.main(["utility", *args, "--out", str(tmp_path / "o"), "--params",
                       str(REPO / "params.yaml"), "--set", "utility.target=mmse",
                       "--set", "tracking.enabled=false"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and "utility.target: 'mmse'" in err


# --- leakage guards -------------------------------------------------------------------------------


def guard(made):
    from oasis_vqvae.data.shards import read_manifest

    data = made.data
    return check_leakage(data, read_manifest(data), made.codes, made.pixelcnn,
                         made.samples / "dataset")  # fmt: skip


def test_clean_inputs_pass_every_guard(fabricated):
    assert len(guard(fabricated)) == 5


@pytest.mark.parametrize("where", ["pixelcnn", "codes"])
def test_a_test_subject_in_the_generative_training_inputs_is_caught(fabricated, tmp_path, where):
    made = copy(fabricated, tmp_path)
    table = getattr(made, where) / "train_conditions.csv"
    frame = pd.read_csv(table)
    planted = made.splits["test"][0]
    frame.loc[3, "subject"] = planted
    frame.to_csv(table, index=False)
    with pytest.raises(DataError, match=rf"{where}/train_conditions.csv row 5: subject {planted} "
                       "is a test subject of .*training split only"):  # fmt: skip
        guard(made)


def test_codes_of_another_dataset_are_caught(fabricated, tmp_path):
    made = copy(fabricated, tmp_path)
    (made.codes / "codes.json").write_text(json.dumps({"dataset_hash": "sha256:other"}))
    with pytest.raises(DataError, match="dataset_hash sha256:other is not"):
        guard(made)


def test_a_subject_in_two_splits_is_caught(fabricated, tmp_path):
    made = copy(fabricated, tmp_path)
    manifest = json.loads((made.data / "manifest.json").read_text())
    manifest["subjects"]["train"].append(made.splits["test"][0])
    (made.data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"subject {made.splits['test'][0]} is in both the train"):
        guard(made)


def test_a_real_slice_passed_off_as_a_sample_is_caught(fabricated, tmp_path):
    made = copy(fabricated, tmp_path)
    path = made.samples / "dataset" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["subjects"]["train"][0] = made.splits["test"][0]
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="sample subject .* is a real subject"):
        guard(made)


# --- classifier, front ends ----------------------------------------------------------------------


def test_classifier_training_is_reproducible_and_augmentation_keeps_shapes():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), np.arange(20) % 2
    classifier = Classifier(8, 2, filters=(4,))
    fit = dict(steps=3, batch_size=4, seed=5, augment=Augmentation())
    first = classifier.fit(images, labels, **fit).predict_proba(images)
    other = classifier.fit(images, labels, steps=3, batch_size=4, seed=6).predict_proba(images)
    again = classifier.fit(images, labels, **fit).predict_proba(images)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    np.testing.assert_allclose(first.sum(axis=1), 1.0)
    batch = Augmentation()(images[:4, :, :, None] / 255.0, np.random.default_rng(1))
    assert batch.shape == (4, 8, 8, 1) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0


def test_stage_lists_agree_and_dvc_declares_the_stage():
    assert list(cli.STAGES) == list(STAGES)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["utility"]
    for flag in cli.STAGES["utility"][2]:
        assert flag in stage["cmd"]
    assert stage["params"] == ["utility"]
    assert {"data/dataset", "outputs/samples", "src/oasis_vqvae/stages/utility.py"} <= set(
        stage["deps"]
    )
    assert stage["metrics"] == ["outputs/utility/metrics.json"]
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert "outputs/utility/utility_curve.png" in plots


def test_subject_subsets_keep_a_share_of_each_class_per_seed(utility_params):
    from oasis_vqvae.stages.utility import Slices, Task, subject_subsets

    subjects = np.repeat([f"s{i:02d}" for i in range(10)], 3)  # 4 of class 1, 6 of class 0
    labels = np.repeat([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], 3)
    train = Slices(np.zeros((30, 4, 4), np.uint8), labels, subjects)
    task = Task("cdr", 0.0, (), ("cdr <= 0", "cdr > 0"))
    cfg = utility_params("utility.real_fractions=[0.5, 1.0]").utility
    subsets = subject_subsets(cfg, task, train)
    for seed in cfg.seeds:
        half = subsets[0.5, seed]
        assert len(half) == 5 and sum(s < "s04" for s in half) == 2  # 2 of 4, 3 of 6
        assert list(subsets[1.0, seed]) == sorted(set(subjects))
    assert len({tuple(subsets[0.5, seed]) for seed in cfg.seeds}) > 1


def test_pool_averages_blocks_and_names_the_key_on_a_misfit():
    from oasis_vqvae.stages.utility import pool

    images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_array_equal(pool(images, 2)[0], [[2, 4], [10, 12]])  # rint, half to even
    assert pool(images, 0) is images
    with pytest.raises(ConfigError, match="utility.image_size: 8 must divide"):
        pool(images, 8)
