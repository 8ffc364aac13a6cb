"""Stage train-pixelcnn: learn the distribution of the VQ-VAE's code grids."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oasis_vqvae import plots, tracking, training
from oasis_vqvae.config import Params, PixelCNNConfig
from oasis_vqvae.distribute import make_strategy
from oasis_vqvae.precision import Policy, as_float32, resolve_precision, with_loss_scaling
from oasis_vqvae.stages.common import PIXELCNN_FILE, seed_everything, write_metrics
from oasis_vqvae.stages.extract_codes import load_codes, read_codes_manifest
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras
    import tensorflow as tf

log = logging.getLogger(__name__)


def train_pixelcnn(params: Params, codes: str | Path, out: str | Path) -> Path:
    """Train the PixelCNN prior on train codes, validated on validate codes.

    ``out`` gets ``pixelcnn.keras`` (outputs logits over the codebook), ``history.csv``,
    ``loss_curves.png`` and ``metrics.json`` with the validation NLL in bits per code.
    Resumes an interrupted run.
    """
    import keras

    cfg, codes, out = params.pixelcnn, Path(codes), Path(out)
    manifest = read_codes_manifest(codes)
    train_codes, val_codes = load_codes(codes, "train"), load_codes(codes, "validate")
    seed_everything(cfg.seed)
    strategy = make_strategy(cfg.strategy)
    policy = resolve_precision(cfg.precision)
    grid_shape, num_embeddings = tuple(manifest["grid_shape"]), manifest["num_embeddings"]
    with strategy.scope():  # variables are created where the strategy places them
        model = build_model(cfg, grid_shape, num_embeddings, policy)
        model.compile(
            optimizer=with_loss_scaling(keras.optimizers.Adam(cfg.learning_rate), policy),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    with tracking.stage_run("train-pixelcnn", params, blocks=("pixelcnn",)) as run:
        run.set_tags({"oasis.precision": policy})

        def train(epoch: int) -> tf.data.Dataset:  # each epoch's order from (seed, epoch) alone
            return _dataset(train_codes, cfg.batch_size, training.epoch_seed(cfg.seed, epoch))

        validation = _dataset(val_codes, cfg.batch_size)
        workdir = training.checkpoint_dir(out)
        history = training.fit_resumable(
            model, train, validation,
            epochs=cfg.epochs, workdir=workdir,
            key=training.run_key(training.key_params(cfg, policy), _digest(train_codes)),
            monitor="val_loss", mode="min", run=run,
        )  # fmt: skip
        # Cross-entropy in nats per code -> bits per code, the usual unit for likelihoods.
        history["bits_per_code"] = history["loss"] / math.log(2)
        history["val_bits_per_code"] = history["val_loss"] / math.log(2)
        best = history.loc[history["val_loss"].idxmin()]
        metrics = {
            "best_epoch": int(best["epoch"]) + 1,
            "best_val_bits_per_code": float(best["val_bits_per_code"]),
            "best_train_bits_per_code": float(best["bits_per_code"]),
        }
        # The saved model computes in float32 wherever it is loaded.
        model = as_float32(
            model, policy, lambda dtype: build_model(cfg, grid_shape, num_embeddings, dtype)
        )
        with atomic_directory(out) as tmp:
            model.save(tmp / PIXELCNN_FILE)
            history.to_csv(tmp / "history.csv", index=False)
            plots.training_curves(history, tmp / "loss_curves.png", "PixelCNN training")
            write_metrics(tmp, metrics)
        for row in history.itertuples():
            run.log_metrics(
                {"bits_per_code": row.bits_per_code, "val_bits_per_code": row.val_bits_per_code},
                step=int(row.epoch),
            )
        run.log_metrics(metrics)
        run.log_artifacts(out / "history.csv", out / "loss_curves.png")
        run.log_model(model, "pixelcnn")
        training.clear(workdir)
    log.info(
        "train-pixelcnn: validation %.3f bits per code -> %s",
        metrics["best_val_bits_per_code"],
        out,
    )
    return out


def build_model(
    cfg: PixelCNNConfig,
    grid_shape: tuple[int, int],
    num_embeddings: int,
    policy: Policy = "float32",
) -> keras.Model:
    """The PixelCNN of ``cfg`` over ``grid_shape`` code grids, computing in ``policy``."""
    from oasis_vqvae.models import build_pixelcnn

    return build_pixelcnn(
        grid_shape=grid_shape,
        num_embeddings=num_embeddings,
        filters=cfg.filters,
        residual_blocks=cfg.residual_blocks,
        kernel_size=cfg.kernel_size,
        hidden_layers=cfg.hidden_layers,
        gated=cfg.gated,
        embedding_dim=cfg.embedding_dim,
        position_bias=cfg.position_bias,
        dtype=policy,
    )


def _dataset(
    codes: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((codes, codes))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(codes), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _digest(codes: np.ndarray) -> str:
    return hashlib.sha256(codes.tobytes()).hexdigest()
