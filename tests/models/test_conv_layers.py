"""The project's Conv2D and Conv2DTranspose compute what Keras' layers compute (float32).

They replace Keras' layers inside the VQ-VAE with faster rewrites (AddV2 bias, 1x1 as a
matmul, project-then-select for few outputs), so each configuration the models build is
checked against `keras.layers.Conv2D` / `Conv2DTranspose` with the same weights: outputs and
the gradients with respect to the input, the kernel and the bias. Only the order of float
additions may differ, hence the float32 round-off tolerances.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from oasis_vqvae.models.vqvae import Conv2D, Conv2DTranspose

# (in channels, filters, kernel, strides, activation): every configuration build_encoder /
# build_decoder use (seed [32, 64] and demo [64] filters, residual 32, embedding 16, 1 and 3
# image channels), so each code path of the rewrites is covered.
CONV2D = [
    (1, 32, 4, 2, "relu"),  # down_0, seed
    (1, 64, 4, 2, "relu"),  # down_0, demo
    (3, 32, 4, 2, "relu"),  # down_0, RGB
    (32, 64, 4, 2, "relu"),  # down_1, seed
    (64, 32, 3, 1, None),  # res_i_conv3x3: plain convolution path
    (32, 64, 1, 1, None),  # res_i_conv1x1: matmul path
    (64, 16, 1, 1, None),  # pre_quantization: matmul path
    (16, 64, 3, 1, None),  # post_quantization
    (32, 1, 3, 1, "sigmoid"),  # reconstruction: project-then-select path (9 * 1 <= 32)
    (64, 1, 3, 1, "sigmoid"),  # reconstruction, demo
    (64, 3, 3, 1, "sigmoid"),  # reconstruction, RGB: project-then-select (27 <= 64)
]
CONV2D_TRANSPOSE = [
    (64, 64, 4, 2, "relu"),  # up_0, seed and demo
    (64, 32, 4, 2, "relu"),  # up_1, seed
    (16, 8, 4, 2, None),  # tiny test sizes
]
SIZE = 12


def _compare(ours: keras.layers.Layer, theirs: keras.layers.Layer, channels: int, seed: int):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(3, SIZE, SIZE, channels)), tf.float32)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [rng.normal(scale=0.3, size=w.shape).astype("float32") for w in theirs.weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            upstream = tf.constant(np.random.default_rng(seed + 1).normal(size=y.shape), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append([y, *grads])
    names = ["output", "d input", "d kernel", "d bias"][: len(results[0])]
    for name, mine, keras_value in zip(names, *results, strict=True):
        assert mine.dtype == keras_value.dtype == tf.float32
        np.testing.assert_allclose(
            mine.numpy(), keras_value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name
        )


@pytest.mark.parametrize(("channels", "filters", "kernel", "strides", "activation"), CONV2D)
def test_conv2d_matches_keras(channels, filters, kernel, strides, activation):
    options = dict(strides=strides, padding="same", activation=activation, dtype="float32")
    _compare(
        Conv2D(filters, kernel, **options),
        keras.layers.Conv2D(filters, kernel, **options),
        channels,
        seed=channels * 100 + filters,
    )


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_valid_padding_and_no_bias_match_keras(padding):
    options = dict(padding=padding, use_bias=False, dtype="float32")
    _compare(Conv2D(1, 3, **options), keras.layers.Conv2D(1, 3, **options), 16, seed=7)


@pytest.mark.parametrize(
    ("channels", "filters", "kernel", "strides", "activation"), CONV2D_TRANSPOSE
)
def test_conv2d_transpose_matches_keras(channels, filters, kernel, strides, activation):
    options = dict(strides=strides, padding="same", activation=activation, dtype="float32")
    _compare(
        Conv2DTranspose(filters, kernel, **options),
        keras.layers.Conv2DTranspose(filters, kernel, **options),
        channels,
        seed=channels * 100 + filters,
    )
