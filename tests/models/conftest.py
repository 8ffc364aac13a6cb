"""Shared fixtures for the model tests (tiny shapes, real TensorFlow)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed Keras, NumPy and TensorFlow so every test is deterministic."""
    keras.utils.set_random_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def blob_images() -> np.ndarray:
    """Eight smooth 32x32 grey-level images in [0, 1] (Gaussian blobs), (8, 32, 32, 1)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32].astype("float32")
    images = []
    for _ in range(8):
        cy, cx = rng.uniform(8, 24, size=2)
        sigma = rng.uniform(3, 7)
        images.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))
    return np.stack(images)[..., None].astype("float32")
