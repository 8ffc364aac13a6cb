"""Stage evaluate: how well the VQ-VAE reconstructs the test split, how real the samples look."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from oasis_vqvae import plots, report, tracking
from oasis_vqvae.config import Params
from oasis_vqvae.data.shards import load_images, read_manifest
from oasis_vqvae.stages.common import VQVAE_FILE, load_model, write_metrics
from oasis_vqvae.stages.extract_codes import perplexity
from oasis_vqvae.stages.generate import load_samples
from oasis_vqvae.storage import atomic_directory

log = logging.getLogger(__name__)

WORST_SHOWN = 8


def evaluate(
    params: Params,
    data: str | Path,
    vqvae: str | Path,
    pixelcnn: str | Path,
    samples: str | Path,
    out: str | Path,
) -> Path:
    """Write ``metrics.json`` (SSIM, PSNR, MSE, perplexity, sample realism), figures, a report.

    ``report.html`` holds the metrics and the figures of every stage on one page (the
    PixelCNN directory is read for its training curves only).

    SSIM is ``tf.image.ssim`` on images scaled to [0, 1] (max_val 1, 11x11 Gaussian window,
    sigma 1.5, k1 0.01, k2 0.03), computed per test slice and averaged.
    """
    from oasis_vqvae.models import encode_codes

    cfg, data, out = params.evaluate, Path(data), Path(out)
    manifest = read_manifest(data)
    model = load_model(vqvae, VQVAE_FILE)
    generated = load_samples(samples)
    with tracking.stage_run("evaluate", params, blocks=("evaluate",)) as run:
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        test = load_images(data, "test").astype(np.float32) / 255.0
        reconstructed = model.predict(test[..., None], batch_size=cfg.batch_size, verbose=0)[..., 0]
        ssim = ssim_per_image(test, reconstructed)
        mse = np.mean(np.square(test - reconstructed), axis=(1, 2))
        psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))
        test_codes = encode_codes(model, test[..., None], cfg.batch_size)  # already in memory
        usage = np.bincount(
            test_codes.ravel(), minlength=model.get_layer("vector_quantizer").num_embeddings
        )
        nearest = nearest_ssim(generated, test, cfg.batch_size)
        metrics = {
            "ssim_mean": float(ssim.mean()),
            "ssim_std": float(ssim.std()),
            "ssim_min": float(ssim.min()),
            "psnr_mean": float(psnr.mean()),
            "mse_mean": float(mse.mean()),
            "perplexity_test": perplexity(usage),
            "codes_used_test": int(np.count_nonzero(usage)),
            "nearest_test_ssim_mean": float(nearest.mean()),
            "test_slices": len(test),
            "samples": len(generated),
        }
        with atomic_directory(out) as tmp:
            write_metrics(tmp, metrics)
            plots.histogram(
                ssim, tmp / "ssim_histogram.png", "SSIM of test reconstructions", "SSIM"
            )
            worst = np.argsort(ssim)[:WORST_SHOWN]
            plots.paired_grid(
                test[worst], reconstructed[worst], tmp / "worst_reconstructions.png",
                "Worst test reconstructions: originals (top), reconstructions (bottom)",
                labels=[f"SSIM {ssim[i]:.2f}" for i in worst],
            )  # fmt: skip
            write_report(tmp, metrics, Path(vqvae), Path(pixelcnn), Path(samples))
        run.log_metrics(metrics)
        run.log_artifacts(
            out / "ssim_histogram.png", out / "worst_reconstructions.png", out / "report.html"
        )
        run.finish_pipeline(metrics)
    log.info(
        "evaluate: test SSIM %.3f ± %.3f -> %s", metrics["ssim_mean"], metrics["ssim_std"], out
    )
    return out


def write_report(out: Path, metrics: dict, vqvae: Path, pixelcnn: Path, samples: Path) -> Path:
    """``out/report.html``: the metrics and every figure of the run on one page."""
    figures = [
        ("VQ-VAE training", vqvae / "loss_curves.png"),
        ("VQ-VAE reconstructions (validation)", vqvae / "reconstructions.png"),
        ("PixelCNN training", pixelcnn / "loss_curves.png"),
        ("Generated slices", samples / "grid.png"),
        ("SSIM of test reconstructions", out / "ssim_histogram.png"),
        ("Worst test reconstructions", out / "worst_reconstructions.png"),
    ]
    sections = [("Metrics", report.metrics_table(metrics))]
    sections += [(title, report.embedded_image(path, title)) for title, path in figures]
    return report.write_report(out / "report.html", "OASIS VQ-VAE evaluation", sections)


def ssim_per_image(images: np.ndarray, others: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """SSIM of each image ``(N, H, W)`` in [0, 1] to its counterpart in ``others``."""
    import tensorflow as tf

    scores = [
        tf.image.ssim(
            images[i : i + batch_size, ..., None], others[i : i + batch_size, ..., None], 1.0
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def nearest_ssim(queries: np.ndarray, references: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """For each query image, its highest SSIM to any reference image."""
    best = np.full(len(queries), -1.0, dtype=np.float32)
    for index, query in enumerate(queries):
        tiled = np.broadcast_to(query, references.shape)
        best[index] = ssim_per_image(tiled, references, batch_size).max()
    return best
