"""PixelCNN: masks, strict raster causality, no blind spot (gated), shapes, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oasis_vqvae.models import MaskedConv2D, build_pixelcnn, causal_mask

GRID = (5, 6)
K = 5
TOL = 1e-5  # masked taps contribute exact zeros, up to convolution-algorithm round-off


def _model(gated: bool, kernel_size: int = 3, **kwargs) -> keras.Model:
    arch = dict(filters=16, residual_blocks=2, hidden_layers=1)
    return build_pixelcnn(GRID, K, kernel_size=kernel_size, gated=gated, **{**arch, **kwargs})


def _logit_changes(model: keras.Model, codes: np.ndarray, positions) -> np.ndarray:
    """max |delta logits| per grid position (P, H, W) when the code at each position changes."""
    batch = np.repeat(codes[None], len(positions) + 1, axis=0)
    for n, (i, j) in enumerate(positions, start=1):
        batch[n, i, j] = (batch[n, i, j] + 1) % K
    logits = np.asarray(model(batch))
    return np.abs(logits[1:] - logits[:1]).max(axis=-1)


def test_causal_masks():
    np.testing.assert_array_equal(causal_mask(3, "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask(3, "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((1, 3), "A"), [[1, 0, 0]])
    np.testing.assert_array_equal(causal_mask(3, "vertical_A"), [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask(3, "vertical_B"), [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    assert causal_mask(7, "A").sum() == 3 * 7 + 3
    with pytest.raises(ValueError, match="odd"):
        causal_mask(4, "A")
    with pytest.raises(ValueError, match="mask_type"):
        causal_mask(3, "C")
    with pytest.raises(ValueError, match="strides"):
        MaskedConv2D(4, 3, strides=2)
    with pytest.raises(ValueError, match="sees nothing"):
        MaskedConv2D(4, 1, mask_type="A")


@pytest.mark.parametrize(
    "kernel_size, mask_type",
    [(7, "A"), (7, "B"), (3, "B"), (5, "vertical_A"), (3, "vertical_B"), ((1, 7), "A"),
     ((1, 3), "B"), ((5, 3), "A"), (1, "B")],
)  # fmt: skip
@pytest.mark.parametrize("dilation", [1, 2])
def test_masked_conv_is_the_same_conv_of_the_masked_kernel(kernel_size, mask_type, dilation):
    """It convolves only the kept taps: same values and gradients as the full masked conv."""
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 7, 3)), tf.float32)
    layer = MaskedConv2D(
        4, kernel_size, mask_type=mask_type, dilation_rate=dilation,
        bias_initializer="random_normal",
    )  # fmt: skip
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = layer(x)
        masked = layer.kernel * causal_mask(layer.kernel_size, mask_type)[:, :, None, None]
        reference = keras.ops.conv(x, masked, padding="same", dilation_rate=dilation) + layer.bias
    np.testing.assert_allclose(ours, reference, atol=TOL)
    for wrt in (x, layer.kernel):
        np.testing.assert_allclose(
            tape.gradient(ours, wrt), tape.gradient(reference, wrt), atol=TOL
        )


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_strict_raster_causality(gated, kernel_size):
    model = _model(gated, kernel_size)
    codes = np.random.default_rng(kernel_size).integers(0, K, size=GRID).astype("int32")
    h, w = GRID
    positions = [(0, 0), (0, w - 1), (2, 0), (2, 3), (3, w - 1), (h - 1, 0)]
    changes = _logit_changes(model, codes, positions)
    raster = np.arange(h * w).reshape(GRID)

    for (i, j), change in zip(positions, changes, strict=True):
        p = raster[i, j]
        assert change[raster <= p].max() <= TOL, f"logits at or before {(i, j)} changed"
        # The check has teeth: the next position on the row (or below) sees the change.
        nxt = (i, j + 1) if j + 1 < w else (i + 1, j)
        assert change[nxt] > 100 * TOL, f"{nxt} ignores {(i, j)}"


def test_gated_has_no_blind_spot():
    # The code just up-right of (i, j), at (i - 1, j + 2), lies in the blind spot of a
    # plain PixelCNN with 3x3 masks however deep it is; the gated stacks see it.
    codes = np.random.default_rng(1).integers(0, K, size=GRID).astype("int32")
    i, j = 2, 1
    for gated in (False, True):
        changes = _logit_changes(_model(gated, kernel_size=3), codes, [(i - 1, j + 2)])[0]
        if gated:
            assert changes[i, j] > 100 * TOL
        else:
            assert changes[i, j] <= TOL


def test_dilated_vertical_stacks_stay_causal_and_reach_further_up():
    # 3x3 first layer (1 row up) then two gated layers: undilated they reach 1 + 1 + 1 rows
    # up; dilated by 2 and 4, 1 + 2 + 4. A code 7 rows up is seen only with dilation.
    grid = (9, 6)
    codes = np.random.default_rng(3).integers(0, K, size=grid).astype("int32")
    raster = np.arange(grid[0] * grid[1]).reshape(grid)
    reach = {}
    for dilations in [(1,), (2, 4)]:
        model = build_pixelcnn(grid, K, filters=16, residual_blocks=2, kernel_size=3,
                               hidden_layers=1, gated=True, dilations=dilations)  # fmt: skip
        positions = [(r, c) for r in range(grid[0]) for c in range(grid[1])]
        changes = _logit_changes(model, codes, positions)
        for (i, j), change in zip(positions, changes, strict=True):
            assert change[raster <= raster[i, j]].max() <= TOL, f"{dilations}: {(i, j)} leaks"
        reach[dilations] = changes[positions.index((1, 3)), 8, 3]
    assert reach[(1,)] <= TOL
    assert reach[(2, 4)] > 10 * TOL  # through two random gated layers: small, not round-off


def test_gated_sees_every_earlier_position_in_its_window():
    model = _model(True, kernel_size=3, residual_blocks=3)
    codes = np.random.default_rng(2).integers(0, K, size=GRID).astype("int32")
    i, j = 3, 2
    earlier = [(r, c) for r in range(i - 2, i) for c in range(GRID[1])] + [(i, c) for c in range(j)]
    changes = _logit_changes(model, codes, earlier)
    assert all(change[i, j] > 100 * TOL for change in changes)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_output_shape_and_logits(gated):
    model = _model(gated)
    codes = np.zeros((3, *GRID), "int32")
    logits = np.asarray(model(codes))
    assert logits.shape == (3, *GRID, K)
    assert logits.dtype == np.float32
    assert model.name == "pixelcnn"
    assert model.input.dtype == "int32"
    assert not np.allclose(logits.sum(-1), 1.0)  # logits, not probabilities


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_training_lowers_loss_and_keeps_causality(gated):
    model = _model(gated)
    rng = np.random.default_rng(3)
    # Codes that repeat the row above: predictable from the past only.
    first_rows = rng.integers(0, K, size=(16, 1, GRID[1]))
    codes = np.repeat(first_rows, GRID[0], axis=1).astype("int32")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(codes, codes, epochs=15, batch_size=16, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    changes = _logit_changes(model, codes[0], [(2, 3)])[0]
    raster = np.arange(np.prod(GRID)).reshape(GRID)
    assert changes[raster <= raster[2, 3]].max() <= TOL


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_bfloat16_gradients_match_float32_and_stay_causal(gated):
    """Mixed bfloat16 computes what float32 does, up to rounding, in every sub-layer.

    Rounding moves these gradients by up to ~20% at initialisation; a bias gradient summed
    in bfloat16 (Keras' BiasAdd, which the project's convolutions avoid) over these 8192
    positions is off by about its whole size (98% and 139% with stock Keras layers).
    """
    grid = (16, 16)
    arch = dict(grid_shape=grid, num_embeddings=K, filters=16, residual_blocks=2, kernel_size=5,
                gated=gated, embedding_dim=8, position_bias=True)  # fmt: skip
    reference = build_pixelcnn(**arch)
    mixed = build_pixelcnn(**arch, dtype="mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    computing = {layer.compute_dtype for layer in mixed._flatten_layers() if layer.weights}
    assert computing == {"bfloat16", "float32"}  # float32: the embedding and the logits
    codes = np.random.default_rng(5).integers(0, K, size=(32, *grid)).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    gradients = []
    for model in (reference, mixed):
        with tf.GradientTape() as tape:
            value = loss(codes, model(codes, training=True))
        grads = tape.gradient(value, model.trainable_weights)
        gradients.append([tf.convert_to_tensor(g) for g in grads])  # the embedding's are sparse
    for weight, exact, rounded in zip(reference.trainable_weights, *gradients, strict=True):
        error = float(tf.norm(exact - rounded) / tf.norm(exact))
        assert error < 0.35, f"{weight.path}: {error:.1%}"
    changes = _logit_changes(mixed, codes[0], [(2, 3)])[0]
    raster = np.arange(np.prod(grid)).reshape(grid)
    assert changes[raster <= raster[2, 3]].max() <= TOL


@pytest.mark.parametrize(
    "gated, dilations", [(False, (1,)), (True, (1,)), (True, (1, 2))],
    ids=["plain", "gated", "dilated"],
)  # fmt: skip
def test_save_and_load_with_safe_mode(tmp_path, gated, dilations):
    model = _model(gated, kernel_size=5, dilations=dilations)
    path = tmp_path / "pixelcnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    codes = np.random.default_rng(4).integers(0, K, size=(2, *GRID)).astype("int32")
    np.testing.assert_array_equal(np.asarray(loaded(codes)), np.asarray(model(codes)))
    masked = [layer for layer in loaded._flatten_layers() if isinstance(layer, MaskedConv2D)]
    assert masked and all(layer.mask_type in ("A", "B", "vertical_A", "vertical_B")
                          for layer in masked)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_embeddings=1), dict(kernel_size=4), dict(kernel_size=1), dict(filters=1),
     dict(residual_blocks=-1), dict(dilations=(2,)), dict(gated=True, dilations=(0,))],
)  # fmt: skip
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        build_pixelcnn(GRID, **{"num_embeddings": K, **kwargs})
