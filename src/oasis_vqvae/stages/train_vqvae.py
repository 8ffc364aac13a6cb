"""Stage train-vqvae: learn to compress slices into a grid of discrete codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oasis_vqvae import plots, tracking, training
from oasis_vqvae.config import Params, VQVAEConfig
from oasis_vqvae.data.shards import load_split, read_manifest
from oasis_vqvae.distribute import make_strategy
from oasis_vqvae.errors import ConfigError, TrainingError
from oasis_vqvae.precision import Policy, as_float32, resolve_precision, with_loss_scaling
from oasis_vqvae.stages.common import VQVAE_FILE, seed_everything, write_metrics
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras
    import tensorflow as tf

log = logging.getLogger(__name__)

GRID_IMAGES = 8
COLLAPSE_CHECK_STEPS = 500  # optimizer steps before a constant-image VQ-VAE counts as collapsed


def train_vqvae(params: Params, data: str | Path, out: str | Path) -> Path:
    """Train the VQ-VAE on the train split of ``data``; write the model and its report to ``out``.

    ``out`` gets ``vqvae.keras``, ``history.csv`` (one row per epoch), ``loss_curves.png``,
    ``reconstructions.png`` (validation slices above their reconstructions) and
    ``metrics.json`` (the best epoch's validation metrics). Resumes an interrupted run.
    """
    import keras

    from oasis_vqvae.models import VQVAETrainer

    cfg, data, out = params.vqvae, Path(data), Path(out)
    manifest = read_manifest(data)
    image_size = int(manifest["image_shape"][0])
    seed_everything(cfg.seed)
    strategy = make_strategy(cfg.strategy)
    policy = resolve_precision(cfg.precision)
    with strategy.scope():  # variables are created where the strategy places them
        model = build_model(cfg, image_size, policy)  # fails on a misfit before any training
    with tracking.stage_run("train-vqvae", params, blocks=("vqvae",)) as run:
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        run.log_dataset(data, manifest["content_hash"], context="training")
        run.set_tags({"oasis.precision": policy})

        def train(epoch: int) -> tf.data.Dataset:  # each epoch's order from (seed, epoch) alone
            seed = training.epoch_seed(cfg.seed, epoch)
            return load_split(data, "train", batch_size=cfg.batch_size, shuffle=True, seed=seed)

        validation = load_split(data, "validate", batch_size=cfg.batch_size)
        with strategy.scope():
            trainer = VQVAETrainer(model, data_variance=_pixel_variance(train(0)))
            optimizer = with_loss_scaling(keras.optimizers.Adam(cfg.learning_rate), policy)
            trainer.compile(optimizer=optimizer)
            trainer.build((None, image_size, image_size, 1))
        workdir = training.checkpoint_dir(out)
        history = training.fit_resumable(
            trainer, train, validation,
            epochs=cfg.epochs, workdir=workdir,
            key=training.run_key(training.key_params(cfg, policy), manifest["content_hash"]),
            monitor="val_loss", mode="min", run=run,
            checks=[collapse_check(cfg.learning_rate, COLLAPSE_CHECK_STEPS)],
        )  # fmt: skip
        best = history.loc[history["val_loss"].idxmin()]
        metrics = {"best_epoch": int(best["epoch"]) + 1} | {
            f"best_{name}": float(best[name])
            for name in ("val_loss", "val_ssim", "val_perplexity", "val_codes_in_use")
        }
        # The saved model computes in float32 wherever it is loaded.
        model = as_float32(model, policy, lambda dtype: build_model(cfg, image_size, dtype))
        with atomic_directory(out) as tmp:
            model.save(tmp / VQVAE_FILE)
            history.to_csv(tmp / "history.csv", index=False)
            plots.training_curves(history, tmp / "loss_curves.png", "VQ-VAE training")
            originals = next(iter(validation.unbatch().batch(GRID_IMAGES)))
            reconstructions = model.predict(originals, verbose=0)
            plots.paired_grid(
                np.asarray(originals), reconstructions, tmp / "reconstructions.png",
                "Validation slices (top) and their VQ-VAE reconstructions (bottom)",
            )  # fmt: skip
            write_metrics(tmp, metrics)
        run.log_metrics(metrics)
        run.log_artifacts(out / "history.csv", out / "loss_curves.png", out / "reconstructions.png")
        run.log_model(model, "vqvae")
        training.clear(workdir)
    log.info(
        "train-vqvae: val SSIM %.3f after %d epochs -> %s",
        metrics["best_val_ssim"],
        cfg.epochs,
        out,
    )
    return out


def build_model(cfg: VQVAEConfig, image_size: int, policy: Policy = "float32") -> keras.Model:
    """The VQ-VAE of ``cfg`` for square slices of ``image_size``, computing in ``policy``.

    A ConfigError if the architecture can't fit the image size.
    """
    from oasis_vqvae.models import build_vqvae

    try:
        return build_vqvae(
            image_size=image_size,
            filters=cfg.filters,
            residual_blocks=cfg.residual_blocks,
            residual_filters=cfg.residual_filters,
            embedding_dim=cfg.embedding_dim,
            num_embeddings=cfg.num_embeddings,
            beta=cfg.beta,
            ema=cfg.quantizer == "ema",
            ema_decay=cfg.ema_decay,
            dead_code_threshold=cfg.dead_code_threshold,
            data_init=cfg.data_init,
            seed=cfg.seed,
            dtype=policy,
        )
    except ValueError as err:
        raise ConfigError(f"vqvae: {err} (dataset slices are {image_size}x{image_size})") from None


def collapse_check(learning_rate: float, min_steps: int) -> keras.callbacks.Callback:
    """A callback that stops training with a TrainingError once the VQ-VAE has collapsed.

    The reconstruction loss is MSE / pixel variance, so 1.0 is what painting every pixel
    with the mean intensity scores. A VQ-VAE still at or above that after ``min_steps``
    optimizer steps has collapsed: typically its sigmoid output saturated and no gradient
    flows any more (seen with lr 0.003 on the demo). A healthy one is far below it within
    a hundred steps. Checked at the end of each epoch, so a resumed collapsed run stops too.
    """
    import keras

    class CollapseCheck(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            loss = (logs or {}).get("val_reconstruction_loss")
            steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if steps < min_steps or loss is None or loss < 1.0:  # NaN fails the test too
                return
            raise TrainingError(
                f"train-vqvae: after {steps} steps ({epoch + 1} epochs) the validation "
                f"reconstruction loss is {loss:.2f}, no better than a constant image (1.0): "
                f"the model has collapsed. Lower vqvae.learning_rate (e.g. to "
                f"{learning_rate / 2:g}) or change vqvae.seed, then rerun"
            )

    return CollapseCheck()


def _pixel_variance(train: tf.data.Dataset) -> float:
    """Pixel variance of the train split: the reconstruction loss is MSE / variance."""
    count = total = total_sq = 0.0
    for batch in train.take(64):
        pixels = np.asarray(batch, dtype=np.float64)
        count += pixels.size
        total += pixels.sum()
        total_sq += np.square(pixels).sum()
    mean = total / max(count, 1.0)
    return max(total_sq / max(count, 1.0) - mean**2, 1e-6)
