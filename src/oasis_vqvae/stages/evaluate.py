"""Stage evaluate: are the synthetic slices realistic, diverse and new enough to train on.

Reconstruction (how well the VQ-VAE compresses the test split), latent (does the prior use
the codebook as the real slices do), samples (realism, memorisation, diversity) and a
classifier two-sample test, in ``metrics.json``, figures and one self-contained report.
The metric functions live in :mod:`oasis_vqvae.metrics`; this module only wires them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oasis_vqvae import metrics, plots, report, tracking
from oasis_vqvae.config import EvaluateConfig, Params
from oasis_vqvae.data.shards import load_images, read_manifest
from oasis_vqvae.errors import DataError
from oasis_vqvae.stages.common import VQVAE_FILE, load_model, write_metrics
from oasis_vqvae.stages.generate import load_samples
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras

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
)
"""PNGs written to the evaluation directory (declared as DVC plots in dvc.yaml)."""
REPORT = "report.html"


@dataclass
class Evaluation:
    """Everything the figures and the report are drawn from."""

    values: dict[str, float | int]
    """The flat ``metrics.json``."""
    test: np.ndarray
    reconstructed: np.ndarray
    ssim: np.ndarray
    samples: np.ndarray
    train: np.ndarray
    nearest_test: np.ndarray
    nearest_train: np.ndarray
    nearest_train_index: np.ndarray
    usage_test: np.ndarray
    usage_samples: np.ndarray
    c2st: metrics.TwoSampleResult


def evaluate(
    params: Params,
    data: str | Path,
    vqvae: str | Path,
    pixelcnn: str | Path,
    samples: str | Path,
    out: str | Path,
) -> Path:
    """Write ``metrics.json``, the figures and ``report.html`` of one evaluation to ``out``.

    Reads the test and training splits of ``data``, the VQ-VAE, the samples (PNGs and their
    ``codes.npy``) and, for its training curves only, the PixelCNN directory. Metric names
    and meanings are listed in the README (section Evaluation); SSIM is ``tf.image.ssim``
    on [0, 1] images, 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
    """
    cfg, data, out = params.evaluate, Path(data), Path(out)
    manifest = read_manifest(data)
    model = load_model(vqvae, VQVAE_FILE)
    generated, sample_codes = load_samples(samples), load_sample_codes(samples)
    with tracking.stage_run("evaluate", params, blocks=("evaluate",)) as run:
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        result = run_evaluation(model, data, generated, sample_codes, cfg)
        with atomic_directory(out) as tmp:
            write_metrics(tmp, result.values)
            write_figures(tmp, result, cfg)
            write_report(tmp, result, cfg, Path(vqvae), Path(pixelcnn), Path(samples))
        run.log_metrics(result.values)
        run.log_artifacts(*(out / name for name in FIGURES), out / REPORT)
        run.finish_pipeline(result.values)
    log.info(
        "evaluate: test SSIM %.3f, C2ST accuracy %.2f -> %s",
        result.values["ssim_mean"], result.values["c2st_accuracy"], out,
    )  # fmt: skip
    return out


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
) -> Evaluation:
    """Compute every metric; the splits stay uint8 in memory (the training split may be big)."""
    from oasis_vqvae.models import decode_codes, encode_codes

    test, train = load_images(data, "test"), load_images(data, "train")
    if len(test) < 2 or len(train) == 0:
        raise DataError(f"{data}: evaluation needs >= 2 test and >= 1 training slices")
    if generated.shape[1:] != test.shape[1:] or len(sample_codes) != len(generated):
        raise DataError(
            f"samples {generated.shape[1:]} ({len(sample_codes)} code grids) do not match the "
            f"dataset's {test.shape[1:]} slices; rerun generate with this VQ-VAE"
        )
    test_float = metrics.as_float(test)
    # One encoder pass gives both the test codes and, decoded, the reconstructions.
    test_codes = encode_codes(model, test_float[..., None], cfg.batch_size)
    reconstructed = decode_codes(model, test_codes, cfg.batch_size)[..., 0]
    ssim = metrics.ssim(test_float, reconstructed, cfg.batch_size)
    nearest_test, _ = metrics.nearest_ssim(generated, test, cfg.nearest_candidates)
    nearest_train, train_index = metrics.nearest_ssim(generated, train, cfg.nearest_candidates)
    num_embeddings = int(model.get_layer("vector_quantizer").num_embeddings)
    usage_test = metrics.code_histogram(test_codes, num_embeddings)
    usage_samples = metrics.code_histogram(sample_codes, num_embeddings)
    c2st = metrics.two_sample_test(
        test, generated, held_out=cfg.c2st.held_out, steps=cfg.c2st.steps,
        batch_size=cfg.c2st.batch_size, max_seconds=cfg.c2st.max_seconds, seed=cfg.c2st.seed,
    )  # fmt: skip
    values = {
        **reconstruction_metrics(test_float, reconstructed, ssim),
        **latent_metrics(usage_test, usage_samples),
        "nearest_test_ssim_mean": float(nearest_test.mean()),
        "nearest_train_ssim_mean": float(nearest_train.mean()),
        "copies_share": float(np.mean(nearest_train >= cfg.copy_threshold)),
        **diversity_metrics(generated, test, cfg.diversity_images),
        "c2st_accuracy": c2st.accuracy,
        "c2st_ci_low": c2st.ci_low,
        "c2st_ci_high": c2st.ci_high,
        "test_slices": len(test),
        "samples": len(generated),
    }
    return Evaluation(
        values, test_float, reconstructed, ssim, generated, train,
        nearest_test, nearest_train, train_index, usage_test, usage_samples, c2st,
    )  # fmt: skip


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
    plots.histograms(
        {"real (held out)": np.array(result.c2st.real_scores),
         "generated (held out)": np.array(result.c2st.generated_scores)},
        out / FIGURES[5], "Two-sample test: classifier's P(real) on held-out images",
        "P(real)", bins=np.linspace(0, 1, 21), marker=(0.5, "decision threshold"),
    )  # fmt: skip


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
    c2st, values = result.c2st, result.values
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
        ("Two-sample test", report.paragraph(c2st_note(c2st)) + figure(out / FIGURES[5], "")),
    ]
    return report.write_report(out / REPORT, "OASIS VQ-VAE evaluation", sections)


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


def c2st_note(c2st: metrics.TwoSampleResult) -> str:
    """The two-sample test result in words."""
    verdict = (
        "the classifier cannot tell generated from real slices"
        if c2st.ci_low <= 0.5 <= c2st.ci_high
        else "the classifier tells generated from real slices apart"
        if c2st.ci_low > 0.5
        else "the classifier does worse than chance (too little data or training)"
    )
    return (
        f"A small CNN trained on {c2st.trained_on} images ({c2st.steps} steps) classifies "
        f"{c2st.held_out} held-out images (half real test slices, half samples) with accuracy "
        f"{c2st.accuracy:.1%}, 95% Wilson interval [{c2st.ci_low:.1%}, {c2st.ci_high:.1%}]: "
        f"{verdict} (50% = indistinguishable)."
    )
