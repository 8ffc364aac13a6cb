"""Stage evaluate: are the synthetic slices realistic, diverse and new enough to train on.

Reconstruction (how well the VQ-VAE compresses the test split), latent (does the prior use
the codebook as the real slices do), samples (realism, memorisation, diversity), three
classifier two-sample tests (samples vs real held-out slices, samples vs their reconstructions,
and those slices vs their own reconstructions: the floor this VQ-VAE leaves the first),
what a probe trained on real training slices reads in the samples (coverage of the real
distribution, slice-level distribution, fidelity to the requested conditions), how many
samples show a broken head and how much fine detail they keep (radial power spectra), in
``metrics.json``, figures and one self-contained report.
Every value is a function of the inputs and params only (fixed training steps, seeded
everything, deterministic ops).
The metric functions live in :mod:`oasis_vqvae.metrics`, :mod:`oasis_vqvae.probes`,
:mod:`oasis_vqvae.fidelity`, :mod:`oasis_vqvae.outlines` and :mod:`oasis_vqvae.spectra`; this
module only wires them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oasis_vqvae import fidelity, metrics, outlines, plots, probes, report, spectra, tracking
from oasis_vqvae.config import EvaluateConfig, Params
from oasis_vqvae.data.conditions import SLICE_LEVEL, condition_specs, load_conditions
from oasis_vqvae.data.shards import load_images, read_manifest
from oasis_vqvae.errors import DataError
from oasis_vqvae.stages.common import VQVAE_FILE, load_model, seed_everything, write_metrics
from oasis_vqvae.stages.generate import SAMPLE_GLOB, load_samples, to_uint8
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras
    import pandas as pd

log = logging.getLogger(__name__)

SHOWN = 4
"""Images per group in the figures (best / median / worst reconstructions, nearest pairs)."""
DIVERSITY_SEED = 0
FIGURES = (
    "ssim_histogram.png",
    "reconstructions_by_ssim.png",
    "nearest_ssim.png",
    "nearest_training.png",
    "code_usage.png",
    "c2st_scores.png",
    "c2st_reconstructions_scores.png",
    "level_histogram.png",
    "samples_by_level.png",
    "samples_by_condition.png",
    "c2st_giveaways.png",
    "broken_samples.png",
    "c2st_autoencoder_scores.png",
    "power_spectrum.png",
)
"""PNGs written to the evaluation directory (declared as DVC plots in dvc.yaml)."""
REPORT = "report.html"
LABELS = "labels.csv"
"""The samples' requested conditions, written by generate beside the PNGs."""
BY_LEVEL_SHOWN = 64
"""Samples in the figure of samples sorted by predicted level."""
GRID_LEVELS = 6
"""Columns (slice-level bins) of the samples-by-condition grid."""
GIVEAWAYS = 8
"""Images per row of the C2ST figure: least and most real-looking samples, least real slices."""
WORST_OUTLINES = 16
"""Samples in the figure of the least real head outlines."""


@dataclass
class Evaluation:
    """Everything the figures and the report are drawn from."""

    values: dict[str, float | int]
    """The flat ``metrics.json``."""
    test: np.ndarray
    reconstructed: np.ndarray
    ssim: np.ndarray
    samples: np.ndarray
    held_out: np.ndarray
    """Real held-out slices (validate + test), uint8, as the C2ST saw them."""
    train: np.ndarray
    nearest_test: np.ndarray
    nearest_train: np.ndarray
    nearest_train_index: np.ndarray
    usage_test: np.ndarray
    usage_samples: np.ndarray
    c2st: metrics.TwoSampleResult
    c2st_reconstructions: metrics.TwoSampleResult
    c2st_autoencoder: metrics.TwoSampleResult
    """Real held-out slices vs their own reconstructions: the lowest ``c2st`` a prior can reach."""
    probe: fidelity.ProbeReport
    labels: pd.DataFrame | None
    """The samples' requested conditions (None: the samples have no labels.csv)."""
    outline_bands: outlines.OutlineBands
    sample_outlines: np.ndarray
    """:data:`oasis_vqvae.outlines.FEATURES` of each sample."""
    detail: spectra.DetailReport


def evaluate(
    params: Params,
    data: str | Path,
    vqvae: str | Path,
    pixelcnn: str | Path,
    samples: str | Path,
    out: str | Path,
) -> Path:
    """Write ``metrics.json``, the figures and ``report.html`` of one evaluation to ``out``.

    Reads every split of ``data`` (training: nearest neighbours and the probe; validate +
    test: the real held-out slices), the VQ-VAE, the samples (PNGs, their ``codes.npy`` and,
    if generate wrote one, ``labels.csv``) and, for its training curves only, the PixelCNN
    directory. Every value is a function of these inputs and ``params``. Metric names
    and meanings are listed in the README (section Evaluation); SSIM is ``tf.image.ssim``
    on [0, 1] images, 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
    """
    cfg, data, out = params.evaluate, Path(data), Path(out)
    manifest = read_manifest(data)
    model = load_model(vqvae, VQVAE_FILE)
    generated, sample_codes = load_samples(samples), load_sample_codes(samples)
    labels = load_labels(samples, len(generated))
    if labels is not None:
        fidelity.check_labels(labels, list(condition_specs(manifest)), f"{samples}/{LABELS}")
    with tracking.stage_run("evaluate", params, blocks=("evaluate",)) as run:
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        seed_everything(cfg.seed)
        result = run_evaluation(model, data, generated, sample_codes, cfg, labels)
        with atomic_directory(out) as tmp:
            write_metrics(tmp, result.values)
            write_figures(tmp, result, cfg)
            write_report(tmp, result, cfg, Path(vqvae), Path(pixelcnn), Path(samples))
        run.log_metrics(result.values)
        run.log_artifacts(*(out / name for name in FIGURES), out / REPORT)
        run.finish_pipeline(result.values)
    log.info(
        "evaluate: test SSIM %.3f, C2ST accuracy %.2f (vs reconstructions %.2f; real vs "
        "reconstructions %.2f), recall %.2f, coverage %.2f -> %s",
        result.values["ssim_mean"], result.values["c2st_accuracy"],
        result.values["c2st_reconstructions_accuracy"],
        result.values["c2st_autoencoder_accuracy"], result.values["recall"],
        result.values["coverage"], out,
    )  # fmt: skip
    return out


def load_labels(samples: str | Path, count: int) -> pd.DataFrame | None:
    """The samples' ``labels.csv``, one row per sample PNG in file order; None if absent.

    Raises:
        DataError: naming the file and row, if a sample is missing or listed twice.
    """
    import pandas as pd

    path = Path(samples) / LABELS
    if not path.exists():
        return None
    labels = pd.read_csv(path)
    if "file" not in labels.columns:
        raise DataError(f"{path}: no 'file' column; rerun generate")
    files = [f.name for f in sorted(Path(samples).glob(SAMPLE_GLOB))]
    duplicated = labels["file"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0]) + 2  # 1-based, after the header line
        raise DataError(f"{path}: row {row}: {labels['file'][row - 2]} is listed twice")
    missing = sorted(set(files) - set(labels["file"]))
    if missing or len(files) != count:
        raise DataError(f"{path}: no row for {missing[0] if missing else 'some samples'}")
    return labels.set_index("file").loc[files].reset_index()


def load_sample_codes(samples: str | Path) -> np.ndarray:
    """The sampled code grids ``(N, h, w)`` written beside the sample PNGs."""
    path = Path(samples) / "codes.npy"
    if not path.exists():
        raise DataError(f"{path}: missing; rerun generate")
    return np.load(path).astype(np.int64)


def run_evaluation(
    model: keras.Model,
    data: Path,
    generated: np.ndarray,
    sample_codes: np.ndarray,
    cfg: EvaluateConfig,
    labels: pd.DataFrame | None = None,
) -> Evaluation:
    """Compute every metric; the splits stay uint8 in memory (the training split may be big)."""
    from oasis_vqvae.models import decode_codes, encode_codes

    test, train = load_images(data, "test"), load_images(data, "train")
    validate = load_images(data, "validate")
    if len(test) < 2 or len(train) == 0:
        raise DataError(f"{data}: evaluation needs >= 2 test and >= 1 training slices")
    if generated.shape[1:] != test.shape[1:] or len(sample_codes) != len(generated):
        raise DataError(
            f"samples {generated.shape[1:]} ({len(sample_codes)} code grids) do not match the "
            f"dataset's {test.shape[1:]} slices; rerun generate with this VQ-VAE"
        )
    # Real held-out slices: never seen by either generative model (validate + test).
    held_out = np.concatenate([validate, test])
    metrics.require_images(
        "evaluate", cfg.min_images, real_held_out_slices=len(held_out), samples=len(generated)
    )
    log.info(
        "evaluate: %d test, %d held-out, %d training slices, %d samples; reconstructing",
        len(test), len(held_out), len(train), len(generated),
    )  # fmt: skip
    test_float = metrics.as_float(test)
    # One encoder pass gives both the held-out codes and, decoded, the reconstructions.
    held_codes = encode_codes(model, metrics.as_float(held_out)[..., None], cfg.batch_size)
    held_reconstructed = decode_codes(model, held_codes, cfg.batch_size)[..., 0]
    test_codes, reconstructed = held_codes[len(validate) :], held_reconstructed[len(validate) :]
    ssim = metrics.ssim(test_float, reconstructed, cfg.batch_size)
    log.info("evaluate: nearest real slices of every sample (copies)")
    nearest_test, _ = metrics.nearest_ssim(generated, test, cfg.nearest_candidates)
    nearest_train, train_index = metrics.nearest_ssim(generated, train, cfg.nearest_candidates)
    num_embeddings = int(model.get_layer("vector_quantizer").num_embeddings)
    usage_test = metrics.code_histogram(test_codes, num_embeddings)
    usage_samples = metrics.code_histogram(sample_codes, num_embeddings)
    held_subjects = load_conditions(data, "validate")["subject"].tolist() + (
        load_conditions(data, "test")["subject"].tolist()
    )
    c2st_options = {
        "folds": cfg.c2st.folds, "steps": cfg.c2st.steps,
        "batch_size": cfg.c2st.batch_size, "seed": cfg.c2st.seed, "min_images": cfg.min_images,
        # The classifier is tested on subjects it was not trained on (see two_sample_test).
        "real_groups": held_subjects,
    }  # fmt: skip
    log.info("evaluate: classifier two-sample tests (%d steps each)", cfg.c2st.steps)
    c2st = metrics.two_sample_test(held_out, generated, **c2st_options)
    # Reconstructions stored as the samples are (8-bit), so the tests see no rounding artefact.
    held_reconstructed_uint8 = to_uint8(held_reconstructed)
    c2st_reconstructions = metrics.two_sample_test(
        held_reconstructed_uint8, generated, **c2st_options
    )
    c2st_autoencoder = metrics.two_sample_test(
        held_out, held_reconstructed_uint8, paired=True, **c2st_options
    )
    log.info("evaluate: condition probe (%d steps), coverage, levels, fidelity", cfg.probe.steps)
    probe = probe_report(
        data, train, held_out, held_reconstructed_uint8, len(validate), generated, labels, cfg
    )
    log.info("evaluate: head outlines of real and generated slices (broken samples)")
    bands = outlines.OutlineBands.fit(outlines.outline_features(train), cfg.outline_tolerance)
    sample_outlines = outlines.outline_features(generated)
    broken = outlines.broken_values(
        bands, outlines.outline_features(held_out), np.array(held_subjects),
        sample_outlines, resamples=cfg.bootstrap, seed=cfg.seed,
    )  # fmt: skip
    detail = spectra.detail_values(
        held_out, held_subjects, held_reconstructed_uint8, generated,
        resamples=cfg.bootstrap, seed=cfg.seed,
    )  # fmt: skip
    log.info("evaluate: pairwise MS-SSIM diversity of %d images a set", cfg.diversity_images)
    diversity = diversity_metrics(generated, test, cfg.diversity_images)
    values = {
        **reconstruction_metrics(test_float, reconstructed, ssim),
        **latent_metrics(usage_test, usage_samples),
        "nearest_test_ssim_mean": float(nearest_test.mean()),
        "nearest_train_ssim_mean": float(nearest_train.mean()),
        "copies_share": float(np.mean(nearest_train >= cfg.copy_threshold)),
        **diversity,
        **two_sample_metrics("c2st", c2st),
        **two_sample_metrics("c2st_reconstructions", c2st_reconstructions),
        **two_sample_metrics("c2st_autoencoder", c2st_autoencoder),
        **probe.values,
        **broken,
        **detail.values,
        "test_slices": len(test),
        "held_out_slices": len(held_out),
        "samples": len(generated),
    }
    return Evaluation(
        finite(values), test_float, reconstructed, ssim, generated, held_out, train,
        nearest_test, nearest_train, train_index, usage_test, usage_samples, c2st,
        c2st_reconstructions, c2st_autoencoder, probe, labels, bands, sample_outlines, detail,
    )  # fmt: skip


def two_sample_metrics(key: str, result: metrics.TwoSampleResult) -> dict[str, float]:
    """Accuracy and its Wilson interval under ``key``."""
    return {
        f"{key}_accuracy": result.accuracy,
        f"{key}_ci_low": result.ci_low,
        f"{key}_ci_high": result.ci_high,
    }


def finite(values: dict[str, float | int]) -> dict[str, float | int]:
    """Drop NaN / inf values (e.g. an AUC on a set with one class): JSON and DVC refuse them."""
    dropped = [key for key, value in values.items() if not np.isfinite(value)]
    if dropped:
        log.warning("evaluate: not computable, left out of metrics.json: %s", dropped)
    return {key: value for key, value in values.items() if key not in dropped}


def probe_report(
    data: Path,
    train: np.ndarray,
    held_out: np.ndarray,
    held_reconstructed: np.ndarray,
    validate_count: int,
    generated: np.ndarray,
    labels: pd.DataFrame | None,
    cfg: EvaluateConfig,
) -> fidelity.ProbeReport:
    """Train the probe on real training slices; coverage, level distribution, fidelity.

    ``held_reconstructed``: the VQ-VAE's reconstructions of ``held_out``, in its order.
    """
    import pandas as pd

    specs = condition_specs(read_manifest(data))
    conditions = {split: load_conditions(data, split) for split in ("train", "validate", "test")}
    probe = probes.train_probe(
        train, conditions["train"], specs, steps=cfg.probe.steps,
        batch_size=cfg.probe.batch_size, learning_rate=cfg.probe.learning_rate,
        seed=cfg.probe.seed,
    )  # fmt: skip
    held = probe.predict(held_out)
    sampled = probe.predict(generated)
    held_conditions = pd.concat([conditions["validate"], conditions["test"]], ignore_index=True)
    subjects = np.asarray(held_conditions["subject"])
    options = {"resamples": cfg.bootstrap, "seed": cfg.seed}
    result = fidelity.ProbeReport()
    result.values |= fidelity.coverage_values(
        held["features"], subjects, sampled["features"], cfg.coverage.k, **options
    )
    test_predictions = {name: value[validate_count:] for name, value in held.items()}
    if SLICE_LEVEL in held:
        result.held_levels = np.clip(held[SLICE_LEVEL], 0.0, 1.0)
        result.sample_levels = np.clip(sampled[SLICE_LEVEL], 0.0, 1.0)
        distance = fidelity.level_distance(
            result.held_levels, subjects, result.sample_levels, cfg.level_bins, **options
        )
        result.values |= distance.as_metrics("level_tv_distance")
        ceiling = fidelity.level_ceiling(probe, test_predictions, conditions["test"], **options)
        if ceiling is not None:
            result.values |= ceiling.as_metrics("slice_level_mae_real")
    else:
        result.notes.append("the training slices have one slice level only: no level probe")
    if labels is None:
        result.notes.append(
            f"the samples have no {LABELS} (an unconditional model, or a generate stage that "
            "does not write one): condition fidelity is not measured"
        )
    else:
        rows, notes = fidelity.condition_fidelity(
            probe, test_predictions, conditions["test"], sampled, labels,
            probe.predict(held_reconstructed[validate_count:]), **options,
        )  # fmt: skip
        result.fidelity, result.notes = rows, result.notes + notes
        result.values |= fidelity.fidelity_values(rows)
    return result


def reconstruction_metrics(
    test: np.ndarray, reconstructed: np.ndarray, ssim: np.ndarray
) -> dict[str, float]:
    """SSIM summary, MS-SSIM, PSNR and MSE of the test reconstructions."""
    mse = metrics.mse(test, reconstructed)
    return {
        "ssim_mean": float(ssim.mean()),
        "ssim_std": float(ssim.std()),
        "ssim_min": float(ssim.min()),
        "ssim_p05": float(np.percentile(ssim, 5)),
        "ms_ssim_mean": float(metrics.ms_ssim(test, reconstructed).mean()),
        "psnr_mean": float(metrics.psnr(mse).mean()),
        "mse_mean": float(mse.mean()),
    }


def latent_metrics(usage_test: np.ndarray, usage_samples: np.ndarray) -> dict[str, float | int]:
    """Perplexity and codes in use per side, and KL(samples || test) of the histograms."""
    return {
        "perplexity_test": metrics.perplexity(usage_test),
        "codes_used_test": int(np.count_nonzero(usage_test)),
        "perplexity_samples": metrics.perplexity(usage_samples),
        "codes_used_samples": int(np.count_nonzero(usage_samples)),
        "code_kl_samples_vs_test": metrics.code_kl(usage_samples, usage_test),
    }


def diversity_metrics(generated: np.ndarray, test: np.ndarray, limit: int) -> dict[str, float]:
    """Mean pairwise MS-SSIM among samples and, for reference, among real test slices."""
    if len(generated) < 2:
        raise DataError("diversity needs at least 2 samples; raise generate.count")
    return {
        "diversity_ms_ssim_samples": metrics.mean_pairwise_ms_ssim(
            generated, limit, DIVERSITY_SEED
        ),
        "diversity_ms_ssim_real": metrics.mean_pairwise_ms_ssim(test, limit, DIVERSITY_SEED),
    }


def write_figures(out: Path, result: Evaluation, cfg: EvaluateConfig) -> None:
    """Write every PNG of :data:`FIGURES` to ``out``."""
    plots.histogram(result.ssim, out / FIGURES[0], "SSIM of test reconstructions", "SSIM")
    chosen = best_median_worst(result.ssim, SHOWN)
    plots.paired_grid(
        result.test[chosen], result.reconstructed[chosen], out / FIGURES[1],
        "Best, median and worst test reconstructions: originals (top), reconstructions (bottom)",
        labels=[f"SSIM {result.ssim[i]:.3f}" for i in chosen],
    )  # fmt: skip
    plots.histograms(
        {"nearest test slice": result.nearest_test, "nearest training slice": result.nearest_train},
        out / FIGURES[2], "SSIM of each sample to its nearest real slice", "SSIM",
        marker=(cfg.copy_threshold, f"copy threshold {cfg.copy_threshold:g}"),
    )  # fmt: skip
    shown = np.argsort(-result.nearest_train)[: 2 * SHOWN]  # the likeliest copies first
    plots.paired_grid(
        result.samples[shown], metrics.as_float(result.train[result.nearest_train_index[shown]]),
        out / FIGURES[3], "Samples (top) beside their nearest training slices (bottom)",
        labels=[f"SSIM {result.nearest_train[i]:.3f}" for i in shown],
    )  # fmt: skip
    plots.code_usage(
        {"test slices": result.usage_test, "generated": result.usage_samples},
        out / FIGURES[4], "Codebook usage: real test slices vs generated samples",
    )  # fmt: skip
    for test, name, real, generated in (
        (result.c2st, FIGURES[5], "real held-out slices", "samples"),
        (result.c2st_reconstructions, FIGURES[6], "reconstructions of real held-out slices",
         "samples"),
        (result.c2st_autoencoder, FIGURES[12], "real held-out slices", "their reconstructions"),
    ):  # fmt: skip
        plots.histograms(
            {real: np.array(test.real_scores), generated: np.array(test.generated_scores)},
            out / name, f"Two-sample test: {generated} vs {real}\nP(real) of each held-out image",
            "P(real)", bins=np.linspace(0, 1, 21), marker=(0.5, "decision threshold"),
        )  # fmt: skip
    write_level_figures(out, result, cfg)
    write_condition_grid(out / FIGURES[9], result)
    write_giveaways(out / FIGURES[10], result.c2st, result.samples, result.held_out)
    write_worst_outlines(out / FIGURES[11], result)
    plots.spectrum_ratios(
        {name: result.detail.spectra[name] / result.detail.spectra["real"]
         for name in ("reconstructions", "samples")},
        out / FIGURES[13], "Fine detail: radial power spectrum relative to real held-out slices",
    )  # fmt: skip


def write_giveaways(
    path: Path, c2st: metrics.TwoSampleResult, samples: np.ndarray, real: np.ndarray
) -> None:
    """Draw `giveaways`: what tells samples from real slices, as the C2ST saw it."""
    images, scores = giveaways(c2st, samples, real, GIVEAWAYS)
    plots.image_grid(
        images, path,
        "Two-sample test vs real held-out slices, P(real) of each image:\nsamples scored "
        "least real (top), most real (middle); real slices scored least real (bottom)",
        labels=[f"P(real) {score:.2f}" for score in scores], cols=len(images) // 3,
    )  # fmt: skip


def giveaways(
    c2st: metrics.TwoSampleResult, samples: np.ndarray, real: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(3 * n, H, W)`` in [0, 1] and their P(real), ``n = min(count, scored)``.

    The ``n`` samples the C2ST's classifiers scored least real, the ``n`` they scored most
    real, then the ``n`` real slices they scored least real; each score comes from the
    classifier that never saw the image.
    """
    generated_scores, real_scores = np.array(c2st.generated_scores), np.array(c2st.real_scores)
    generated_index, real_index = np.array(c2st.generated_index), np.array(c2st.real_index)
    count = min(count, len(generated_scores), len(real_scores))
    by_score = np.argsort(generated_scores, kind="stable")
    picked = [by_score[:count], by_score[::-1][:count]]
    least_real = np.argsort(real_scores, kind="stable")[:count]
    images = np.concatenate(
        [metrics.as_float(samples[generated_index[order]]) for order in picked]
        + [metrics.as_float(real[real_index[least_real]])]
    )
    scores = np.concatenate(
        [generated_scores[order] for order in picked] + [real_scores[least_real]]
    )
    return images, scores


def write_worst_outlines(path: Path, result: Evaluation) -> None:
    """The samples whose head outlines lie farthest outside (or nearest to) the real bands."""
    bands, features = result.outline_bands, result.sample_outlines
    worst = np.argsort(-bands.excess(features).max(axis=1), kind="stable")[:WORST_OUTLINES]
    reasons = bands.reasons(features[worst])
    plots.image_grid(
        result.samples[worst], path,
        "Samples with the least real head outlines (broken: outside the real slices' bands)",
        labels=[f"broken: {reason}" if reason else "whole" for reason in reasons],
    )  # fmt: skip


def write_level_figures(out: Path, result: Evaluation, cfg: EvaluateConfig) -> None:
    """Predicted-level histograms, and samples sorted by their predicted level."""
    probe, bins = result.probe, np.linspace(0, 1, cfg.level_bins + 1)
    if probe.sample_levels is None:  # no level probe: placeholders keep the outputs DVC expects
        empty = np.zeros(0)
        plots.histograms({"no level probe": empty}, out / FIGURES[7], "", "", bins=bins)
        plots.image_grid(result.samples[:1], out / FIGURES[8], "No level probe")
        return
    plots.histograms(
        {"real held-out slices": probe.held_levels, "samples": probe.sample_levels},
        out / FIGURES[7], "Slice level predicted by the probe", "slice level (0 = lowest)",
        bins=bins, share=True,  # as the total-variation distance compares them
    )  # fmt: skip
    order = np.argsort(probe.sample_levels, kind="stable")
    shown = order[np.linspace(0, len(order) - 1, min(BY_LEVEL_SHOWN, len(order))).astype(int)]
    broken = result.outline_bands.broken(result.sample_outlines[shown])
    plots.image_grid(
        result.samples[shown], out / FIGURES[8],
        "Samples sorted by predicted slice level (broken: the outline check rejects the head)",
        labels=[
            f"{probe.sample_levels[i]:.2f}" + (" broken" if bad else "")
            for i, bad in zip(shown, broken, strict=True)
        ],
    )  # fmt: skip


def write_condition_grid(path: Path, result: Evaluation) -> None:
    """Samples in a table: rows = values of the first subject condition, columns = levels.

    Columns bin the requested slice level when the model was conditioned on it, else the
    probe's predicted level. Rows: the categorical values, or thirds of a continuous range,
    or one row when the samples have no subject condition.
    """
    labels, samples = result.labels, result.samples
    names = [] if labels is None else [c for c in labels.columns if c not in ("file", SLICE_LEVEL)]
    if labels is not None and SLICE_LEVEL in labels:
        levels, level_kind = labels[SLICE_LEVEL].to_numpy(float), "requested"
    elif result.probe.sample_levels is not None:
        levels, level_kind = result.probe.sample_levels, "predicted"
    else:
        levels, level_kind = np.full(len(samples), 0.5), "unknown"
    rows, row_labels, ylabel = [np.ones(len(samples), bool)], ["all samples"], ""
    if names:
        rows, row_labels = condition_rows(labels[names[0]])
        ylabel = names[0]
    edges = np.linspace(0, 1, GRID_LEVELS + 1)
    column = np.clip(np.digitize(levels, edges[1:-1]), 0, GRID_LEVELS - 1)
    cells = [[_first(samples, row & (column == c)) for c in range(GRID_LEVELS)] for row in rows]
    plots.table_grid(
        cells, path, "Samples by condition and slice level",
        row_labels, [f"{edges[c]:.2f}-{edges[c + 1]:.2f}" for c in range(GRID_LEVELS)],
        xlabel=f"{level_kind} slice level", ylabel=ylabel,
    )  # fmt: skip


def condition_rows(values: pd.Series) -> tuple[list[np.ndarray], list[str]]:
    """Row masks and labels: one per distinct value, or thirds of a numeric range."""
    known = values.dropna()
    distinct = sorted(known.unique(), key=lambda v: (str(type(v)), v))
    if len(distinct) <= 8 or not np.issubdtype(known.dtype, np.number):
        return [(values == v).to_numpy() for v in distinct], [f"{v}" for v in distinct]
    cuts = np.quantile(known.to_numpy(float), [0, 1 / 3, 2 / 3, 1])
    numbers = values.to_numpy(float)
    masks = [(numbers >= cuts[i]) & (numbers <= cuts[i + 1]) for i in range(3)]
    return masks, [f"{cuts[i]:.3g}-{cuts[i + 1]:.3g}" for i in range(3)]


def _first(images: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    where = np.flatnonzero(mask)
    return images[where[0]] if len(where) else None


def best_median_worst(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` best, median and worst scores, best first, without repeats."""
    order = np.argsort(-scores, kind="stable")
    middle = max(0, len(order) // 2 - count // 2)
    picked = [*order[:count], *order[middle : middle + count], *order[-count:]]
    return np.array(list(dict.fromkeys(picked)))


def write_report(
    out: Path, result: Evaluation, cfg: EvaluateConfig, vqvae: Path, pixelcnn: Path, samples: Path
) -> Path:
    """``out/report.html``: the metrics and every figure of the evaluation on one page."""
    values = result.values
    figure = report.figure
    sections = [
        ("Metrics", report.metrics_table(values)),
        ("VQ-VAE training", figure(vqvae / "loss_curves.png", "VQ-VAE loss curves")),
        ("VQ-VAE reconstructions (validation)", figure(vqvae / "reconstructions.png", "")),
        ("PixelCNN training", figure(pixelcnn / "loss_curves.png", "PixelCNN loss curves")),
        ("SSIM of test reconstructions", figure(out / FIGURES[0], SSIM_NOTE)),
        ("Best, median and worst reconstructions", figure(out / FIGURES[1], "")),
        ("Generated slices", figure(samples / "grid.png", "")),
        ("Realism and memorisation", figure(out / FIGURES[2], nearest_note(values, cfg))),
        ("Samples beside their nearest training slices", figure(out / FIGURES[3], "")),
        ("Code usage: real vs generated", figure(out / FIGURES[4], code_note(values))),
        ("Two-sample tests", two_sample_section(out, result)),
        ("Coverage of the real distribution", report.paragraph(coverage_note(values, cfg))),
        ("Broken heads", figure(out / FIGURES[11], broken_note(values, cfg))),
        ("Fine detail", figure(out / FIGURES[13], detail_note(values))),
        ("Slice-level distribution", level_section(out, result, cfg)),
        ("Condition fidelity", fidelity_section(out, result)),
    ]
    return report.write_report(out / REPORT, "OASIS VQ-VAE evaluation", sections)


def two_sample_section(out: Path, result: Evaluation) -> str:
    """The three C2STs in words, each with its score histogram."""
    return (
        report.paragraph(c2st_note(result.c2st, "real held-out slices (validate + test)"))
        + report.figure(out / FIGURES[5], "")
        + report.paragraph(
            c2st_note(result.c2st_reconstructions, "VQ-VAE reconstructions of those slices")
            + " Against reconstructions, the autoencoder's blur is on both sides: what the "
            "classifier still finds is the prior's doing."
        )
        + report.figure(out / FIGURES[6], "")
        + report.paragraph(
            c2st_note(result.c2st_autoencoder, "their reconstructions", "Real held-out slices")
            + " Each slice and its reconstruction fall in the same fold. A perfect prior's "
            "samples would look like reconstructions, so this is the lowest accuracy the first "
            "test can reach with this VQ-VAE: above 50%, the autoencoder gives samples away "
            "whatever the prior does."
        )
        + report.figure(out / FIGURES[12], "")
        + report.paragraph(
            "What gives the samples away: the images the classifiers against real slices found "
            "least and most real (each scored by the classifier that did not train on it)."
        )
        + report.figure(out / FIGURES[10], "")
    )


def coverage_note(values: dict, cfg: EvaluateConfig) -> str:
    """Precision / recall / density / coverage in words."""

    def show(key: str) -> str:
        return f"{values[key]:.3f} [{values[key + '_ci_low']:.3f}, {values[key + '_ci_high']:.3f}]"

    return (
        f"In the probe's 64-d feature space (a CNN trained on real training slices to predict "
        f"slice level and subject attributes), with k = {cfg.coverage.k}: precision "
        f"{show('precision')} and density {show('density')} (samples inside the real slices' "
        f"k-NN balls: realism), recall {show('recall')} and coverage {show('coverage')} (real "
        "held-out slices reached by samples: diversity; a dropped level or anatomy lowers them). "
        "95% bootstrap intervals: samples resampled for precision and density, real subjects "
        "for recall and coverage."
    )


def broken_note(values: dict, cfg: EvaluateConfig) -> str:
    """The broken shares in words, and what they mean for a montage."""

    def show(key: str) -> str:
        low, high = values[key + "_ci_low"], values[key + "_ci_high"]
        return f"{100 * values[key]:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"

    whole = (1.0 - values["broken_share"]) ** BY_LEVEL_SHOWN
    return (
        f"Broken samples: {show('broken_share')} (Wilson interval); real held-out slices: "
        f"{show('broken_share_real')} (bootstrap over subjects; the check's false alarms). "
        "An image is broken when its head (pixels above "
        f"{outlines.FOREGROUND:g}, holes filled) has a share outside the range the real "
        f"training slices span, widened by {cfg.outline_tolerance:g}: the largest piece's share "
        "(fragments), the overlap with its moment-matched ellipse (squared-off, dented or "
        "bulging heads), the frame edge it touches (spills) or its area (oversized heads). "
        f"At this rate, {BY_LEVEL_SHOWN} samples are all whole with probability {whole:.2f}."
    )


def detail_note(values: dict) -> str:
    """The fine-detail ratios in words."""

    def show(key: str) -> str:
        return f"{values[key]:.3f} [{values[key + '_ci_low']:.3f}, {values[key + '_ci_high']:.3f}]"

    return (
        "Power of each image (mean removed) at each spatial frequency, averaged over a set and "
        "divided by the real held-out slices' average; the fine detail is its geometric mean "
        "from half the Nyquist frequency up (1 = as much fine texture as real slices, below 1 "
        f"smoother, above 1 noisier): samples {show('fine_detail_samples')}, the VQ-VAE's "
        f"reconstructions {show('fine_detail_reconstructions')} (95% bootstrap intervals, real "
        "slices resampled by subject). The band holds image noise too, which a VQ-VAE removes, "
        "so compare the samples with the reconstructions: where they fall well below them, the "
        "decoder draws the prior's code arrangements smoother than real ones."
    )


def level_section(out: Path, result: Evaluation, cfg: EvaluateConfig) -> str:
    """The predicted-level histograms, their distance and the samples sorted by level."""
    values = result.values
    if "level_tv_distance" not in values:
        return report.paragraph("; ".join(result.probe.notes))
    ceiling = (
        f" The probe's mean absolute error on real test slices is "
        f"{values['slice_level_mae_real']:.3f}."
        if "slice_level_mae_real" in values
        else ""
    )
    text = (
        f"A probe trained on real training slices predicts each image's slice level. Total "
        f"variation between the histograms ({cfg.level_bins} bins) of real held-out slices "
        f"and samples: {values['level_tv_distance']:.3f}, 95% bootstrap interval "
        f"[{values['level_tv_distance_ci_low']:.3f}, {values['level_tv_distance_ci_high']:.3f}] "
        f"(0 = same distribution; finite sets give a small positive value even then).{ceiling}"
    )
    return (
        report.paragraph(text)
        + report.figure(out / FIGURES[7], "")
        + report.figure(out / FIGURES[8], "Samples sorted by predicted slice level")
    )


def fidelity_section(out: Path, result: Evaluation) -> str:
    """The per-condition table (real ceiling, samples, shuffled floor) and the grid."""
    rows = [
        [row.condition, row.metric, *(_show(getattr(row, side)) for side in fidelity.SIDES)]
        for row in result.probe.fidelity
    ]
    intro = (
        "A probe trained on real training slices predicts each condition; it is scored on "
        "real test slices (its ceiling), on the VQ-VAE's reconstructions of those slices "
        "(the ceiling through this decoder: what a perfect prior could reach), on the samples "
        "against the conditions they were generated with, and against those conditions "
        "shuffled among the samples (the floor). 95% bootstrap intervals (over subjects for "
        "real slices and their reconstructions)."
    )
    columns = ["condition", "metric", "real test", "reconstructions", "samples", "shuffled"]
    table = report.table(columns, rows) if rows else ""
    notes = report.paragraph("; ".join(result.probe.notes)) if result.probe.notes else ""
    return report.paragraph(intro) + table + notes + report.figure(out / FIGURES[9], GRID_NOTE)


GRID_NOTE = (
    "Rows: values of the first subject condition the samples were generated with; columns: "
    "slice-level bins (requested if the model is conditioned on slice level, else predicted). "
    "One sample per cell, empty where no sample falls."
)


def _show(estimate: metrics.Estimate | None) -> str:
    if estimate is None:
        return "n/a"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


SSIM_NOTE = (
    "SSIM per test slice on [0, 1] images (8-bit slices / 255): tf.image.ssim, 11x11 Gaussian "
    "window, sigma 1.5, K1 0.01, K2 0.03, valid windows averaged."
)


def nearest_note(values: dict, cfg: EvaluateConfig) -> str:
    """Caption of the realism / memorisation figure."""
    search = (
        "exact search over every slice"
        if cfg.nearest_candidates == 0
        else f"exact SSIM among the {cfg.nearest_candidates} nearest by L2"
    )
    return (
        f"Mean SSIM to the nearest test slice {values['nearest_test_ssim_mean']:.3f} (realism), "
        f"to the nearest training slice {values['nearest_train_ssim_mean']:.3f}; "
        f"{values['copies_share']:.0%} of samples at or above {cfg.copy_threshold:g} "
        f"(likely copies); {search}. Diversity (mean pairwise MS-SSIM, lower = more varied): "
        f"samples {values['diversity_ms_ssim_samples']:.3f}, "
        f"real test slices {values['diversity_ms_ssim_real']:.3f}."
    )


def code_note(values: dict) -> str:
    """Caption of the code-usage figure."""
    return (
        f"Perplexity {values['perplexity_test']:.1f} ({values['codes_used_test']} codes) on the "
        f"test slices, {values['perplexity_samples']:.1f} ({values['codes_used_samples']} codes) "
        f"in the samples; KL(samples || test) = {values['code_kl_samples_vs_test']:.3f} nats."
    )


def c2st_note(c2st: metrics.TwoSampleResult, real: str, generated: str = "Samples") -> str:
    """One two-sample test's result in words."""
    verdict = (
        "the classifier cannot tell them apart"
        if c2st.ci_low <= 0.5 <= c2st.ci_high
        else "the classifier tells them apart"
        if c2st.ci_low > 0.5
        else "the classifier does worse than chance (too little data or training)"
    )
    return (
        f"{generated} vs {real}: {c2st.folds} small CNNs, each trained on up to {c2st.trained_on} "
        f"images ({c2st.steps} steps) and scoring the fold of subjects it did not see, "
        f"classify {c2st.held_out} images (half each) with accuracy "
        f"{c2st.accuracy:.1%}, 95% Wilson interval [{c2st.ci_low:.1%}, {c2st.ci_high:.1%}]: "
        f"{verdict} (50% = indistinguishable)."
    )
