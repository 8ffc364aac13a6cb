"""Stage generate: sample code grids from the PixelCNN and decode them into new slices.

A conditional prior is asked for the conditions ``generate.conditions`` chooses (see
`oasis_vqvae.condition_requests`); ``labels.csv`` records what each sample was asked for,
and ``dataset/`` holds the samples in ingest's format (every sample its own subject
``sample-NNNN``, all in the train split), so any consumer reads synthetic and real slices
the same way (`oasis_vqvae.data.conditions.load_conditions`, `load_split`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from oasis_vqvae import plots, tracking
from oasis_vqvae.condition_requests import resolve_requests
from oasis_vqvae.config import Params
from oasis_vqvae.errors import ConfigError, DataError
from oasis_vqvae.stages.common import PIXELCNN_FILE, VQVAE_FILE, load_model
from oasis_vqvae.stages.train_pixelcnn import TRAIN_CONDITIONS_FILE, read_conditions
from oasis_vqvae.storage import atomic_directory

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SAMPLE_GLOB = "sample_*.png"
LABELS_FILE = "labels.csv"
DATASET_DIR = "dataset"
SAMPLES_PER_SHARD = 4096
DEFAULT_SLICE_LEVEL = 0.5
"""Stored slice level of samples from a prior not conditioned on slice_level."""


def generate(params: Params, vqvae: str | Path, pixelcnn: str | Path, out: str | Path) -> Path:
    """Write ``generate.count`` synthetic slices and what they were asked for.

    ``out`` gets ``sample_NNNN.png``, ``grid.png``, ``codes.npy``, ``labels.csv`` (``file``,
    then one column per condition of the prior: the requested values) and ``dataset/``
    (manifest.json + shards: the samples as a dataset, all in the train split).
    """
    from oasis_vqvae.models import decode_codes, sample_codes
    from oasis_vqvae.models.conditioning import encode_conditions
    from oasis_vqvae.models.fast_sampling import UnsupportedModelError
    from oasis_vqvae.models.fast_sampling import grid_shape as grid_of

    cfg, out, pixelcnn = params.generate, Path(out), Path(pixelcnn)
    vqvae_model = load_model(vqvae, VQVAE_FILE)
    prior = load_model(pixelcnn, PIXELCNN_FILE)
    grid_shape = grid_of(prior)
    if tuple(vqvae_model.get_layer("encoder").output_shape[1:3]) != grid_shape:
        raise DataError(f"{pixelcnn} was trained on {grid_shape} code grids, not this VQ-VAE's")
    described, encodings = _model_conditions(prior, pixelcnn)
    _check_guidance(cfg.guidance, described)
    labels = resolve_requests(
        cfg.conditions, described["conditions"], described["names"], cfg.count, cfg.seed,
        _train_table(pixelcnn, described["names"]),
    )  # fmt: skip
    conditions = encode_conditions(labels, encodings) if encodings else None
    with tracking.stage_run("generate", params, blocks=("generate",)) as run:
        started = time.perf_counter()
        try:
            codes = sample_codes(
                prior, cfg.count, grid_shape, temperature=cfg.temperature, seed=cfg.seed,
                batch_size=cfg.batch_size, sampler=cfg.sampler, conditions=conditions,
                guidance=cfg.guidance,
            )  # fmt: skip
        except UnsupportedModelError as err:
            hint = "set generate.sampler=naive to sample it the slow way"
            raise ConfigError(
                f"generate.sampler: fast cannot sample it exactly: {err}; {hint}"
            ) from None
        seconds = (time.perf_counter() - started) / cfg.count
        run.log_metrics({"sampling_seconds_per_sample": seconds})
        images = decode_codes(vqvae_model, codes, batch_size=cfg.batch_size)[..., 0]
        pixels = [to_uint8(image) for image in images]
        files = [f"sample_{index:04d}.png" for index in range(len(pixels))]
        with atomic_directory(out) as tmp:
            for name, image in zip(files, pixels, strict=True):
                Image.fromarray(image).save(tmp / name)
            np.save(tmp / "codes.npy", codes.astype(np.int32))
            plots.image_grid(images[:64], tmp / "grid.png", "Generated slices")
            labels.insert(0, "file", files)
            labels.to_csv(tmp / LABELS_FILE, index=False)
            write_samples_dataset(
                tmp / DATASET_DIR, pixels, labels, described,
                source={
                    "kind": "generated", "vqvae": str(vqvae), "pixelcnn": str(pixelcnn),
                    "seed": cfg.seed, "temperature": cfg.temperature, "guidance": cfg.guidance,
                },
                images_per_shard=SAMPLES_PER_SHARD,
            )  # fmt: skip
        run.log_artifacts(out / "grid.png", out / LABELS_FILE)
    log.info("generate: %d samples -> %s", cfg.count, out)
    return out


def _model_conditions(prior: Any, pixelcnn: Path) -> tuple[dict[str, Any], list[dict]]:
    """``conditions.json`` of the prior and its encodings, checked against the model."""
    from oasis_vqvae.models.fast_sampling import conditions_count

    described = read_conditions(pixelcnn)
    names = list(described["names"])
    if not conditions_count(prior):
        if names:
            raise DataError(f"{pixelcnn}: conditions.json lists {names}, the model takes none")
        return described, []
    encodings = prior.get_layer("condition_encoder").encodings
    if [e["name"] for e in encodings] != names:
        raise DataError(
            f"{pixelcnn}: conditions.json lists {names}, the model was built with "
            f"{[e['name'] for e in encodings]}; rerun train-pixelcnn"
        )
    return described, encodings


def _check_guidance(guidance: float, described: dict[str, Any]) -> None:
    if guidance and not described["names"]:
        raise ConfigError("generate.guidance: the PixelCNN is unconditional; set it to 0")
    if guidance and not described.get("condition_dropout"):
        raise ConfigError(
            "generate.guidance: the PixelCNN was trained with pixelcnn.condition_dropout 0, "
            "so it never learned the unconditional model guidance needs; set it to 0"
        )


def _train_table(pixelcnn: Path, names: list[str]) -> pd.DataFrame | None:
    import pandas as pd

    path = pixelcnn / TRAIN_CONDITIONS_FILE
    return pd.read_csv(path) if names and path.exists() else None


def write_samples_dataset(
    directory: Path,
    pixels: list[np.ndarray],
    labels: pd.DataFrame,
    described: dict[str, Any],
    source: dict[str, Any],
    images_per_shard: int,
) -> dict[str, Any]:
    """The samples as a dataset in ingest's format (every sample in the train split).

    Sample ``i`` is subject ``sample-NNNN``, slice 0, at its requested slice level (or
    0.5); its other requested conditions are its ``subject_metadata``; the manifest's
    ``conditions`` are the prior's (kind, values or range).
    """
    from oasis_vqvae.data.conditions import SLICE_LEVEL
    from oasis_vqvae.data.png_slices import encode_png
    from oasis_vqvae.data.shards import DatasetWriter, Record

    directory.mkdir(parents=True)
    size = pixels[0].shape[0] if pixels else 0
    names = list(described["names"])
    specs = {
        name: {key: described["conditions"][name][key] for key in ("kind", "values", "range")
               if key in described["conditions"][name]}
        for name in names
    }  # fmt: skip
    metadata: dict[str, dict[str, Any]] = {}
    with DatasetWriter(
        directory, image_size=size, images_per_shard=images_per_shard, segmentation=False,
        slice_levels=True, allow_empty_splits=True,
    ) as writer:  # fmt: skip
        rows = labels[names].to_dict("records")
        for index, (image, values) in enumerate(zip(pixels, rows, strict=True)):
            subject = f"sample-{index:04d}"
            level = float(values.pop(SLICE_LEVEL, DEFAULT_SLICE_LEVEL))
            metadata[subject] = {name: _plain(value) for name, value in values.items()}
            writer.add(
                Record(
                    split="train", subject=subject, slice=0,
                    image=encode_png(Image.fromarray(image)),
                    low=int(image.min()), high=int(image.max()), slice_level=level,
                )
            )  # fmt: skip
        return writer.finish(source=source, skipped=[], subject_metadata=metadata, conditions=specs)


def _plain(value: Any) -> Any:
    """A NumPy scalar as the plain Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> 8-bit grayscale, as the OASIS slices are stored."""
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def load_samples(samples: str | Path) -> np.ndarray:
    """The generated slices ``(N, H, W)`` as float32 in [0, 1]."""
    files = sorted(Path(samples).glob(SAMPLE_GLOB))
    if not files:
        raise DataError(f"{samples}: no {SAMPLE_GLOB} files; run generate first")
    return np.stack(
        [np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 for f in files]
    )
