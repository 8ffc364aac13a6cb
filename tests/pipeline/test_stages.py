"""The five model stages, run as library functions in order on a tiny dataset."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oasis_vqvae import metrics as metrics_module
from oasis_vqvae.errors import ConfigError, DataError, TrainingError
from oasis_vqvae.stages import train_pixelcnn as train_pixelcnn_stage
from oasis_vqvae.stages import train_vqvae as train_vqvae_stage
from oasis_vqvae.stages.evaluate import FIGURES, evaluate, giveaways
from oasis_vqvae.stages.extract_codes import extract_codes
from oasis_vqvae.stages.generate import generate
from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn
from oasis_vqvae.stages.train_vqvae import train_vqvae
from oasis_vqvae.tracking import TrackingError
from oasis_vqvae.training import checkpoint_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_dataset, tiny_params) -> Path:
    """Every stage after ingest, once, in one directory."""
    root = tmp_path_factory.mktemp("stages")
    # bfloat16 even where the CPU lacks it (emulated there): the saved models must be float32.
    params = tiny_params("vqvae.precision=mixed_bfloat16", "pixelcnn.precision=mixed_bfloat16")
    train_vqvae(params, tiny_dataset, root / "vqvae")
    extract_codes(params, tiny_dataset, root / "vqvae", root / "codes")
    train_pixelcnn(params, root / "codes", root / "pixelcnn")
    generate(params, root / "vqvae", root / "pixelcnn", root / "samples")
    evaluate(
        params, tiny_dataset, root / "vqvae", root / "pixelcnn", root / "samples", root / "eval"
    )
    return root


def test_train_vqvae_writes_model_history_and_plots(run_dir):
    out = run_dir / "vqvae"
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    for column in (
        "loss",
        "reconstruction_loss",
        "codebook_loss",
        "commitment_loss",
        "perplexity",
        "codes_in_use",
        "val_ssim",
    ):
        assert column in history and history[column].notna().all(), column
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 < metrics["best_val_ssim"] <= 1.0
    for png in ("loss_curves.png", "reconstructions.png"):
        assert Image.open(out / png).size[0] > 100
    assert not checkpoint_dir(out).exists(), "checkpoints are removed after success"


def test_models_load_in_safe_mode(run_dir):
    vqvae = keras.models.load_model(run_dir / "vqvae" / "vqvae.keras", safe_mode=True)
    assert vqvae.output_shape == (None, 32, 32, 1)
    # Trained in mixed_bfloat16, saved to compute in float32 wherever it is loaded.
    assert {layer.dtype_policy.name for layer in vqvae._flatten_layers()} == {"float32"}
    pixelcnn = keras.models.load_model(run_dir / "pixelcnn" / "pixelcnn.keras", safe_mode=True)
    assert pixelcnn.output_shape == (None, 8, 8, 16)
    assert {layer.dtype_policy.name for layer in pixelcnn._flatten_layers()} == {"float32"}


def test_extract_codes_covers_every_split(run_dir, tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    codes_json = json.loads((run_dir / "codes" / "codes.json").read_text())
    assert codes_json["grid_shape"] == [8, 8] and codes_json["num_embeddings"] == 16
    for split in ("train", "validate", "test"):
        codes = np.load(run_dir / "codes" / f"{split}.npy")
        assert codes.dtype == np.uint8
        assert codes.shape == (manifest["counts"][split], 8, 8)
        assert codes.max() < 16
        conditions = pd.read_csv(run_dir / "codes" / f"{split}_conditions.csv")
        assert len(conditions) == len(codes)
        assert conditions["slice_level"].between(0, 1).all()
        # Each grid keeps its subject's labels (the synthetic generator's age, sex and CDR).
        assert list(conditions.columns) == ["subject", "slice", "slice_level", "age", "sex", "cdr"]
        assert conditions["subject"].unique().tolist() == manifest["subjects"][split]
        for row in conditions.itertuples():
            labels = manifest["subject_metadata"][row.subject]
            assert (row.age, row.sex, row.cdr) == (labels["age"], labels["sex"], labels["cdr"])
    assert codes_json["conditions"] == manifest["conditions"]
    assert list(codes_json["conditions"]) == ["slice_level", "age", "sex", "cdr"]
    assert (run_dir / "codes" / "usage.png").exists()


def test_pixelcnn_reports_bits_per_code(run_dir):
    history = pd.read_csv(run_dir / "pixelcnn" / "history.csv")
    assert len(history) == 2
    metrics = json.loads((run_dir / "pixelcnn" / "metrics.json").read_text())
    # A uniform guess over 16 codes costs 4 bits; any trained model is in (0, ~5).
    assert 0.0 < metrics["best_val_bits_per_code"] < 6.0


def test_pixelcnn_cosine_schedule_decays_to_zero_over_all_steps(tiny_params):
    cosine = tiny_params("pixelcnn.learning_rate_schedule=cosine", "pixelcnn.epochs=4").pixelcnn
    schedule = train_pixelcnn_stage.learning_rate(cosine, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(cosine.learning_rate)
    assert float(schedule(20)) == pytest.approx(cosine.learning_rate / 2)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9)
    constant = tiny_params("pixelcnn.learning_rate_schedule=constant").pixelcnn
    assert train_pixelcnn_stage.learning_rate(constant, 10) == constant.learning_rate


def test_generate_writes_count_samples(run_dir, tiny_params):
    count = tiny_params().generate.count
    files = sorted((run_dir / "samples").glob("sample_*.png"))
    assert len(files) == count
    image = Image.open(files[0])
    assert image.mode == "L" and image.size == (32, 32)
    codes = np.load(run_dir / "samples" / "codes.npy")
    assert codes.shape == (count, 8, 8)
    assert (run_dir / "samples" / "grid.png").exists()


def test_generate_is_reproducible_with_either_sampler(run_dir, tmp_path, tiny_params):
    # The naive sampler, in another batch size, gives the very same samples as the fast one.
    params = tiny_params("generate.sampler=naive", "generate.batch_size=3")
    generate(params, run_dir / "vqvae", run_dir / "pixelcnn", tmp_path / "again")
    again = np.load(tmp_path / "again" / "codes.npy")
    assert np.array_equal(again, np.load(run_dir / "samples" / "codes.npy"))


EVALUATE_KEYS = (
    "ssim_mean", "ssim_std", "ssim_min", "ssim_p05", "ms_ssim_mean", "psnr_mean", "mse_mean",
    "perplexity_test", "codes_used_test", "perplexity_samples", "code_kl_samples_vs_test",
    "nearest_test_ssim_mean", "nearest_train_ssim_mean", "copies_share",
    "diversity_ms_ssim_samples", "diversity_ms_ssim_real",
    "c2st_accuracy", "c2st_ci_low", "c2st_ci_high", "test_slices", "samples",
    "c2st_reconstructions_accuracy", "c2st_reconstructions_ci_low",
    "c2st_reconstructions_ci_high", "held_out_slices",
    "c2st_autoencoder_accuracy", "c2st_autoencoder_ci_low", "c2st_autoencoder_ci_high",
    *(f"{name}{end}" for name in ("precision", "recall", "density", "coverage",
                                  "level_tv_distance", "slice_level_mae_real",
                                  "broken_share", "broken_share_real",
                                  "fine_detail_samples", "fine_detail_reconstructions")
      for end in ("", "_ci_low", "_ci_high")),
)  # fmt: skip
"""The keys the issues name, so runs stay comparable (plus the slice and sample counts)."""


def test_evaluate_metrics(run_dir, tiny_dataset):
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    for key in EVALUATE_KEYS:
        assert isinstance(metrics[key], int | float) and np.isfinite(metrics[key]), key
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert metrics["test_slices"] == manifest["counts"]["test"]
    assert metrics["samples"] == len(list((run_dir / "samples").glob("sample_*.png")))
    assert -1.0 <= metrics["ssim_min"] <= metrics["ssim_p05"] <= metrics["ssim_mean"] <= 1.0
    assert 0.0 <= metrics["ms_ssim_mean"] <= 1.0
    assert metrics["mse_mean"] > 0 and metrics["psnr_mean"] > 0
    assert 1.0 <= metrics["perplexity_test"] <= metrics["codes_used_test"] <= 16
    assert 1.0 <= metrics["perplexity_samples"] <= 16.0
    assert metrics["code_kl_samples_vs_test"] >= 0.0
    assert -1.0 <= metrics["nearest_test_ssim_mean"] <= 1.0
    assert -1.0 <= metrics["nearest_train_ssim_mean"] <= 1.0
    assert 0.0 <= metrics["copies_share"] <= 1.0
    for key in (
        "c2st", "c2st_reconstructions", "c2st_autoencoder", "precision", "recall", "coverage",
        "level_tv_distance", "broken_share", "broken_share_real",
    ):  # fmt: skip
        value = metrics.get(f"{key}_accuracy", metrics.get(key))
        assert metrics[f"{key}_ci_low"] <= value <= metrics[f"{key}_ci_high"], key
        assert 0.0 <= value <= 1.0, key
    for key in ("fine_detail_samples", "fine_detail_reconstructions"):
        assert 0.0 < metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert metrics["held_out_slices"] == manifest["counts"]["test"] + manifest["counts"]["validate"]
    # generate wrote labels.csv (the tiny prior is conditioned on slice level and CDR).
    for key in ("slice_level_mae", "condition_cdr_accuracy"):
        for side in ("reconstructions", "samples", "shuffled"):
            assert np.isfinite(metrics[f"{key}_{side}"]), key
    for png in FIGURES:
        assert Image.open(run_dir / "eval" / png).size[0] > 100, png


def test_evaluate_report_has_every_section_and_is_self_contained(run_dir):
    page = (run_dir / "eval" / "report.html").read_text()
    for heading in (
        "Metrics",
        "VQ-VAE training",
        "PixelCNN training",
        "SSIM of test reconstructions",
        "Best, median and worst reconstructions",
        "Generated slices",
        "Realism and memorisation",
        "Samples beside their nearest training slices",
        "Code usage: real vs generated",
        "Two-sample tests",
        "Coverage of the real distribution",
        "Broken heads",
        "Fine detail",
        "Slice-level distribution",
        "Condition fidelity",
    ):
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count("data:image/png;base64,") == 18
    assert "Real held-out slices vs their reconstructions" in page
    assert "<td>cdr</td><td>accuracy</td>" in page
    assert all(key in page for key in EVALUATE_KEYS)
    assert "Wilson interval" in page and "window, sigma 1.5, K1 0.01, K2 0.03" in page
    assert 'src="http' not in page


def test_evaluate_writes_identical_metrics_when_run_again(
    run_dir, tiny_dataset, tiny_params, tmp_path, monkeypatch
):
    # Again, on a "machine" whose clock races (every reading 100 s later than the last, as if
    # under heavy load): nothing written may depend on wall-clock time, so metrics.json is
    # byte-identical. (The C2ST used to stop training on a time limit.)
    clock = iter(range(0, 10**9, 100))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    models = (run_dir / "vqvae", run_dir / "pixelcnn")
    again = evaluate(tiny_params(), tiny_dataset, *models, run_dir / "samples", tmp_path / "e")
    first = (run_dir / "eval" / "metrics.json").read_bytes()
    assert (again / "metrics.json").read_bytes() == first


def _labelled_copies(run_dir: Path, dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny dataset with subject attributes, and the samples with a labels.csv."""
    data, samples = tmp_path / "dataset", tmp_path / "samples"
    shutil.copytree(dataset, data)
    shutil.copytree(run_dir / "samples", samples)
    manifest = json.loads((data / "manifest.json").read_text())
    subjects = [s for split in ("train", "validate", "test") for s in manifest["subjects"][split]]
    manifest["subject_metadata"] = {
        subject: {"sex": "FM"[i % 2], "age": 20.0 + 10 * i, "cdr": None}
        for i, subject in enumerate(subjects)
    }  # cdr: no subject has it, so no probe can learn it
    manifest["conditions"] = {
        "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
        "age": {"kind": "continuous", "range": [20.0, 20.0 + 10 * len(subjects)]},
        "sex": {"kind": "categorical", "values": ["F", "M"]},
        "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]},
    }
    (data / "manifest.json").write_text(json.dumps(manifest))
    files = sorted(p.name for p in samples.glob("sample_*.png"))
    pd.DataFrame(
        {
            "file": files[::-1],  # any order: evaluate matches rows to files by name
            "slice_level": np.linspace(0, 1, len(files)),
            "sex": ["F", "M"] * (len(files) // 2),
            "age": 30.0,
            "cdr": 0.5,
        }
    ).to_csv(samples / "labels.csv", index=False)
    return data, samples


def test_evaluate_scores_the_conditions_of_labelled_samples(
    run_dir, tiny_dataset, tiny_params, tmp_path
):
    data, samples = _labelled_copies(run_dir, tiny_dataset, tmp_path)
    models = (run_dir / "vqvae", run_dir / "pixelcnn")
    out = evaluate(tiny_params(), data, *models, samples, tmp_path / "e")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "slice_level_mae",
        "condition_age_mae",
        "condition_sex_accuracy",
        "condition_sex_auc",
    ):
        for side in ("samples", "shuffled"):
            name = f"{key}_{side}"
            assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    for key in ("slice_level_mae", "condition_sex_accuracy", "condition_age_mae"):
        for side in ("real", "reconstructions"):
            assert np.isfinite(metrics[f"{key}_{side}"]), key
    # An AUC needs both classes among the test subjects; otherwise it is left out, never NaN.
    assert 0.0 <= metrics.get("condition_sex_auc_real", 0.5) <= 1.0
    assert not [key for key in metrics if key.startswith("condition_cdr")]
    page = (out / "report.html").read_text()
    assert "cdr: the real training slices have fewer than two distinct known values" in page
    assert "<td>sex</td><td>auc</td>" in page


def test_evaluate_refuses_too_few_images_saying_how_many_it_needs(
    run_dir, tiny_dataset, tiny_params, tmp_path
):
    with pytest.raises(DataError, match=r"needs at least 50 images per set.*\d+ samples"):
        evaluate(
            tiny_params("evaluate.min_images=50"), tiny_dataset, run_dir / "vqvae",
            run_dir / "pixelcnn", run_dir / "samples", tmp_path / "e",
        )  # fmt: skip


def test_labels_that_miss_a_sample_or_name_an_unknown_condition_are_refused(
    run_dir, tiny_dataset, tiny_params, tmp_path
):
    data, samples = _labelled_copies(run_dir, tiny_dataset, tmp_path)
    models = (run_dir / "vqvae", run_dir / "pixelcnn")
    labels = pd.read_csv(samples / "labels.csv")
    labels.iloc[1:].to_csv(samples / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"labels.csv: no row for sample_\d{4}.png"):
        evaluate(tiny_params(), data, *models, samples, tmp_path / "e")
    labels.assign(mood=1.0).to_csv(samples / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"column 'mood' is not a condition of the real dataset"):
        evaluate(tiny_params(), data, *models, samples, tmp_path / "e")
    # Unconditional samples (no labels.csv): no condition fidelity, and the report says why.
    (samples / "labels.csv").unlink()
    out = evaluate(tiny_params(), data, *models, samples, tmp_path / "e")
    metrics = json.loads((out / "metrics.json").read_text())
    assert not [key for key in metrics if key.startswith("condition_")]
    assert "slice_level_mae_samples" not in metrics and "slice_level_mae_real" in metrics
    assert "no labels.csv" in (out / "report.html").read_text()


def test_model_that_does_not_fit_the_images_fails_before_training(
    tiny_dataset, tmp_path, tiny_params
):
    # Params alone allow it (5 halvings of 128 px leave 4x4), but the dataset's slices are 32 px.
    params = tiny_params("data.image_size=128", "vqvae.filters=[8, 8, 8, 8, 8]")
    with pytest.raises(ConfigError, match="vqvae"):
        train_vqvae(params, tiny_dataset, tmp_path / "vqvae")
    assert not (tmp_path / "vqvae").exists()
    assert not checkpoint_dir(tmp_path / "vqvae").exists()


def test_unreachable_tracking_server_fails_before_training(
    tiny_dataset, tmp_path, tiny_params, free_port, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    params = tiny_params("tracking.enabled=true")
    with pytest.raises(TrackingError, match="unreachable"):
        train_vqvae(params, tiny_dataset, tmp_path / "vqvae")
    assert not checkpoint_dir(tmp_path / "vqvae").exists()


def test_collapsed_vqvae_stops_with_advice(tiny_dataset, tmp_path, tiny_params, monkeypatch):
    # A learning rate far too high saturates the sigmoid output: nothing is learnt after it.
    # The check waits 500 steps; here it waits two epochs of the tiny dataset.
    params = tiny_params("vqvae.epochs=5", "vqvae.learning_rate=0.5")
    train_slices = json.loads((tiny_dataset / "manifest.json").read_text())["counts"]["train"]
    steps = 2 * math.ceil(train_slices / params.vqvae.batch_size)
    monkeypatch.setattr(train_vqvae_stage, "COLLAPSE_CHECK_STEPS", steps)
    advice = rf"after {steps} steps \(2 epochs\).* vqvae.learning_rate"
    with pytest.raises(TrainingError, match=advice):
        train_vqvae(params, tiny_dataset, tmp_path / "vqvae")
    assert not (tmp_path / "vqvae").exists()  # no model written
    history = pd.read_csv(checkpoint_dir(tmp_path / "vqvae") / "history.csv")
    assert len(history) == 2 and (history["val_reconstruction_loss"] >= 1.0).all()


def test_giveaways_shows_the_images_the_c2st_scored_lowest_and_highest():
    # Image i of either set is filled with i / 255: the figure's pixels name the images.
    samples = np.repeat(np.arange(10, dtype=np.uint8), 4).reshape(10, 2, 2)
    real = np.repeat(np.arange(6, dtype=np.uint8), 4).reshape(6, 2, 2)
    c2st = metrics_module.TwoSampleResult(
        accuracy=0.7,
        ci_low=0.6,
        ci_high=0.8,
        held_out=12,
        trained_on=8,
        steps=10,
        real_scores=(0.9, 0.1, 0.5, 0.3, 0.8, 0.7),
        generated_scores=(0.2, 0.95, 0.4, 0.05, 0.6, 0.7),
        folds=2,
        real_index=(5, 4, 3, 2, 1, 0),
        generated_index=(9, 7, 5, 3, 1, 0),
    )
    images, scores = giveaways(c2st, samples, real, count=2)
    shown = np.rint(images[:, 0, 0] * 255).astype(int).tolist()
    assert shown == [3, 9, 7, 0, 4, 2]  # least real samples, most real samples, least real slices
    assert scores.tolist() == [0.05, 0.2, 0.95, 0.7, 0.1, 0.3]


def test_dvc_declares_every_evaluation_figure(repo_root):
    import yaml

    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    outs = dvc["stages"]["evaluate"]["outs"]
    plotted = [p for p in dvc["plots"] if isinstance(p, str)]
    for png in FIGURES:
        assert f"outputs/eval/{png}" in outs and f"outputs/eval/{png}" in plotted, png
