"""Stage generate: sample code grids from the PixelCNN and decode them into new slices."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from oasis_vqvae import plots, tracking
from oasis_vqvae.config import Params
from oasis_vqvae.errors import ConfigError, DataError
from oasis_vqvae.stages.common import PIXELCNN_FILE, VQVAE_FILE, load_model
from oasis_vqvae.storage import atomic_directory

log = logging.getLogger(__name__)

SAMPLE_GLOB = "sample_*.png"


def generate(params: Params, vqvae: str | Path, pixelcnn: str | Path, out: str | Path) -> Path:
    """Write ``generate.count`` synthetic slices as PNGs, a ``grid.png`` and their ``codes.npy``."""
    from oasis_vqvae.models import decode_codes, sample_codes
    from oasis_vqvae.models.fast_sampling import UnsupportedModelError

    cfg, out = params.generate, Path(out)
    vqvae_model = load_model(vqvae, VQVAE_FILE)
    prior = load_model(pixelcnn, PIXELCNN_FILE)
    grid_shape = tuple(int(n) for n in prior.input_shape[1:3])
    if tuple(vqvae_model.get_layer("encoder").output_shape[1:3]) != grid_shape:
        raise DataError(f"{pixelcnn} was trained on {grid_shape} code grids, not this VQ-VAE's")
    with tracking.stage_run("generate", params, blocks=("generate",)) as run:
        started = time.perf_counter()
        try:
            codes = sample_codes(
                prior, cfg.count, grid_shape, temperature=cfg.temperature, seed=cfg.seed,
                batch_size=cfg.batch_size, sampler=cfg.sampler,
            )  # fmt: skip
        except UnsupportedModelError as err:
            hint = "set generate.sampler=naive to sample it the slow way"
            raise ConfigError(
                f"generate.sampler: fast cannot sample it exactly: {err}; {hint}"
            ) from None
        seconds = (time.perf_counter() - started) / cfg.count
        run.log_metrics({"sampling_seconds_per_sample": seconds})
        images = decode_codes(vqvae_model, codes, batch_size=cfg.batch_size)[..., 0]
        with atomic_directory(out) as tmp:
            for index, image in enumerate(images):
                Image.fromarray(to_uint8(image)).save(tmp / f"sample_{index:04d}.png")
            np.save(tmp / "codes.npy", codes.astype(np.int32))
            plots.image_grid(images[:64], tmp / "grid.png", "Generated slices")
        run.log_artifacts(out / "grid.png")
    log.info("generate: %d samples -> %s", cfg.count, out)
    return out


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
