"""Exact autoregressive sampling of code grids from a PixelCNN prior.

Sampling fills the grid in raster order; each position costs one full forward
pass of the PixelCNN (``H * W`` passes per batch, e.g. 1024 for a 32x32 grid).
Draws use a stateless RNG keyed by ``(seed, draw number)``, so the same seed,
batch size and model give the same codes. Decode the codes to images with
`oasis_vqvae.models.vqvae.decode_codes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

__all__ = ["sample_codes"]


def sample_codes(
    pixelcnn: keras.Model,
    count: int,
    grid_shape: Sequence[int],
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    prefix: np.ndarray | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Sample ``count`` code grids: int32 ``(count, H, W)`` with values in ``[0, K)``.

    Args:
        pixelcnn: A model from `build_pixelcnn`: int32 ``(B, H, W)`` -> logits
            ``(B, H, W, K)``.
        count: Number of grids (>= 0).
        grid_shape: ``(H, W)``; must match the model's input.
        temperature: Logits are divided by it before sampling (> 0; < 1 is
            more conservative, > 1 more diverse).
        seed: Seed of the stateless RNG (non-negative int).
        batch_size: Grids sampled together (results depend on it as well).
        prefix: Optional int array ``(count or 1, R, W)``: the top R rows, kept as
            given (e.g. to complete real grids); sampling starts at row R.
        progress: Show a tqdm bar over the sampled positions.
    """
    height, width = (int(s) for s in grid_shape)
    num_embeddings = int(pixelcnn.output_shape[-1])
    _check_arguments(pixelcnn, count, (height, width), temperature, seed, batch_size)
    fixed = _check_prefix(prefix, count, height, width, num_embeddings)
    fixed_rows = fixed.shape[1]

    codes = np.zeros((count, height, width), dtype="int32")
    codes[:, :fixed_rows] = fixed
    step = _sampling_step(pixelcnn, (height, width), temperature)
    positions = [(r, c) for r in range(fixed_rows, height) for c in range(width)]
    batches = range(0, count, batch_size)
    with tqdm(
        total=len(batches) * len(positions),
        desc="sampling codes",
        unit="pos",
        disable=not progress,
    ) as bar:
        for batch_index, start in enumerate(batches):
            batch = tf.constant(codes[start : start + batch_size])
            for row, col in positions:
                draw = batch_index * height * width + row * width + col
                batch = step(batch, row, col, tf.constant([seed, draw], tf.int64))
                bar.update(1)
            codes[start : start + batch_size] = batch.numpy()
    return codes


def _sampling_step(
    pixelcnn: keras.Model, grid_shape: tuple[int, int], temperature: float
) -> Callable[..., tf.Tensor]:
    """A tf.function (traced once) that samples one position of a batch."""
    height, width = grid_shape

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, height, width), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((2,), tf.int64),
        ]
    )
    def step(codes: tf.Tensor, row: tf.Tensor, col: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        # Forward pass; logits of the current position.
        logits = pixelcnn(codes, training=False)[:, row, col, :]
        logits = tf.cast(logits, tf.float32) / temperature
        # Sampling.
        sampled = tf.random.stateless_categorical(logits, 1, seed=seed, dtype=tf.int32)
        # Write the sampled codes at (row, col).
        at_position = tf.reshape(
            tf.equal(tf.range(height * width), row * width + col), (1, height, width)
        )
        return tf.where(at_position, sampled[:, :, None], codes)

    return step


def _check_arguments(
    pixelcnn: keras.Model,
    count: int,
    grid_shape: tuple[int, int],
    temperature: float,
    seed: int,
    batch_size: int,
) -> None:
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    model_grid = tuple(pixelcnn.input_shape[1:3])
    if None not in model_grid and model_grid != grid_shape:
        raise ValueError(f"grid_shape {grid_shape} does not match the PixelCNN input {model_grid}.")


def _check_prefix(
    prefix: Any, count: int, height: int, width: int, num_embeddings: int
) -> np.ndarray:
    """The prefix rows broadcast to ``(count, R, W)`` int32 (R = 0 without one)."""
    if prefix is None:
        return np.zeros((count, 0, width), dtype="int32")
    prefix = np.asarray(prefix)
    if (
        prefix.ndim != 3
        or prefix.shape[0] not in (1, count)
        or prefix.shape[1] > height
        or prefix.shape[2] != width
    ):
        raise ValueError(
            f"prefix must have shape (count or 1, R <= {height}, {width}), got {prefix.shape}."
        )
    if not np.issubdtype(prefix.dtype, np.integer):
        raise ValueError(f"prefix must hold integer codes, got dtype {prefix.dtype}.")
    if prefix.size and (prefix.min() < 0 or prefix.max() >= num_embeddings):
        raise ValueError(f"prefix codes must be in [0, {num_embeddings}).")
    return np.broadcast_to(prefix.astype("int32"), (count, *prefix.shape[1:]))
