"""Conditional PixelCNN: causality, the condition is used and learned, null and dropout,
saving, exact fast sampling with conditions and guidance."""

from pathlib import Path

import keras
import numpy as np
import pytest

from oasis_vqvae.models import build_pixelcnn, sample_codes
from oasis_vqvae.models.conditioning import (
    condition_encodings,
    decode_conditions,
    encode_conditions,
    null_conditions,
)
from oasis_vqvae.models.fast_sampling import FastSampler
from oasis_vqvae.models.pixelcnn import PositionBias

K = 6
DATA = Path(__file__).parent / "data"
SPECS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]},
    "sex": {"kind": "categorical", "values": ["F", "M"]},
    "age": {"kind": "continuous", "range": [20.0, 90.0]},
}
ENCODINGS = condition_encodings(list(SPECS), SPECS)
CONDITIONS = np.array(
    [[0.1, 0, 1, 30.0], [0.9, 3, 0, 85.0], [0.5, 1, 1, 60.0], [np.nan] * 4], np.float32
)


def _model(gated: bool, grid=(5, 6), encodings=ENCODINGS, sharpen=4.0, **kwargs):
    arch = dict(filters=8, residual_blocks=2, kernel_size=3, hidden_layers=1, embedding_dim=4,
                position_bias=True, condition_dim=8)  # fmt: skip
    model = build_pixelcnn(grid, K, gated=gated, conditions=encodings, **{**arch, **kwargs})
    head = model.get_layer("logits")
    kernel, bias = head.get_weights()
    head.set_weights([sharpen * kernel, bias])
    return model


def _randomise_maps(model):
    """Give the conditional position maps (zero at the start) weights that matter."""
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, PositionBias) and layer.rank:
            layer.maps.assign(rng.normal(0, 1, layer.maps.shape).astype("float32"))
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))


def test_encoding_round_trip_and_bad_values():
    table = {"slice_level": [0.2, None], "cdr": [0.5, 2], "sex": ["M", "F"], "age": [71, 33.5]}
    encoded = encode_conditions(table, ENCODINGS)
    np.testing.assert_allclose(encoded[0], [0.2, 1, 1, 71.0])
    assert np.isnan(encoded[1, 0]) and encoded[1, 1] == 3
    decoded = decode_conditions(encoded, ENCODINGS)
    assert decoded["cdr"] == [0.5, 2.0] and decoded["sex"] == ["M", "F"]
    assert decoded["slice_level"][1] is None
    with pytest.raises(ValueError, match=r"cdr: 3 is not among"):
        encode_conditions({**table, "cdr": [3, 0]}, ENCODINGS)


@pytest.mark.parametrize("gated, maps", [(False, 0), (True, 0), (False, 3), (True, 3)])
def test_conditions_cannot_leak_codes(gated, maps):
    """Raster causality holds for every condition row (also with conditional position maps)."""
    model = _model(gated, condition_maps=maps)
    if maps:
        _randomise_maps(model)
    codes = np.random.default_rng(1).integers(0, K, size=(5, 6)).astype("int32")
    h, w = 5, 6
    raster = np.arange(h * w).reshape(h, w)
    for row in CONDITIONS:
        for i, j in [(0, 0), (2, 3), (4, 5)]:
            batch = np.stack([codes, codes])
            batch[1, i, j] = (batch[1, i, j] + 1) % K
            logits = model([batch, np.stack([row, row])]).numpy()
            change = np.abs(logits[1] - logits[0]).max(axis=-1)
            assert change[raster <= raster[i, j]].max() <= 1e-5


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_every_condition_changes_the_logits(gated):
    model = _model(gated)
    codes = np.zeros((1, 5, 6), "int32")
    base = model([codes, CONDITIONS[:1]]).numpy()
    for column, value in enumerate([0.8, 2, 0, 50.0]):
        other = CONDITIONS[:1].copy()
        other[0, column] = value
        assert np.abs(model([codes, other]).numpy() - base).min() > 1e-6  # every position


def test_nan_rows_get_the_null_and_dropout_only_acts_in_training():
    model = _model(True, condition_dropout=0.5)
    encoder = model.get_layer("condition_encoder")
    null = encoder(null_conditions(1, ENCODINGS)).numpy()
    partly = CONDITIONS[:1].copy()
    partly[0, 2] = np.nan  # one missing value: the whole row is null
    np.testing.assert_allclose(encoder(partly).numpy(), null)
    rows = np.repeat(CONDITIONS[:1], 400, axis=0)
    inference = encoder(rows, training=False).numpy()
    assert not np.isclose(inference, null).all(axis=1).any()
    training = encoder(rows, training=True).numpy()
    dropped = np.isclose(training, null).all(axis=1)
    assert 0.4 < dropped.mean() < 0.6
    # The draws are a function of the seed and the saved step count: a resumed run repeats them.
    again = encoder(rows, training=True).numpy()
    assert (np.isclose(again, null).all(axis=1) != dropped).any()
    encoder.dropout_step.assign(0)
    np.testing.assert_array_equal(np.isclose(encoder(rows, training=True), null).all(1), dropped)
    assert "dropout_step" in {w.name for w in model.weights}


@pytest.mark.parametrize("gated, maps", [(False, 0), (True, 0), (True, 2)])
def test_saves_and_loads_in_safe_mode(gated, maps, tmp_path):
    model = _model(gated, condition_dropout=0.2, condition_maps=maps)
    if maps:
        _randomise_maps(model)
    codes = np.random.default_rng(2).integers(0, K, (4, 5, 6)).astype("int32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded([codes, CONDITIONS]), model([codes, CONDITIONS]), atol=1e-6)
    assert loaded.get_layer("condition_encoder").encodings == ENCODINGS


@pytest.mark.parametrize("kind", ["plain", "gated"])
def test_models_saved_before_conditions_still_load_and_sample(kind):
    model = keras.models.load_model(DATA / f"unconditional_{kind}.keras", safe_mode=True)
    assert len(model.inputs) == 1
    codes = np.random.default_rng(3).integers(0, 6, (2, 4, 5)).astype("int32")
    np.testing.assert_allclose(FastSampler(model).logits(codes), model(codes), atol=1e-5)
    fresh = build_pixelcnn((4, 5), 6, filters=4, residual_blocks=1, kernel_size=3,
                           hidden_layers=1, gated=kind == "gated", embedding_dim=3,
                           position_bias=True)  # fmt: skip
    assert [layer.name for layer in fresh.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "gated, continuous, maps",
    [(False, "linear", 0), (True, "fourier", 0), (False, "linear", 3), (True, "linear", 3)],
)  # fmt: skip
def test_position_by_position_logits_equal_the_models(gated, continuous, maps):
    encodings = condition_encodings(list(SPECS), SPECS, continuous)
    model = _model(gated, encodings=encodings, condition_maps=maps)
    if maps:
        _randomise_maps(model)
    codes = np.random.default_rng(4).integers(0, K, (4, 5, 6)).astype("int32")
    fast = FastSampler(model).logits(codes, CONDITIONS)
    np.testing.assert_allclose(fast, model([codes, CONDITIONS]).numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "gated, seed, temperature, guidance, maps, dilations",
    [(False, 0, 1.0, 0.0, 0, (1,)), (True, 1, 0.7, 0.0, 0, (1,)), (False, 2, 1.3, 1.5, 0, (1,)),
     (True, 3, 2.0, 3.0, 0, (1,)), (False, 4, 1.0, 0.0, 2, (1,)), (True, 5, 1.0, 2.0, 2, (1,)),
     (True, 6, 1.0, 0.5, 2, (2, 1))],
)  # fmt: skip
def test_fast_and_naive_samplers_return_identical_grids(
    gated, seed, temperature, guidance, maps, dilations
):
    model = _model(gated, grid=(6, 6), condition_maps=maps, dilations=dilations)
    if maps:
        _randomise_maps(model)
    conditions = np.concatenate([CONDITIONS, CONDITIONS[:1]])
    kwargs = dict(temperature=temperature, seed=seed, batch_size=3, progress=False,
                  conditions=conditions, guidance=guidance)  # fmt: skip

    fast = sample_codes(model, 5, (6, 6), sampler="fast", **kwargs)
    naive = sample_codes(model, 5, (6, 6), sampler="naive", **kwargs)

    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(fast)) > 2


def test_conditions_change_the_samples_and_bad_conditions_are_refused():
    model = _model(True, grid=(6, 6))
    a = sample_codes(model, 4, (6, 6), seed=0, progress=False, conditions=CONDITIONS)
    b = sample_codes(model, 4, (6, 6), seed=0, progress=False, conditions=CONDITIONS[::-1])
    assert (a != b).any()
    with pytest.raises(ValueError, match="is conditional"):
        sample_codes(model, 4, (6, 6), progress=False)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        sample_codes(model, 4, (6, 6), progress=False, conditions=CONDITIONS[:, :2])
    plain = build_pixelcnn((6, 6), K, filters=8, residual_blocks=1)
    with pytest.raises(ValueError, match="unconditional"):
        sample_codes(plain, 4, (6, 6), progress=False, conditions=CONDITIONS)
    with pytest.raises(ValueError, match="guidance needs a conditional model"):
        sample_codes(plain, 4, (6, 6), progress=False, guidance=1.0)


def test_a_tiny_model_learns_a_label_from_codes():
    """Grids whose top row is the CDR index: the trained model prefers the right label."""
    rng = np.random.default_rng(0)
    encodings = condition_encodings(["cdr"], SPECS)
    labels = rng.integers(0, 4, 256)
    codes = rng.integers(4, K, (256, 4, 4))
    codes[:, 0, :] = labels[:, None]
    model = build_pixelcnn((4, 4), K, filters=16, residual_blocks=1, kernel_size=3,
                           hidden_layers=1, gated=True, embedding_dim=4, conditions=encodings,
                           condition_dim=8, condition_dropout=0.1)  # fmt: skip
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    x = [codes.astype("int32"), labels[:, None].astype("float32")]
    model.fit(x, codes, epochs=3, batch_size=32, verbose=0)

    test = rng.integers(0, 4, 64)
    grids = rng.integers(4, K, (64, 4, 4)).astype("int32")
    grids[:, 0, :] = test[:, None]
    log_likelihood = []  # (64, 4): log p(grid | cdr index c)
    for c in range(4):
        logits = model([grids, np.full((64, 1), c, "float32")]).numpy()
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_p, grids[..., None], -1)[..., 0]
        log_likelihood.append(picked.sum(axis=(1, 2)))
    best = np.argmax(np.stack(log_likelihood, 1), axis=1)
    assert (best == test).mean() > 0.9


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_condition_maps_make_the_position_bias_depend_on_the_conditions(gated):
    """With maps, a change of level changes positions by different amounts (not one bias)."""
    model = _model(gated, condition_maps=3)
    _randomise_maps(model)
    name = "position_h" if gated else "position"
    layer = model.get_layer(name)
    condition = model.get_layer("condition_encoder")(CONDITIONS[:2]).numpy()
    maps = layer.position_map(condition).numpy()
    difference = maps[1] - maps[0]  # (H, W, C): the two conditions' biases differ ...
    assert np.abs(difference).max() > 1e-3
    spread = difference - difference.mean(axis=(0, 1))  # ... and not by one per-channel shift
    assert np.abs(spread).max() > 1e-3
    with pytest.raises(ValueError, match="condition_maps needs position_bias"):
        _model(gated, condition_maps=2, position_bias=False)


def test_condition_maps_learn_a_layout_that_depends_on_the_level():
    """Grids whose first rows are code 1 below level 0.5 and code 2 above, the rest noise:
    a tiny prior with maps learns the layout, so samples at each level follow it."""
    rng = np.random.default_rng(0)
    encodings = condition_encodings(["slice_level"], SPECS)
    levels = rng.uniform(0, 1, 256).astype("float32")
    codes = rng.integers(3, K, (256, 4, 4))
    codes[:, 0, :] = np.where(levels < 0.5, 1, 2)[:, None]
    model = build_pixelcnn((4, 4), K, filters=16, residual_blocks=1, kernel_size=3,
                           hidden_layers=1, gated=True, embedding_dim=4, position_bias=True,
                           conditions=encodings, condition_dim=8, condition_maps=2)  # fmt: skip
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit([codes.astype("int32"), levels[:, None]], codes, epochs=5, batch_size=32, verbose=0)

    asked = np.repeat(np.float32([[0.1], [0.9]]), 16, axis=0)
    samples = sample_codes(model, 32, (4, 4), seed=0, progress=False, conditions=asked)
    top_left = samples[:, 0, 0]
    assert (top_left[:16] == 1).mean() > 0.9 and (top_left[16:] == 2).mean() > 0.9
