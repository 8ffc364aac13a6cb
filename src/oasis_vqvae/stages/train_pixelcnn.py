"""Stage train-pixelcnn: learn the distribution of the VQ-VAE's code grids.

A conditional prior (``pixelcnn.conditions``) learns p(codes | conditions) from each grid's
row of ``SPLIT_conditions.csv``. Rows missing a value of a requested condition (e.g. a
subject without a CDR) are skipped and counted (``conditions.json`` ``rows``, the
metrics ``skipped_train_rows`` / ``skipped_validate_rows``): the model is never told a
label it was not given, and with ``data.on_bad_file: skip`` that is the ingest's rule too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oasis_vqvae import plots, tracking, training
from oasis_vqvae.config import Params, PixelCNNConfig
from oasis_vqvae.data.conditions import check_names
from oasis_vqvae.distribute import make_strategy
from oasis_vqvae.errors import DataError
from oasis_vqvae.precision import Policy, as_float32, resolve_precision, with_loss_scaling
from oasis_vqvae.stages.common import (
    CONDITIONS_FILE,
    PIXELCNN_FILE,
    TRAIN_CONDITIONS_FILE,
    seed_everything,
    write_metrics,
)
from oasis_vqvae.stages.extract_codes import load_code_conditions, load_codes, read_codes_manifest
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras
    import pandas as pd
    import tensorflow as tf

log = logging.getLogger(__name__)


def train_pixelcnn(params: Params, codes: str | Path, out: str | Path) -> Path:
    """Train the PixelCNN prior on train codes, validated on validate codes.

    ``out`` gets ``pixelcnn.keras`` (outputs logits over the codebook), ``history.csv``,
    ``loss_curves.png``, ``metrics.json`` with the validation NLL in bits per code,
    ``conditions.json`` (the conditions, their encodings and the values seen in training;
    names [] for an unconditional prior) and ``train_conditions.csv`` (the training rows'
    subject and conditions, what generate draws from). Resumes an interrupted run.
    """
    import keras

    cfg, codes, out = params.pixelcnn, Path(codes), Path(out)
    manifest = read_codes_manifest(codes)
    encodings = model_encodings(cfg, manifest.get("conditions") or {})
    train = _split_inputs(codes, "train", encodings)
    val = _split_inputs(codes, "validate", encodings)
    seed_everything(cfg.seed)
    strategy = make_strategy(cfg.strategy)
    policy = resolve_precision(cfg.precision)
    grid_shape, num_embeddings = tuple(manifest["grid_shape"]), manifest["num_embeddings"]
    with strategy.scope():  # variables are created where the strategy places them
        model = build_model(cfg, grid_shape, num_embeddings, policy, encodings)
        model.compile(
            optimizer=with_loss_scaling(
                keras.optimizers.Adam(learning_rate(cfg, _steps(train, cfg.batch_size))), policy
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    with tracking.stage_run("train-pixelcnn", params, blocks=("pixelcnn",)) as run:
        run.set_tags({"oasis.precision": policy})

        def train_data(
            epoch: int,
        ) -> tf.data.Dataset:  # each epoch's order from (seed, epoch) alone
            return _dataset(train, cfg.batch_size, training.epoch_seed(cfg.seed, epoch))

        validation = _dataset(val, cfg.batch_size)
        workdir = training.checkpoint_dir(out)
        history = training.fit_resumable(
            model, train_data, validation,
            epochs=cfg.epochs, workdir=workdir,
            key=training.run_key(
                training.key_params(cfg, policy), _digest(train.codes), _digest(train.conditions)
            ),
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
            "skipped_train_rows": train.skipped,
            "skipped_validate_rows": val.skipped,
        }
        # The saved model computes in float32 wherever it is loaded.
        model = as_float32(
            model,
            policy,
            lambda dtype: build_model(cfg, grid_shape, num_embeddings, dtype, encodings),
        )
        with atomic_directory(out) as tmp:
            model.save(tmp / PIXELCNN_FILE)
            write_conditions(tmp, cfg, encodings, train, val)
            history.to_csv(tmp / "history.csv", index=False)
            plots.training_curves(history, tmp / "loss_curves.png", "PixelCNN training")
            write_metrics(tmp, metrics)
        for row in history.itertuples():
            run.log_metrics(
                {"bits_per_code": row.bits_per_code, "val_bits_per_code": row.val_bits_per_code},
                step=int(row.epoch),
            )
        run.log_metrics(metrics)
        run.log_artifacts(out / "history.csv", out / "loss_curves.png", out / CONDITIONS_FILE)
        run.log_model(model, "pixelcnn")
        training.clear(workdir)
    log.info(
        "train-pixelcnn: validation %.3f bits per code -> %s",
        metrics["best_val_bits_per_code"],
        out,
    )
    return out


def model_encodings(cfg: PixelCNNConfig, specs: dict[str, Any]) -> list[dict[str, Any]]:
    """The encodings of ``pixelcnn.conditions`` from codes.json's condition specs.

    Raises DataError naming ``pixelcnn.conditions`` and listing the dataset's conditions
    for an unknown name.
    """
    from oasis_vqvae.data.conditions import SLICE_LEVEL, SLICE_LEVEL_SPEC
    from oasis_vqvae.models.conditioning import condition_encodings

    specs = {SLICE_LEVEL: SLICE_LEVEL_SPEC, **specs}  # codes written before conditions
    check_names(cfg.conditions, specs, "pixelcnn.conditions")
    try:
        return condition_encodings(cfg.conditions, specs, cfg.continuous_encoding)
    except (KeyError, ValueError) as err:
        raise DataError(f"pixelcnn.conditions: codes.json conditions: {err}") from None


class _SplitInputs:
    """One split's code grids and conditions, rows missing a condition value dropped."""

    def __init__(self, codes: np.ndarray, conditions: np.ndarray, table: pd.DataFrame, skipped):
        self.codes, self.conditions, self.table, self.skipped = codes, conditions, table, skipped


def _split_inputs(codes_dir: Path, split: str, encodings: list[dict[str, Any]]) -> _SplitInputs:
    """Codes ``(N, h, w)``, conditions ``(N, C)`` and the conditions table of ``split``."""
    from oasis_vqvae.models.conditioning import encode_conditions

    codes = load_codes(codes_dir, split)
    if not encodings:
        return _SplitInputs(codes, np.zeros((len(codes), 0), np.float32), None, 0)
    table = load_code_conditions(codes_dir, split)
    names = [e["name"] for e in encodings]
    missing = [name for name in names if name not in table.columns]
    if missing or len(table) != len(codes):
        raise DataError(
            f"{codes_dir}/{split}_conditions.csv: {len(table)} rows for {len(codes)} grids, "
            f"columns {list(table.columns)}; rerun extract-codes"
        )
    try:
        conditions = encode_conditions(table, encodings)
    except ValueError as err:
        raise DataError(f"{codes_dir}/{split}_conditions.csv: {err}") from None
    keep = ~np.isnan(conditions).any(axis=1)
    if not keep.any():
        raise DataError(
            f"{codes_dir}/{split}_conditions.csv: no row has every condition of "
            f"pixelcnn.conditions {names}"
        )
    skipped = int((~keep).sum())
    if skipped:
        log.warning("train-pixelcnn: %d %s rows lack a condition value: skipped", skipped, split)
    columns = ["subject", *names] if "subject" in table.columns else names
    return _SplitInputs(codes[keep], conditions[keep], table.loc[keep, columns], skipped)


def write_conditions(
    directory: Path,
    cfg: PixelCNNConfig,
    encodings: list[dict[str, Any]],
    train: _SplitInputs,
    val: _SplitInputs,
) -> None:
    """``conditions.json`` and ``train_conditions.csv`` beside the model (see train_pixelcnn)."""
    conditions = {}
    for j, encoding in enumerate(encodings):
        entry = {key: value for key, value in encoding.items() if key != "name"}
        column = train.conditions[:, j]
        if encoding["kind"] == "categorical":
            entry["seen"] = [encoding["values"][int(i)] for i in sorted(set(column.tolist()))]
        else:
            entry["seen"] = [float(column.min()), float(column.max())]
        conditions[encoding["name"]] = entry
    document = {
        "names": [e["name"] for e in encodings],
        "conditions": conditions,
        "condition_dim": cfg.condition_dim,
        "condition_dropout": cfg.condition_dropout if encodings else 0.0,
        "rows": {
            split: {"used": len(inputs.codes), "skipped": inputs.skipped}
            for split, inputs in (("train", train), ("validate", val))
        },
    }
    (directory / CONDITIONS_FILE).write_text(json.dumps(document, indent=2) + "\n")
    if train.table is not None:
        train.table.to_csv(directory / TRAIN_CONDITIONS_FILE, index=False)
    else:  # an unconditional prior: no condition columns
        (directory / TRAIN_CONDITIONS_FILE).write_text("subject\n")


def build_model(
    cfg: PixelCNNConfig,
    grid_shape: tuple[int, int],
    num_embeddings: int,
    policy: Policy = "float32",
    encodings: list[dict[str, Any]] = (),
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
        conditions=encodings,
        condition_dim=cfg.condition_dim,
        condition_dropout=cfg.condition_dropout,
        condition_maps=cfg.condition_maps if encodings and cfg.position_bias else 0,
        dilations=cfg.dilations,
        seed=cfg.seed,
        dtype=policy,
    )


def _dataset(
    inputs: _SplitInputs, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    import tensorflow as tf

    codes = inputs.codes
    x = (codes, inputs.conditions) if inputs.conditions.shape[1] else codes
    dataset = tf.data.Dataset.from_tensor_slices((x, codes))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(codes), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def learning_rate(cfg: PixelCNNConfig, steps_per_epoch: int) -> Any:
    """``pixelcnn.learning_rate``, or its cosine decay to 0 over every epoch's steps."""
    import keras

    if cfg.learning_rate_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate, decay_steps=cfg.epochs * steps_per_epoch
        )
    return cfg.learning_rate


def _steps(inputs: _SplitInputs, batch_size: int) -> int:
    """Batches per epoch of `_dataset` (the last one may be short)."""
    return math.ceil(len(inputs.codes) / batch_size)


def _digest(codes: np.ndarray) -> str:
    return hashlib.sha256(codes.tobytes()).hexdigest()
