"""Autoregressive sampling: reproducibility, prefixes, exactness, validation."""

import keras
import numpy as np
import pytest

from oasis_vqvae.models import build_pixelcnn, sample_codes
from oasis_vqvae.models.sampling import sample_uniforms

GRID = (4, 5)
K = 6


@pytest.fixture(scope="module")
def pixelcnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_pixelcnn(GRID, K, filters=8, residual_blocks=1, kernel_size=3, hidden_layers=1)


def test_each_sample_has_its_own_stateless_uniforms():
    import tensorflow as tf

    rows = sample_uniforms(7, 5, 12)
    assert rows.shape == (5, 12) and rows.dtype == np.float32
    for n in range(5):  # row n from the key (seed, n) alone, whatever the count
        expected = tf.random.stateless_uniform((12,), seed=[7, n], alg="philox").numpy()
        np.testing.assert_array_equal(rows[n], expected)
    np.testing.assert_array_equal(sample_uniforms(7, 2, 12), rows[:2])
    assert sample_uniforms(7, 0, 12).shape == (0, 12)
    assert not np.array_equal(sample_uniforms(8, 1, 12)[0], rows[0])


def test_same_seed_same_samples_different_seed_different(pixelcnn):
    a = sample_codes(pixelcnn, 5, GRID, seed=1, batch_size=2, progress=False)
    b = sample_codes(pixelcnn, 5, GRID, seed=1, batch_size=2, progress=False)
    c = sample_codes(pixelcnn, 5, GRID, seed=2, batch_size=2, progress=False)

    assert a.shape == (5, *GRID) and a.dtype == np.int32
    assert a.min() >= 0 and a.max() < K
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) > 1
    assert not np.array_equal(a[0], a[1])  # grids of a batch are drawn independently


def test_prefix_rows_are_kept(pixelcnn):
    rng = np.random.default_rng(0)
    shared = rng.integers(0, K, size=(1, 2, GRID[1]))
    samples = sample_codes(pixelcnn, 3, GRID, prefix=shared, seed=0, progress=False)
    np.testing.assert_array_equal(samples[:, :2], np.repeat(shared, 3, axis=0))

    own = rng.integers(0, K, size=(3, 1, GRID[1]))
    samples = sample_codes(pixelcnn, 3, GRID, prefix=own, seed=0, progress=False)
    np.testing.assert_array_equal(samples[:, :1], own)

    full = rng.integers(0, K, size=(3, *GRID))
    np.testing.assert_array_equal(sample_codes(pixelcnn, 3, GRID, prefix=full), full)


def test_samples_are_autoregressive_in_raster_order():
    # A hand-set PixelCNN that copies the code directly above: its type-A 3x3 kernel
    # only passes the tap above the centre, its logits strongly favour that code.
    model = build_pixelcnn(GRID, K, filters=K, residual_blocks=0, hidden_layers=0, kernel_size=3)
    kernel = np.zeros((3, 3, K, K), "float32")
    kernel[0, 1] = np.eye(K)
    model.get_layer("masked_a").set_weights([kernel, np.zeros(K, "float32")])
    model.get_layer("logits").set_weights([30.0 * np.eye(K)[None, None], np.zeros(K, "float32")])

    samples = sample_codes(model, 6, GRID, seed=0, batch_size=4, progress=False)
    # Row 0 is drawn uniformly; every later row copies the row sampled before it.
    np.testing.assert_array_equal(samples, np.repeat(samples[:, :1], GRID[0], axis=1))
    assert len(np.unique(samples[:, 0])) > 2


def test_samples_follow_the_logits():
    model = build_pixelcnn(GRID, K, filters=4, residual_blocks=0, hidden_layers=0)
    logits_layer = model.get_layer("logits")
    kernel, bias = logits_layer.get_weights()
    bias = np.full(K, -20.0, "float32")
    bias[3] = 20.0
    logits_layer.set_weights([np.zeros_like(kernel), bias])
    samples = sample_codes(model, 4, GRID, seed=0, progress=False)
    np.testing.assert_array_equal(samples, 3)


def test_empty_count_and_progress_bar(pixelcnn, capsys):
    empty = sample_codes(pixelcnn, 0, GRID)
    assert empty.shape == (0, *GRID) and empty.dtype == np.int32
    sample_codes(pixelcnn, 1, GRID, progress=True)
    assert "sampling codes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(count=-1), "count"),
        (dict(batch_size=0), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(grid_shape=(5, 5)), "grid_shape"),
        (dict(prefix=np.zeros((2, 1, 5), "int32")), "prefix"),
        (dict(prefix=np.zeros((1, 1, 4), "int32")), "prefix"),
        (dict(prefix=np.full((1, 1, 5), K)), "prefix"),
    ],
)
def test_invalid_arguments_raise(pixelcnn, kwargs, message):
    arguments = {"count": 3, "grid_shape": GRID, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample_codes(pixelcnn, **arguments)
