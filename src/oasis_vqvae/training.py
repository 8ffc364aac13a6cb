"""Resumable Keras training shared by the two training stages.

A checkpoint directory beside the stage output (``models/.vqvae.checkpoint``) holds the
latest epoch's weights and optimizer state (Keras ``BackupAndRestore``), the best weights so
far and the per-epoch history CSV. A rerun with the same key (params + data) resumes from
the last finished epoch; a different key starts afresh. DVC removes a stage's outputs
before running it, which is why the checkpoint lives beside the output, not in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import pandas as pd
import tensorflow as tf
from pydantic import BaseModel
from tqdm.keras import TqdmCallback

from oasis_vqvae.distribute import data_sharded
from oasis_vqvae.tracking import StageRun

log = logging.getLogger(__name__)


def checkpoint_dir(out: Path) -> Path:
    """Where the stage writing ``out`` keeps its checkpoints."""
    return out.parent / f".{out.name}.checkpoint"


def run_key(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts (params blocks, data hashes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def key_params(cfg: BaseModel, policy: str) -> dict[str, Any]:
    """The params of a training block that a checkpoint depends on.

    All but ``strategy``: weights and optimizer state do not depend on how the batch was
    spread over devices, so a job rescheduled onto another number of GPUs still resumes.
    ``precision`` is the resolved ``policy``, not ``auto``: a loss-scaled optimizer has more
    state to restore.
    """
    return cfg.model_dump(mode="json", exclude={"strategy"}) | {"precision": policy}


def fit_resumable(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    *,
    epochs: int,
    workdir: Path,
    key: str,
    monitor: str,
    mode: Literal["min", "max"],
    run: StageRun,
    checks: Sequence[keras.callbacks.Callback] = (),
) -> pd.DataFrame:
    """Train ``model`` (compiled) for ``epochs``, resuming from ``workdir`` when possible.

    Ends with the best weights (by ``monitor``) loaded and returns the history, one row
    per epoch, as a DataFrame with an ``epoch`` column. ``checks`` are callbacks run after
    the epoch's checkpoint is written (e.g. one that stops a collapsed run with an error).
    """
    _prepare(workdir, key)
    history_csv = workdir / "history.csv"
    best_weights = workdir / "best.weights.h5"
    backup = workdir / "backup"
    if (backup / "training_metadata.json").exists():
        done = json.loads((backup / "training_metadata.json").read_text())["epoch"]
        log.info("resuming after epoch %d of %d from %s", done, epochs, workdir)
    previous = read_history(history_csv)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.ModelCheckpoint(
            str(best_weights),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=_best(previous, monitor, mode),
        ),
        run.keras_callback(),
        TqdmCallback(verbose=1, leave=False),
        *checks,
    ]
    model.fit(
        data_sharded(train),
        validation_data=data_sharded(validation),
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipelines shuffle themselves
        verbose=0,
    )
    if best_weights.exists():
        model.load_weights(str(best_weights))
    return read_history(history_csv)


def read_history(path: Path) -> pd.DataFrame:
    """The per-epoch history; an epoch repeated after a resume keeps its last row."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def clear(workdir: Path) -> None:
    """Remove the checkpoints once the stage output is safely in place."""
    shutil.rmtree(workdir, ignore_errors=True)


def _prepare(workdir: Path, key: str) -> None:
    key_file = workdir / "key"
    if workdir.exists() and (not key_file.exists() or key_file.read_text() != key):
        log.info("checkpoint in %s is for other params or data: starting afresh", workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)


def _best(history: pd.DataFrame, monitor: str, mode: str) -> float | None:
    if monitor not in history or history[monitor].isna().all():
        return None
    return float(history[monitor].min() if mode == "min" else history[monitor].max())
