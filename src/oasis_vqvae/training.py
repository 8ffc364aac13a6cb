"""Resumable Keras training shared by the two training stages.

A checkpoint directory beside the stage output (``models/.vqvae.checkpoint``) holds the
latest epoch's weights, optimizer state and random generators' state, the best weights so
far and the per-epoch history CSV. A rerun with the same key (params + data) resumes from
the last finished epoch; a different key starts afresh. DVC removes a stage's outputs
before running it, which is why the checkpoint lives beside the output, not in it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from pydantic import BaseModel

from oasis_vqvae import progress
from oasis_vqvae.distribute import data_sharded
from oasis_vqvae.tracking import StageRun

log = logging.getLogger(__name__)

WEIGHTS, RNG_STATE, METADATA = "latest.weights.h5", "rng_state.npz", "training_metadata.json"
"""The files of a checkpoint, in its ``backup`` folder; the metadata is written last."""
CHECKPOINT_FORMAT = 2
"""Version of that layout (1: Keras' BackupAndRestore, without the random generators)."""


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


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``, a function of (seed, epoch) only.

    So a resumed run reads every epoch in the order the uninterrupted run reads it.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def fit_resumable(
    model: keras.Model,
    train: Callable[[int], tf.data.Dataset],
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

    ``train(epoch)`` gives the batches of one epoch, in an order that depends on ``epoch``
    alone (e.g. shuffled with :func:`epoch_seed`), never on how many epochs this process has
    run. With that, a run killed after a checkpoint and rerun ends bit-identical (on CPU) to an
    uninterrupted one: the checkpoint holds the weights, the optimizer state and the random
    generators' state (the quantizer's code restarts), and epoch ``e`` reads what it would have.

    Ends with the best weights (by ``monitor``) loaded and returns the history, one row
    per epoch, as a DataFrame with an ``epoch`` column. ``checks`` are callbacks run after
    the epoch's checkpoint is written (e.g. one that stops a collapsed run with an error).
    """
    _prepare(workdir, key)
    history_csv = workdir / "history.csv"
    best_weights = workdir / "best.weights.h5"
    backup = workdir / "backup"
    build_optimizer(model)
    done = restore_checkpoint(model, backup)
    if done:
        log.info("resuming after epoch %d of %d from %s", done, epochs, workdir)
    previous = read_history(history_csv)
    if done < epochs:
        batches = [train(epoch) for epoch in range(done, epochs)]
        steps = int(batches[0].cardinality())
        if steps <= 0:
            raise ValueError("train(epoch) must be a finite dataset of known length")
        stream = functools.reduce(lambda a, b: a.concatenate(b), batches)
        callbacks = [
            # Written in this order, so the checkpoint (what a rerun resumes from) comes
            # after the history row and the best weights of its epoch.
            keras.callbacks.CSVLogger(str(history_csv), append=True),
            BestWeights(best_weights, monitor, mode, _best(previous, monitor, mode)),
            run.keras_callback(),
            EpochCheckpoint(backup),
            progress.epoch_callback(epochs),
            *checks,
        ]
        model.fit(
            data_sharded(stream),  # one pass over every remaining epoch, steps at a time
            validation_data=data_sharded(validation),
            epochs=epochs,
            initial_epoch=done,
            steps_per_epoch=steps,
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipelines shuffle themselves
            verbose=0,
        )
    if best_weights.exists():
        model.load_weights(str(best_weights))
    return read_history(history_csv)


class EpochCheckpoint(keras.callbacks.Callback):
    """A checkpoint after each epoch, what a rerun resumes from.

    The weights with the optimizer's state, the random generators' state, then
    ``training_metadata.json`` naming the epochs done; each file written atomically.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:  # noqa: D102
        self.directory.mkdir(parents=True, exist_ok=True)
        _replace(self.directory / WEIGHTS, lambda tmp: self.model.save_weights(str(tmp)))
        states = {f"s{i}": np.asarray(v.numpy()) for i, v in enumerate(_rng_state(self.model))}
        _replace(self.directory / RNG_STATE, lambda tmp: np.savez(tmp, **states))
        metadata = json.dumps({"epoch": epoch + 1})
        _replace(self.directory / METADATA, lambda tmp: tmp.write_text(metadata))


def restore_checkpoint(model: keras.Model, directory: Path) -> int:
    """Load an :class:`EpochCheckpoint` into ``model``; the epochs done.

    ``model`` is built and compiled, its optimizer built (`build_optimizer`): the optimizer's
    variables must exist to load.
    """
    metadata = directory / METADATA
    if not metadata.exists():
        return 0
    with model.distribute_strategy.scope():
        model.load_weights(str(directory / WEIGHTS))
        with np.load(directory / RNG_STATE) as states:
            for i, variable in enumerate(_rng_state(model)):
                variable.assign(states[f"s{i}"])
    return int(json.loads(metadata.read_text())["epoch"])


def build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's variables (slots) for ``model``'s trainable variables, if not yet.

    Before ``fit``, too: an optimizer that creates its variables inside the first traced train
    step makes TensorFlow trace the step a second time (about 10 s of the prior's first step).
    """
    if model.optimizer is not None and not model.optimizer.built:
        with model.distribute_strategy.scope():  # its variables go where the model's are
            model.optimizer.build(model.trainable_variables)


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch by ``monitor`` in ``path``, written atomically."""

    def __init__(self, path: Path, monitor: str, mode: str, best: float | None) -> None:
        super().__init__()
        self.path, self.monitor, self.mode, self.best = path, monitor, mode, best

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:  # noqa: D102
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = float(value)
            _replace(self.path, lambda tmp: self.model.save_weights(str(tmp)))


def _rng_state(model: keras.Model) -> list[Any]:
    """The state of the model's random generators (``SeedGenerator``).

    It is in ``variables`` but not in ``weights``, so ``save_weights`` leaves it out.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` through a temporary sibling renamed over it: never half-written."""
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    os.replace(tmp, path)


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
    key = f"{CHECKPOINT_FORMAT}:{key}"  # a checkpoint of another layout is not resumed
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
