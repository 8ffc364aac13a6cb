"""VectorQuantizer: assignment, losses, gradients, EMA, restarts, edge cases."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oasis_vqvae.models import VectorQuantizer


def _numpy_nearest(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    distances = ((x[..., None, :] - codebook) ** 2).sum(-1)
    return distances.argmin(-1)


def _built(shape=(2, 4, 5, 3), num_embeddings=10, **kwargs) -> VectorQuantizer:
    layer = VectorQuantizer(num_embeddings, shape[-1], seed=0, **kwargs)
    layer.build((None, *shape[1:]))
    return layer


@pytest.mark.parametrize("ema", [False, True])
def test_nearest_code_matches_numpy_reference(rng, ema):
    layer = _built(ema=ema)
    codebook = layer.embeddings.numpy()
    x = rng.normal(scale=0.5, size=(2, 4, 5, 3)).astype("float32")

    expected = _numpy_nearest(x, codebook)
    indices = layer.get_code_indices(x).numpy()
    out = layer(x, return_dict=True)

    assert indices.dtype == np.int32
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(out["indices"].numpy(), expected)
    np.testing.assert_allclose(out["quantized"].numpy(), codebook[expected], atol=1e-6)
    assert len(np.unique(expected)) > 1  # a meaningful check, not a single code


def test_output_shapes_and_statistics(rng):
    layer = VectorQuantizer(8, 3, beta=0.5, seed=0)
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    out = layer(x, return_dict=True)

    assert layer(x).shape == (2, 4, 5, 3)
    assert out["quantized"].shape == (2, 4, 5, 3)
    assert out["indices"].shape == (2, 4, 5)
    q = layer.embeddings.numpy()[out["indices"].numpy()]
    mse = np.mean((x - q) ** 2)
    np.testing.assert_allclose(out["codebook_loss"].numpy(), mse, rtol=1e-5)
    np.testing.assert_allclose(out["commitment_loss"].numpy(), mse, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), 1.5 * mse, rtol=1e-5)
    np.testing.assert_allclose(float(sum(layer.losses)), 1.5 * mse, rtol=1e-5)
    counts = np.bincount(out["indices"].numpy().ravel(), minlength=8)
    p = counts / counts.sum()
    perplexity = np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))
    np.testing.assert_allclose(out["perplexity"].numpy(), perplexity, rtol=1e-4)
    np.testing.assert_allclose(out["codes_in_use"].numpy(), np.mean(counts > 0))


def test_straight_through_gradient_reaches_inputs(rng):
    layer = _built()
    x = tf.Variable(rng.normal(size=(2, 4, 5, 3)).astype("float32"))
    upstream = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        y = layer(x, training=True)
        decoder_loss = tf.reduce_sum(y * upstream)
        vq_loss = sum(layer.losses)
    # The decoder's gradient passes through unchanged; the commitment loss adds more.
    np.testing.assert_allclose(tape.gradient(decoder_loss, x).numpy(), upstream, atol=1e-6)
    assert np.abs(tape.gradient(vq_loss, x).numpy()).max() > 0


def test_plain_codebook_gets_gradients_only_for_used_codes(rng):
    layer = _built(num_embeddings=50)
    x = rng.normal(scale=0.3, size=(1, 2, 2, 3)).astype("float32")
    with tf.GradientTape() as tape:
        layer(x, training=True)
        loss = sum(layer.losses)
    grads = tf.convert_to_tensor(tape.gradient(loss, layer.trainable_weights)[0]).numpy()
    used = np.unique(layer.get_code_indices(x).numpy())

    assert layer.trainable_weights[0] is layer.embeddings
    assert np.all(np.abs(grads[used]).sum(-1) > 0)
    unused = np.setdiff1d(np.arange(50), used)
    np.testing.assert_array_equal(grads[unused], 0.0)


def test_ema_updates_codebook_only_when_training(rng):
    decay, eps = 0.9, 1e-5
    layer = _built(num_embeddings=6, ema=True, ema_decay=decay, epsilon=eps)
    initial = layer.embeddings.numpy()
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")

    assert layer.trainable_weights == []
    layer(x, training=False)
    np.testing.assert_array_equal(layer.embeddings.numpy(), initial)

    layer(x, training=True)
    # NumPy reference of one EMA step from the initial state (counts 1, sums = codes).
    flat = x.reshape(-1, 3)
    onehot = np.eye(6)[_numpy_nearest(flat, initial)]
    cluster = decay + (1 - decay) * onehot.sum(0)
    dw = decay * initial + (1 - decay) * onehot.T @ flat
    n = cluster.sum()
    smoothed = (cluster + eps) / (n + 6 * eps) * n
    np.testing.assert_allclose(layer.embeddings.numpy(), dw / smoothed[:, None], atol=1e-5)
    assert not np.allclose(layer.embeddings.numpy(), initial)


def test_ema_loss_is_commitment_only(rng):
    layer = _built(ema=True, beta=0.25)
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    out = layer(x, return_dict=True)
    assert float(out["codebook_loss"]) == 0.0
    np.testing.assert_allclose(out["loss"], 0.25 * out["commitment_loss"].numpy(), rtol=1e-6)


def test_quantize_indices_inverts_get_code_indices(rng):
    layer = _built()
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    codes = layer.get_code_indices(x)
    np.testing.assert_allclose(layer.quantize_indices(codes).numpy(), layer(x).numpy(), atol=1e-6)
    assert layer.quantize_indices(np.array([[0, 9]])).shape == (1, 2, 3)


def test_wrong_last_dimension_raises(rng):
    with pytest.raises(ValueError, match="embedding_dim=4"):
        VectorQuantizer(8, 4)(np.zeros((1, 2, 2, 3), "float32"))
    layer = _built()  # built for D = 3
    with pytest.raises(ValueError, match="embedding_dim=3"):
        layer(np.zeros((1, 2, 2, 5), "float32"))
    with pytest.raises(ValueError, match="embedding_dim=3"):
        layer.get_code_indices(np.zeros((1, 2, 2, 5), "float32"))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_embeddings=1, embedding_dim=3),
        dict(num_embeddings=8, embedding_dim=0),
        dict(num_embeddings=8, embedding_dim=3, ema_decay=1.0),
        dict(num_embeddings=8, embedding_dim=3, dead_code_threshold=1.5),
        dict(num_embeddings=8, embedding_dim=3, beta=-1.0),
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        VectorQuantizer(**kwargs)


@pytest.mark.parametrize("ema", [False, True])
def test_empty_batch(ema):
    layer = _built(ema=ema, dead_code_threshold=0.5)
    before = layer.embeddings.numpy()
    x = np.zeros((0, 4, 5, 3), "float32")
    out = layer(x, training=True, return_dict=True)

    assert out["quantized"].shape == (0, 4, 5, 3)
    assert out["indices"].shape == (0, 4, 5)
    assert layer.get_code_indices(x).shape == (0, 4, 5)
    assert layer.quantize_indices(np.zeros((0, 4, 5), "int32")).shape == (0, 4, 5, 3)
    for key in ("loss", "codebook_loss", "commitment_loss", "perplexity", "codes_in_use"):
        assert np.isfinite(out[key].numpy()), key
    # No data: codebook and usage statistics must not move (and stay finite).
    np.testing.assert_allclose(layer.embeddings.numpy(), before, atol=1e-6)
    np.testing.assert_allclose(layer.usage.numpy(), 1 / 10)


def _collapsed_layer(ema: bool, threshold: float, seed: int = 0) -> VectorQuantizer:
    """8 codes: code 0 at the origin, codes 1..7 far from any data."""
    layer = VectorQuantizer(8, 2, ema=ema, ema_decay=0.5, dead_code_threshold=threshold, seed=seed)
    layer.build((None, 4, 4, 2))
    codebook = np.stack([[50.0 + k, 50.0] for k in range(8)]).astype("float32")
    codebook[0] = 0.0
    layer.embeddings.assign(codebook)
    if ema:
        layer.ema_dw.assign(codebook)
    return layer


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_revives_unused_codes(rng, ema):
    x = rng.normal(size=(4, 4, 4, 2)).astype("float32")
    revived, control = _collapsed_layer(ema, 0.5), _collapsed_layer(ema, 0.0)
    for _ in range(3):
        revived(x, training=True)
        control(x, training=True)
    used_revived = float(revived(x, return_dict=True)["codes_in_use"])
    used_control = float(control(x, return_dict=True)["codes_in_use"])

    assert used_control == 1 / 8  # without restarts the codebook stays collapsed
    assert used_revived > 0.5
    # Restarted codes sit in the data, not at the far-away initial values.
    assert np.abs(revived.embeddings.numpy()).max() < 10
    # Restarts are deterministic given the seed, and the seed matters.
    again, other = _collapsed_layer(ema, 0.5), _collapsed_layer(ema, 0.5, seed=1)
    for _ in range(3):
        again(x, training=True)
        other(x, training=True)
    np.testing.assert_array_equal(again.embeddings.numpy(), revived.embeddings.numpy())
    assert not np.array_equal(other.embeddings.numpy(), revived.embeddings.numpy())


def test_no_restart_when_not_training(rng):
    layer = _collapsed_layer(ema=False, threshold=0.5)
    before = layer.embeddings.numpy()
    x = rng.normal(size=(4, 4, 4, 2)).astype("float32")
    for _ in range(3):
        layer(x, training=False)
    np.testing.assert_array_equal(layer.embeddings.numpy(), before)


def test_get_config_round_trip():
    layer = VectorQuantizer(
        12,
        5,
        beta=0.3,
        ema=True,
        ema_decay=0.95,
        epsilon=1e-4,
        dead_code_threshold=0.1,
        seed=7,
        data_init=True,
        name="vq",
    )
    clone = VectorQuantizer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(VectorQuantizer) == "oasis_vqvae>VectorQuantizer"


@pytest.mark.parametrize("ema", [False, True])
def test_data_init_sets_codebook_from_first_training_batch(rng, ema):
    x = rng.normal(loc=5.0, size=(2, 4, 4, 3)).astype("float32")  # far from the init
    layer = _built(shape=x.shape, num_embeddings=8, ema=ema, data_init=True)
    before = layer.embeddings.numpy()
    layer(x, training=False)  # inference never initialises
    np.testing.assert_array_equal(layer.embeddings.numpy(), before)
    assert float(layer.initialized.numpy()) == 0.0

    out = layer(x, training=True, return_dict=True)
    flat = x.reshape(-1, 3)
    codebook = layer.embeddings.numpy()
    assert float(layer.initialized.numpy()) == 1.0
    if not ema:  # EMA moves the codes toward their cluster means after the init
        # Every code is one of the batch's vectors.
        assert all(np.any(np.all(np.isclose(flat, c), axis=1)) for c in codebook)
    assert float(out["codes_in_use"]) > 0.5  # not collapsed onto one code
    # Once only: a later, different batch leaves the (plain) codebook as it was.
    if not ema:
        layer(x + 100.0, training=True)
        np.testing.assert_array_equal(layer.embeddings.numpy(), codebook)
    # Deterministic given the seed.
    again = _built(shape=x.shape, num_embeddings=8, ema=ema, data_init=True)
    again(x, training=True)
    np.testing.assert_array_equal(again.embeddings.numpy(), codebook)


def test_data_init_in_a_compiled_train_step_and_round_trip(rng, tmp_path):
    from oasis_vqvae.models import VQVAETrainer, build_vqvae

    images = rng.uniform(size=(8, 16, 16, 1)).astype("float32")
    model = build_vqvae(
        16, num_embeddings=8, ema=True, dead_code_threshold=0.5, seed=0, data_init=True
    )
    trainer = VQVAETrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    trainer.fit(images, epochs=1, batch_size=4, verbose=0)
    quantizer = model.get_layer("vector_quantizer")
    assert float(quantizer.initialized.numpy()) == 1.0
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    loaded_q = loaded.get_layer("vector_quantizer")
    assert loaded_q.data_init and float(loaded_q.initialized.numpy()) == 1.0
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
