"""VQ-VAE builders, trainer (eager graph and XLA) and .keras round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from oasis_vqvae.models import (
    VectorQuantizer,
    VQVAETrainer,
    build_decoder,
    build_encoder,
    build_vqvae,
    decode_codes,
    encode_codes,
    latent_grid_shape,
)
from oasis_vqvae.precision import with_loss_scaling

TINY = dict(residual_blocks=1, residual_filters=8, embedding_dim=4, num_embeddings=16)
METRICS = (
    "loss", "reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity",
    "codes_in_use",
)  # fmt: skip


@pytest.mark.parametrize("filters, grid", [((8, 16), 8), ((8, 16, 16), 4)])
def test_output_shapes(filters, grid):
    images = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype("float32")
    arch = dict(image_size=32, filters=filters, residual_blocks=1, residual_filters=8,
                embedding_dim=4)  # fmt: skip
    encoder, decoder = build_encoder(**arch), build_decoder(**arch)
    vqvae = build_vqvae(**arch, num_embeddings=16)

    assert latent_grid_shape(32, filters) == (grid, grid)
    assert encoder(images).shape == (3, grid, grid, 4)
    assert decoder(np.zeros((3, grid, grid, 4), "float32")).shape == (3, 32, 32, 1)
    reconstructions = np.asarray(vqvae(images))
    assert reconstructions.shape == (3, 32, 32, 1)
    assert reconstructions.min() >= 0.0 and reconstructions.max() <= 1.0
    assert vqvae.name == "vqvae"
    assert vqvae.get_layer("encoder").output_shape == (None, grid, grid, 4)
    assert isinstance(vqvae.get_layer("vector_quantizer"), VectorQuantizer)
    assert vqvae.get_layer("decoder").output_shape == (None, 32, 32, 1)
    assert len(vqvae.losses) == 1


def test_three_channel_images():
    vqvae = build_vqvae(16, channels=3, filters=(8,), **TINY)
    assert vqvae(np.zeros((2, 16, 16, 3), "float32")).shape == (2, 16, 16, 3)


@pytest.mark.parametrize(
    "image_size, filters, message",
    [
        (30, (8, 16), "not divisible by 2\\*\\*len\\(filters\\) = 4"),
        (8, (8, 16, 16), "1x1 latent grid"),
        (32, (), "non-empty"),
        (0, (8,), "positive"),
    ],
)
def test_bad_image_size_raises(image_size, filters, message):
    with pytest.raises(ValueError, match=message):
        build_vqvae(image_size, filters=filters, **TINY)
    with pytest.raises(ValueError, match=message):
        build_encoder(image_size, filters=filters)


def test_losses_fall_on_a_fixed_batch(blob_images):
    vqvae = build_vqvae(32, filters=(16, 32), **TINY, seed=0)
    trainer = VQVAETrainer(vqvae)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = trainer.fit(blob_images, epochs=30, batch_size=8, verbose=0).history

    assert set(METRICS) <= set(history)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["reconstruction_loss"][-1] < 0.5 * history["reconstruction_loss"][0]
    assert all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_a_float32_quantizer(blob_images, policy):
    vqvae = build_vqvae(32, filters=(16, 32), **TINY, seed=0, dtype=policy)
    encoder, decoder = vqvae.get_layer("encoder"), vqvae.get_layer("decoder")
    assert encoder.get_layer("down_0").compute_dtype == policy.removeprefix("mixed_")
    assert decoder.get_layer("up_0").compute_dtype == policy.removeprefix("mixed_")
    for layer in (
        encoder.get_layer("pre_quantization"),
        vqvae.get_layer("vector_quantizer"),
        decoder.get_layer("reconstruction"),
    ):
        assert layer.compute_dtype == "float32", layer.name
    assert {w.dtype for w in vqvae.weights} == {"float32"}
    trainer = VQVAETrainer(vqvae)
    # Under mixed_float16 the optimizer scales the loss; without it the steps would vanish.
    trainer.compile(optimizer=with_loss_scaling(keras.optimizers.Adam(3e-3), policy))
    history = trainer.fit(blob_images, epochs=30, batch_size=8, verbose=0).history

    assert all(np.isfinite(history["loss"]))
    assert history["reconstruction_loss"][-1] < 0.5 * history["reconstruction_loss"][0]
    scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    assert vqvae.predict(blob_images, verbose=0).dtype == np.float32


def test_bfloat16_gradients_match_float32(blob_images):
    """Every weight's gradient in mixed_bfloat16 is float32's up to bfloat16 rounding.

    A sum of many terms in bfloat16 stops growing (8 bits of mantissa): Keras' BiasAdd
    sums the transposed convolution's bias gradient that way, 36% wrong here (96% for
    the demo's batches of 64x64 slices).
    """
    arch = dict(image_size=32, filters=(16, 32), **TINY, seed=0)
    reference = build_vqvae(**arch)
    mixed = build_vqvae(**arch, dtype="mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    gradients = []
    for vqvae in (reference, mixed):
        trainer = VQVAETrainer(vqvae)
        with tf.GradientTape() as tape:
            _, stats = trainer._forward(tf.constant(blob_images), training=False)
        grads = tape.gradient(stats["loss"], vqvae.trainable_weights)
        gradients.append([tf.convert_to_tensor(g) for g in grads])  # the codebook's are sparse
    # Rounding alone stays under 5% with oneDNN's native bfloat16 (AVX512_BF16/AMX) and
    # reaches 6.2% (post_quantization) where TensorFlow emulates it (an AVX2-only CPU);
    # the defect this guards against is 36%.
    for weight, exact, rounded in zip(reference.trainable_weights, *gradients, strict=True):
        error = float(tf.norm(exact - rounded) / tf.norm(exact))
        assert error < 0.1, f"{weight.path}: {error:.1%}"


@pytest.fixture
def without_op_determinism():
    """Op determinism off for one test, as in a fresh process.

    Keras turns XLA off while it is on, and an earlier stage run in this process (its
    seed_everything) may have turned it on.
    """
    from tensorflow.python.framework import config

    was_on = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was_on:
        config.enable_op_determinism()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_trainer_fit_with_ema_and_restarts(blob_images, jit_compile, without_op_determinism):
    vqvae = build_vqvae(
        32, filters=(8, 16), **TINY, ema=True, ema_decay=0.5, dead_code_threshold=0.5, seed=0
    )
    quantizer = vqvae.get_layer("vector_quantizer")
    codebook = quantizer.embeddings.numpy()
    trainer = VQVAETrainer(vqvae, data_variance=0.1)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    history = trainer.fit(
        blob_images, validation_data=(blob_images,), epochs=2, batch_size=4, verbose=0
    ).history

    assert trainer.jit_compile == jit_compile
    assert set(history) == set(METRICS) | {f"val_{m}" for m in (*METRICS, "ssim")}
    assert all(np.isfinite(values).all() for values in history.values())
    assert 0.0 <= history["val_ssim"][-1] <= 1.0
    assert 1.0 <= history["perplexity"][-1] <= 16.0
    assert history["codebook_loss"] == [0.0, 0.0]  # the EMA codebook takes no gradients
    # The EMA / restart path ran inside the compiled step.
    assert not np.allclose(quantizer.embeddings.numpy(), codebook)
    assert set(trainer.last_batch_logs()) == set(METRICS)
    # Evaluation leaves the codebook alone.
    codebook = quantizer.embeddings.numpy()
    logs = trainer.evaluate(blob_images, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_array_equal(quantizer.embeddings.numpy(), codebook)
    assert set(logs) == set(METRICS) | {"ssim"}


def test_plain_trainer_reports_loss_terms(blob_images):
    vqvae = build_vqvae(32, filters=(8, 16), **TINY, beta=0.5, seed=0)
    trainer = VQVAETrainer(vqvae, data_variance=0.5)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(blob_images, epochs=1, batch_size=8, verbose=0)
    logs = trainer.last_batch_logs()
    expected = logs["reconstruction_loss"] + logs["codebook_loss"] + 0.5 * logs["commitment_loss"]
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    assert logs["codebook_loss"] > 0


def test_trainer_validates_arguments():
    vqvae = build_vqvae(16, filters=(8,), **TINY)
    with pytest.raises(ValueError, match="data_variance"):
        VQVAETrainer(vqvae, data_variance=0.0)
    with pytest.raises(ValueError, match="encoder"):
        VQVAETrainer(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


@pytest.mark.parametrize("ema", [False, True])
def test_save_and_load_with_safe_mode(tmp_path, blob_images, ema):
    vqvae = build_vqvae(32, filters=(8, 16), **TINY, ema=ema, dead_code_threshold=0.1, seed=0)
    trainer = VQVAETrainer(vqvae)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(blob_images, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "vqvae.keras"
    trainer.vqvae.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)

    np.testing.assert_array_equal(np.asarray(loaded(blob_images)), np.asarray(vqvae(blob_images)))
    np.testing.assert_array_equal(
        encode_codes(loaded, blob_images), encode_codes(vqvae, blob_images)
    )
    original_vq, loaded_vq = (
        vqvae.get_layer("vector_quantizer"),
        loaded.get_layer("vector_quantizer"),
    )
    assert loaded_vq.get_config() == original_vq.get_config()
    for a, b in zip(original_vq.weights, loaded_vq.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encode_and_decode_codes(blob_images):
    vqvae = build_vqvae(32, filters=(8, 16), **TINY, seed=0)
    codes = encode_codes(vqvae, blob_images, batch_size=3)
    assert codes.shape == (8, 8, 8) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 16
    images = decode_codes(vqvae, codes, batch_size=3)
    assert images.shape == (8, 32, 32, 1) and images.dtype == np.float32
    # Decoding the codes of an image is exactly the VQ-VAE's reconstruction.
    np.testing.assert_allclose(images, np.asarray(vqvae(blob_images)), atol=1e-6)
    assert encode_codes(vqvae, blob_images[:0]).shape == (0, 8, 8)
    assert decode_codes(vqvae, codes[:0]).shape == (0, 32, 32, 1)


def test_trainer_round_trips_and_keeps_training(tmp_path, blob_images):
    vqvae = build_vqvae(32, filters=(8, 16), **TINY, ema=True, dead_code_threshold=0.1, seed=0)
    trainer = VQVAETrainer(vqvae, data_variance=0.2)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(blob_images, epochs=1, batch_size=4, verbose=0)
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.models.load_model(tmp_path / "trainer.keras", safe_mode=True)

    assert isinstance(loaded, VQVAETrainer) and loaded.data_variance == 0.2
    np.testing.assert_array_equal(
        np.asarray(loaded.vqvae(blob_images)), np.asarray(vqvae(blob_images))
    )
    assert loaded.optimizer.iterations.numpy() == 2
    history = loaded.fit(blob_images, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][0])
