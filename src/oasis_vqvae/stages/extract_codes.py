"""Stage extract-codes: the integer code grid of every slice in every split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oasis_vqvae import plots, tracking
from oasis_vqvae.config import Params
from oasis_vqvae.data.conditions import condition_specs, load_conditions
from oasis_vqvae.data.shards import load_split, read_manifest
from oasis_vqvae.errors import DataError
from oasis_vqvae.metrics import code_histogram, perplexity
from oasis_vqvae.stages.common import VQVAE_FILE, load_model, write_metrics
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:  # heavy imports, loaded lazily at run time
    import keras
    import pandas as pd

log = logging.getLogger(__name__)

CODES_MANIFEST = "codes.json"
SPLITS = ("train", "validate", "test")


def extract_codes(params: Params, data: str | Path, vqvae: str | Path, out: str | Path) -> Path:
    """Encode every slice of ``data`` with the VQ-VAE; write one integer array per split.

    ``out`` gets ``train.npy``, ``validate.npy``, ``test.npy`` (N, h, w) in the smallest
    unsigned dtype that holds the codebook; beside each, ``SPLIT_conditions.csv``, the
    conditions of its grids row by row (`oasis_vqvae.data.conditions.load_conditions`);
    ``codes.json`` (grid shape, codebook size, counts, the dataset's ``conditions``),
    ``usage.png`` (how often each code is used) and ``metrics.json`` (perplexity and codes
    in use per split).
    """
    data, out = Path(data), Path(out)
    manifest = read_manifest(data)
    model = load_model(vqvae, VQVAE_FILE)
    quantizer = model.get_layer("vector_quantizer")
    num_embeddings = int(quantizer.num_embeddings)
    dtype = np.uint8 if num_embeddings <= 256 else np.uint16
    with tracking.stage_run("extract-codes", params) as run:
        with atomic_directory(out) as tmp:
            usage, slices, metrics = {}, {}, {}
            for split in SPLITS:
                codes = encode_split(model, data, split, params.evaluate.batch_size)
                np.save(tmp / f"{split}.npy", codes.astype(dtype))
                conditions = load_conditions(data, split)
                if len(conditions) != len(codes):
                    raise DataError(
                        f"{data}: {split} has {len(conditions)} records, {len(codes)} images"
                    )
                conditions.to_csv(tmp / conditions_file(split), index=False)
                slices[split] = len(codes)
                usage[split] = code_histogram(codes, num_embeddings)
                metrics[f"perplexity_{split}"] = perplexity(usage[split])
                metrics[f"codes_used_{split}"] = int(np.count_nonzero(usage[split]))
            (tmp / CODES_MANIFEST).write_text(
                json.dumps(
                    {
                        "num_embeddings": num_embeddings,
                        "grid_shape": list(codes.shape[1:]),
                        "dtype": np.dtype(dtype).name,
                        "slices": slices,
                        "dataset_hash": manifest["content_hash"],
                        "conditions": condition_specs(manifest),
                    },
                    indent=2,
                )
                + "\n"
            )
            plots.code_usage(usage, tmp / "usage.png", "Codebook usage per split")
            write_metrics(tmp, metrics)
        run.log_metrics(metrics)
        run.log_artifacts(out / "usage.png", out / CODES_MANIFEST)
    log.info("extract-codes: %s -> %s", metrics, out)
    return out


def encode_split(model: keras.Model, data: Path, split: str, batch_size: int) -> np.ndarray:
    """Code grids ``(N, h, w)`` int32 of one split, encoded batch by batch."""
    from oasis_vqvae.models import encode_codes

    batches = [
        encode_codes(model, np.asarray(images), batch_size)
        for images in load_split(data, split, batch_size=batch_size)
    ]
    if not batches:
        raise DataError(f"{data}: split {split!r} has no slices")
    return np.concatenate(batches)


def load_codes(codes: str | Path, split: str) -> np.ndarray:
    """One split's code grids ``(N, h, w)`` as int32."""
    path = Path(codes) / f"{split}.npy"
    if not path.exists():
        raise DataError(f"{path}: missing; run extract-codes first")
    return np.load(path).astype(np.int32)


def conditions_file(split: str) -> str:
    """Name of the CSV that holds the conditions of one split's code grids."""
    return f"{split}_conditions.csv"


def load_code_conditions(codes: str | Path, split: str) -> pd.DataFrame:
    """The conditions of one split's code grids, row ``i`` for grid ``i`` (see `extract_codes`)."""
    import pandas as pd

    path = Path(codes) / conditions_file(split)
    if not path.exists():
        raise DataError(f"{path}: missing; rerun extract-codes (older outputs lack conditions)")
    return pd.read_csv(path)


def read_codes_manifest(codes: str | Path) -> dict:
    """``codes.json`` of an extract-codes output."""
    path = Path(codes) / CODES_MANIFEST
    if not path.exists():
        raise DataError(f"{path}: missing; run extract-codes first")
    return json.loads(path.read_text())
