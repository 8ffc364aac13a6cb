"""Small helpers the stage functions share: model files, metrics files, seeding."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oasis_vqvae.errors import DataError

VQVAE_FILE = "vqvae.keras"
PIXELCNN_FILE = "pixelcnn.keras"
METRICS_FILE = "metrics.json"
SAMPLES_DATASET_DIR = "dataset"
"""Inside generate's output: the labelled samples as a dataset in ingest's format."""
CONDITIONS_FILE = "conditions.json"
"""Beside the PixelCNN: the conditions it was trained on (names, specs, encodings, values seen)."""
TRAIN_CONDITIONS_FILE = "train_conditions.csv"
"""Beside the PixelCNN: its training rows' subjects and conditions (what generate draws from)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic (same params -> same run)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_model(directory: str | Path, filename: str) -> Any:
    """Load a model written by a training stage, with Keras' safe mode (no pickled code)."""
    import keras

    import oasis_vqvae.models  # noqa: F401  (registers the custom layers)

    path = Path(directory) / filename
    if not path.exists():
        raise DataError(f"{path}: no such model; run the stage that trains it first")
    return keras.models.load_model(path, safe_mode=True, compile=False)


def write_metrics(directory: Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (what ``dvc metrics show`` and the KFP Metrics artifact read)."""
    path = directory / METRICS_FILE
    path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    return path


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file an earlier stage wrote, with a clear error if it is missing."""
    if not path.exists():
        raise DataError(f"{path}: missing; run the stage that writes it first")
    return json.loads(path.read_text())


def read_prior_conditions(pixelcnn: str | Path) -> dict[str, Any]:
    """``conditions.json`` of a train-pixelcnn output.

    A model saved before conditions existed has none and is unconditional (names []).
    """
    path = Path(pixelcnn) / CONDITIONS_FILE
    if not path.exists():
        return {"names": [], "conditions": {}, "condition_dropout": 0.0}
    return json.loads(path.read_text())
