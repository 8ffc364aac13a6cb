"""The fast sampler is exact: same logits as the model, same grids as naive sampling."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from oasis_vqvae.models import build_pixelcnn, sample_codes
from oasis_vqvae.models.fast_sampling import FastSampler, UnsupportedModelError
from oasis_vqvae.models.pixelcnn import MaskedConv2D, OneHot

K = 12

# (gated, first kernel, residual blocks / gated layers, hidden layers, embedding size,
#  position bias, vertical dilations)
CONFIGS = [
    (False, 3, 0, 0, 0, False),
    (False, 5, 2, 1, 0, False),
    (False, 7, 3, 2, 0, False),
    (True, 3, 0, 0, 0, False),
    (True, 5, 2, 1, 0, False),
    (True, 7, 3, 2, 0, False),
    (False, 5, 2, 1, 4, True),
    (True, 5, 2, 1, 4, True),
    (True, 3, 3, 1, 4, True, (1, 2, 4)),
    (True, 5, 4, 1, 0, False, (3, 2)),
]


def _model(grid, gated, kernel, blocks, hidden, embedding=0, position=False, dilations=(1,),
           sharpen=4.0):  # fmt: skip
    """A random PixelCNN whose logits are scaled up, so draws are far from uniform."""
    model = build_pixelcnn(
        grid, K, filters=16, residual_blocks=blocks, kernel_size=kernel,
        hidden_layers=hidden, gated=gated, embedding_dim=embedding, position_bias=position,
        dilations=dilations,
    )  # fmt: skip
    for layer in model.layers:  # random position biases (they start at zero)
        if layer.name.startswith("position"):
            layer.set_weights([np.random.default_rng(1).normal(size=layer.bias.shape)])
    head = model.get_layer("logits")
    kernel_weights, bias = head.get_weights()
    head.set_weights([sharpen * kernel_weights, bias])
    return model


@pytest.mark.parametrize("config", CONFIGS)
def test_position_by_position_logits_equal_the_models(config, rng):
    model = _model((8, 10), *config)
    codes = rng.integers(0, K, size=(3, 8, 10)).astype("int32")

    fast = FastSampler(model).logits(codes)

    np.testing.assert_allclose(fast, model(codes).numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "grid, seed, temperature, config",
    [
        ((8, 8), 0, 1.0, CONFIGS[1]),
        ((8, 8), 3, 0.5, CONFIGS[4]),
        ((16, 16), 1, 1.0, CONFIGS[2]),
        ((16, 16), 2, 2.0, CONFIGS[5]),
        ((16, 16), 5, 0.7, CONFIGS[0]),
        ((8, 8), 9, 1.3, CONFIGS[3]),
        ((8, 8), 4, 1.0, CONFIGS[6]),
        ((8, 8), 8, 0.9, CONFIGS[7]),
        ((16, 16), 6, 1.0, CONFIGS[8]),
        ((8, 12), 7, 1.0, CONFIGS[9]),
    ],
)
def test_fast_and_naive_samplers_return_identical_grids(grid, seed, temperature, config):
    model = _model(grid, *config)
    kwargs = dict(temperature=temperature, seed=seed, batch_size=3, progress=False)

    fast = sample_codes(model, 5, grid, sampler="fast", **kwargs)
    naive = sample_codes(model, 5, grid, sampler="naive", **kwargs)

    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(fast)) > 2  # real draws, not a constant grid


@pytest.mark.parametrize("gated", [False, True])
def test_completing_a_partial_grid_matches_naive(gated, rng):
    model = _model((8, 8), gated, 5, 1, 1, 0, True)
    top_rows = rng.integers(0, K, size=(4, 3, 8))
    kwargs = dict(prefix=top_rows, seed=4, batch_size=4, progress=False)

    fast = sample_codes(model, 4, (8, 8), sampler="fast", **kwargs)
    naive = sample_codes(model, 4, (8, 8), sampler="naive", **kwargs)

    np.testing.assert_array_equal(fast, naive)
    np.testing.assert_array_equal(fast[:, :3], top_rows)


def test_batch_size_changes_speed_not_samples():
    model = _model((8, 8), *CONFIGS[1])
    grids = [
        sample_codes(model, 5, (8, 8), seed=6, batch_size=size, progress=False)
        for size in (1, 2, 5, 8)
    ]
    for other in grids[1:]:
        np.testing.assert_array_equal(grids[0], other)


def test_flop_count_of_a_known_layout():
    # One type-A 3x3 conv (4 taps kept, K -> 16), then the 1x1 logits layer (16 -> K).
    model = build_pixelcnn((4, 4), K, filters=16, residual_blocks=0, kernel_size=3,
                           hidden_layers=0)  # fmt: skip
    assert FastSampler(model).flops_per_code == 2 * 4 * 16 + 2 * 16 * K


def _unmasked_spatial_conv() -> keras.Model:
    inputs = keras.Input((6, 6), dtype="int32")
    x = OneHot(K, name="one_hot")(inputs)
    x = layers.Conv2D(8, 3, padding="same", name="masked_a")(x)  # sees the future
    return keras.Model(inputs, layers.Conv2D(K, 1, name="logits")(x))


def _dilated_mask() -> keras.Model:
    inputs = keras.Input((6, 6), dtype="int32")
    x = OneHot(K, name="one_hot")(inputs)
    x = MaskedConv2D(8, 3, mask_type="A", dilation_rate=2, name="masked_a")(x)
    return keras.Model(inputs, layers.Conv2D(K, 1, name="logits")(x))


def _extra_layer() -> keras.Model:
    model = build_pixelcnn((6, 6), K, filters=8, residual_blocks=1, hidden_layers=1)
    x = layers.Dropout(0.1, name="dropout")(model.get_layer("hidden_0").output)
    return keras.Model(model.input, model.get_layer("logits")(x))


@pytest.mark.parametrize(
    "build, message",
    [
        (_unmasked_spatial_conv, "without a mask"),
        (_dilated_mask, "dilation"),
        (_extra_layer, "not a build_pixelcnn layout"),
    ],
)
def test_models_it_cannot_reproduce_are_refused(build, message):
    model = build()
    with pytest.raises(UnsupportedModelError, match=message):
        sample_codes(model, 2, (6, 6), sampler="fast", progress=False)
    naive = sample_codes(model, 2, (6, 6), sampler="naive", progress=False)
    assert naive.shape == (2, 6, 6)


def test_64_samples_of_64x64_codes_fit_in_2_gb():
    # The seed-size PixelCNN (128 filters, 128 codes), in a fresh process. Its peak is read
    # from its own VmHWM: ru_maxrss would inherit this (large) test process's peak.
    script = (
        "import re; from oasis_vqvae.models import build_pixelcnn, sample_codes;"
        "m = build_pixelcnn((64, 64), 128, filters=128, residual_blocks=2, hidden_layers=2);"
        "codes = sample_codes(m, 64, (64, 64), batch_size=64, progress=False);"
        "assert codes.shape == (64, 64, 64);"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    peak_kb = int(result.stdout.split()[-1])
    assert 100 * 1024 < peak_kb < 2 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
