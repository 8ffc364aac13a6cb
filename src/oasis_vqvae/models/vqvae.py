"""VQ-VAE: encoder, vector quantizer, decoder, and a trainer for `fit`.

For images of shape ``(S, S, C)`` and ``filters=(32, 64)`` (two stride-2
convolutions), the encoder maps ``(B, S, S, C)`` to a latent grid
``(B, S/4, S/4, embedding_dim)``; the quantizer snaps every latent vector to one of
``num_embeddings`` codes; the decoder maps the grid back to ``(B, S, S, C)`` in
``[0, 1]`` (sigmoid output). E.g. 128x128 slices become 32x32 grids of codes.

All models are plain Keras functional models made of built-in layers and the
registered `VectorQuantizer`, `Conv2D` and `Conv2DTranspose` (Keras' layers with the
same weights and math, whose train step is faster on CPU and right in bfloat16), so
``.keras`` files load with ``safe_mode=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from oasis_vqvae.distribute import scale_for_replicas
from oasis_vqvae.models.quantizer import VectorQuantizer

__all__ = [
    "Conv2D",
    "Conv2DTranspose",
    "VQVAETrainer",
    "bias_and_activation",
    "build_decoder",
    "build_encoder",
    "build_vqvae",
    "decode_codes",
    "encode_codes",
    "latent_grid_shape",
]


def latent_grid_shape(
    image_size: int | Sequence[int], filters: Sequence[int] = (32, 64)
) -> tuple[int, int]:
    """Latent grid ``(h, w)`` for an image size; raises ValueError if impossible.

    E.g. ``latent_grid_shape(128, (32, 64)) == (32, 32)``.
    """
    height, width = _as_hw(image_size)
    if len(filters) < 1 or any(int(f) < 1 for f in filters):
        raise ValueError(f"filters must be a non-empty list of positive ints, got {filters}.")
    factor = 2 ** len(filters)
    if height % factor or width % factor:
        raise ValueError(
            f"image_size {height}x{width} is not divisible by 2**len(filters) = "
            f"{factor} ({len(filters)} stride-2 convolutions)."
        )
    if height // factor < 2 or width // factor < 2:
        raise ValueError(
            f"image_size {height}x{width} with {len(filters)} downsamplings gives a "
            f"{height // factor}x{width // factor} latent grid; at least 2x2 is needed."
        )
    return height // factor, width // factor


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size}.")
    return size  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class Conv2D(layers.Conv2D):
    """`keras.layers.Conv2D` with the same arguments, weights and math, and a faster train step.

    A drop-in subclass (same config, kernel ``(kh, kw, C, filters)`` and bias) that only
    changes how the output is computed, with three rewrites that TensorFlow's oneDNN CPU
    kernels run much faster, in the backward pass especially:

    - the bias is added with a plain broadcasting add (``AddV2``), not ``BiasAdd``: Keras
      turns ``ops.add(conv, bias)`` into ``BiasAdd``, whose gradient TensorFlow fuses
      with the kernel gradient into one ``Conv2DBackpropFilterWithBias`` oneDNN op that
      is slower than the two separate ops, up to 5x for these shapes;
    - a 1x1 stride-1 convolution is a ``(B*H*W, C) @ (C, filters)`` matmul;
    - a stride-1 convolution with few outputs (``kh*kw*filters <= C``, e.g. the 3x3 conv
      from 32 channels to 1 that outputs images) first projects every pixel on all
      ``kh*kw`` taps with one matmul, ``z = x @ K`` with ``K`` of shape
      ``(C, kh*kw*filters)``, then sums the taps over the window with a convolution by a
      constant 0/1 selector kernel; oneDNN's kernels for single-output-channel
      convolutions are slow.

    Each rewrite computes the same sums as the convolution (only the order of
    floating-point additions differs). Other configurations (strides, dilation, groups,
    channels_first) use Keras' own convolution, with the bias added as above.
    """

    def call(self, inputs: Any) -> Any:
        """``activation(conv(inputs, kernel) + bias)``, as `keras.layers.Conv2D`."""
        kernel = self.kernel
        if self._rewritable():
            kh, kw, channels, filters = (int(d) for d in kernel.shape)
            if kh == kw == 1:
                outputs = _pointwise(inputs, ops.reshape(kernel, (channels, filters)))
            elif kh * kw * filters <= channels:
                outputs = self._project_then_select(inputs, kernel)
            else:
                outputs = self.convolution_op(inputs, kernel)
        else:
            outputs = self.convolution_op(inputs, kernel)
        return bias_and_activation(self, outputs)

    def _rewritable(self) -> bool:
        return (
            self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
        )

    def _project_then_select(self, inputs: Any, kernel: Any) -> Any:
        """``sum_taps (x @ K_tap)`` over the window: one matmul, one 0/1 convolution."""
        kh, kw, channels, filters = (int(d) for d in kernel.shape)
        taps = kh * kw * filters
        # Column (dy * kw + dx) * filters + f of the projection is kernel[dy, dx, :, f].
        projection = ops.reshape(ops.transpose(kernel, (2, 0, 1, 3)), (channels, taps))
        z = _pointwise(inputs, projection)
        selector = np.zeros((kh, kw, taps, filters), dtype="float32")
        for dy in range(kh):
            for dx in range(kw):
                for f in range(filters):
                    selector[dy, dx, (dy * kw + dx) * filters + f, f] = 1.0
        selector = ops.convert_to_tensor(selector, dtype=z.dtype)
        return ops.conv(z, selector, strides=1, padding=self.padding)


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class Conv2DTranspose(layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` with the bias added by ``AddV2``, not ``BiasAdd``.

    Same arguments, weights and math. ``BiasAdd``'s gradient sums over batch and pixels in
    the compute dtype: in bfloat16 (8 bits of mantissa) a sum over a batch of 64x64 images
    stops growing long before the end, and the bias gradient comes out 96% wrong for the
    demo's batches. ``AddV2``'s gradient (a ``Sum``) accumulates in float32. It is faster
    on CPU too (see `Conv2D`).
    """

    def call(self, inputs: Any) -> Any:
        """``activation(conv_transpose(inputs, kernel) + bias)``, as Keras' layer."""
        outputs = ops.conv_transpose(
            inputs,
            self.kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return bias_and_activation(self, outputs)


def bias_and_activation(layer: layers.Layer, outputs: Any) -> Any:
    """``activation(outputs + bias)`` of a convolution layer, the bias added by ``AddV2``."""
    if layer.use_bias:
        bias = layer.bias
        if layer.data_format != "channels_last":
            bias = ops.reshape(bias, (1, layer.filters) + (1,) * layer.rank)
        # tf.add on purpose: ops.add would emit BiasAdd (see `Conv2D`, `Conv2DTranspose`).
        outputs = tf.add(outputs, ops.cast(bias, outputs.dtype))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _pointwise(x: Any, matrix: Any) -> Any:
    """``(..., C) @ (C, N)`` -> ``(..., N)`` as one 2-D matmul."""
    channels, n = matrix.shape
    flat = ops.matmul(ops.reshape(x, (-1, channels)), ops.cast(matrix, x.dtype))
    return ops.reshape(flat, (*ops.shape(x)[:-1], n))


def _residual_block(
    x: Any, filters: int, residual_filters: int, name: str, dtype: str | None
) -> Any:
    """Residual block ``x + conv1x1(leaky_relu(conv3x3(x)))``, shape ``(B, h, w, filters)``."""
    h = Conv2D(residual_filters, 3, padding="same", dtype=dtype, name=f"{name}_conv3x3")(x)
    h = layers.LeakyReLU(dtype=dtype, name=f"{name}_act")(h)
    h = Conv2D(filters, 1, dtype=dtype, name=f"{name}_conv1x1")(h)
    return layers.Add(dtype=dtype, name=f"{name}_add")([x, h])


def build_encoder(
    image_size: int | Sequence[int],
    channels: int = 1,
    filters: Sequence[int] = (32, 64),
    residual_blocks: int = 2,
    residual_filters: int = 32,
    embedding_dim: int = 16,
    dtype: str | None = None,
) -> keras.Model:
    """Encoder ``(B, S, S, channels)`` -> ``(B, S/2**n, S/2**n, embedding_dim)``.

    ``n = len(filters)`` stride-2 4x4 convolutions (ReLU), ``residual_blocks``
    residual blocks at width ``filters[-1]``, a leaky ReLU, then a 1x1
    convolution to ``embedding_dim`` (linear: these are the vectors to quantize).
    ``dtype`` is the layers' Keras dtype policy (e.g. ``"mixed_bfloat16"``; None: the
    global one), except that the 1x1 projection computes in float32 for the quantizer.
    """
    height, width = _as_hw(image_size)
    latent_grid_shape((height, width), filters)
    inputs = keras.Input((height, width, channels), name="images")
    x = inputs
    # Downsampling.
    for i, f in enumerate(filters):
        x = Conv2D(
            int(f), 4, strides=2, padding="same", activation="relu", dtype=dtype, name=f"down_{i}"
        )(x)
    # Residual stack.
    for i in range(residual_blocks):
        x = _residual_block(x, int(filters[-1]), residual_filters, f"res_{i}", dtype)
    x = layers.LeakyReLU(dtype=dtype, name="res_out")(x)
    # Projection to the embedding space, float32 under any policy: the quantizer's input.
    outputs = Conv2D(embedding_dim, 1, dtype="float32", name="pre_quantization")(x)
    return keras.Model(inputs, outputs, name="encoder")


def build_decoder(
    image_size: int | Sequence[int],
    channels: int = 1,
    filters: Sequence[int] = (32, 64),
    residual_blocks: int = 2,
    residual_filters: int = 32,
    embedding_dim: int = 16,
    dtype: str | None = None,
) -> keras.Model:
    """Decoder ``(B, S/2**n, S/2**n, embedding_dim)`` -> ``(B, S, S, channels)``.

    Mirrors the encoder: a 3x3 convolution to ``filters[-1]``, the residual
    blocks and a leaky ReLU, stride-2 4x4 transposed convolutions (ReLU) with
    ``reversed(filters)``, and a 3x3 convolution to ``channels`` with a sigmoid
    (images live in [0, 1]). ``dtype`` as in `build_encoder`; the output layer computes
    in float32.
    """
    latent_h, latent_w = latent_grid_shape(image_size, filters)
    inputs = keras.Input((latent_h, latent_w, embedding_dim), name="quantized")
    x = Conv2D(int(filters[-1]), 3, padding="same", dtype=dtype, name="post_quantization")(inputs)
    # Residual stack.
    for i in range(residual_blocks):
        x = _residual_block(x, int(filters[-1]), residual_filters, f"res_{i}", dtype)
    x = layers.LeakyReLU(dtype=dtype, name="res_out")(x)
    # Upsampling.
    for i, f in enumerate(reversed(filters)):
        x = Conv2DTranspose(
            int(f), 4, strides=2, padding="same", activation="relu", dtype=dtype, name=f"up_{i}"
        )(x)
    # Output image; float32 even under a mixed-precision policy.
    outputs = Conv2D(
        channels,
        3,
        padding="same",
        activation="sigmoid",
        dtype="float32",
        name="reconstruction",
    )(x)
    return keras.Model(inputs, outputs, name="decoder")


def build_vqvae(
    image_size: int | Sequence[int],
    channels: int = 1,
    filters: Sequence[int] = (32, 64),
    residual_blocks: int = 2,
    residual_filters: int = 32,
    embedding_dim: int = 16,
    num_embeddings: int = 128,
    beta: float = 0.25,
    ema: bool = False,
    ema_decay: float = 0.99,
    dead_code_threshold: float = 0.0,
    seed: int | None = None,
    data_init: bool = False,
    dtype: str | None = None,
) -> keras.Model:
    """The VQ-VAE ``(B, S, S, channels)`` -> reconstructions ``(B, S, S, channels)``.

    A model named "vqvae" whose layers "encoder" (model), "vector_quantizer"
    (`VectorQuantizer`) and "decoder" (model) are reachable with
    ``model.get_layer(name)``. The quantizer's losses are in ``model.losses``
    after a call. ``seed`` seeds the codebook and dead-code restarts (the conv
    weights follow Keras' global seed, ``keras.utils.set_random_seed``).
    ``data_init`` initialises the codebook from the first training batch's latent
    vectors (see `VectorQuantizer`). ``dtype`` is the encoder's and decoder's Keras dtype
    policy (see `build_encoder`); the quantizer always computes in float32.
    """
    arch = dict(
        image_size=image_size,
        channels=channels,
        filters=filters,
        residual_blocks=residual_blocks,
        residual_filters=residual_filters,
        embedding_dim=embedding_dim,
        dtype=dtype,
    )
    encoder = build_encoder(**arch)
    decoder = build_decoder(**arch)
    quantizer = VectorQuantizer(
        num_embeddings,
        embedding_dim,
        beta=beta,
        ema=ema,
        ema_decay=ema_decay,
        dead_code_threshold=dead_code_threshold,
        seed=seed,
        data_init=data_init,
        dtype="float32",
        name="vector_quantizer",
    )
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    outputs = decoder(quantizer(encoder(inputs)))
    return keras.Model(inputs, outputs, name="vqvae")


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class VQVAETrainer(keras.Model):
    """Trains a VQ-VAE built by `build_vqvae` with ``compile`` + ``fit``.

    Batches are images ``(B, S, S, C)`` float32 in [0, 1] (a tuple's first element
    is used, so ``(x, y)`` datasets work too). The loss is
        loss = reconstruction_loss + codebook_loss + beta * commitment_loss
    with ``reconstruction_loss = mean((x - x_hat)^2) / data_variance``. The default
    ``data_variance=1.0`` gives plain MSE; passing the training set's pixel
    variance (as the Keras example does) weights reconstruction more.

    Metrics (``keras.metrics.Mean``, epoch means in ``fit`` logs and History):
    ``loss``, ``reconstruction_loss``, ``codebook_loss``, ``commitment_loss``
    (unweighted by beta), ``perplexity``, ``codes_in_use`` (fraction of the
    codebook used in a batch); validation also reports ``ssim`` (mean
    ``tf.image.ssim`` with max_val=1; images of at least 11x11) as ``val_ssim``.
    Values of the last batch alone: `last_batch_logs`.

    Mixed precision: build the VQ-VAE with ``dtype="mixed_bfloat16"`` (or
    ``"mixed_float16"``, then compile with a ``keras.optimizers.LossScaleOptimizer``: the
    train step scales the loss with ``optimizer.scale_loss``).

    Only ``vqvae`` is worth saving: ``trainer.vqvae.save("vqvae.keras")``.
    """

    STAT_NAMES = (
        "loss",
        "reconstruction_loss",
        "codebook_loss",
        "commitment_loss",
        "perplexity",
        "codes_in_use",
    )

    def __init__(self, vqvae: keras.Model, data_variance: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        if data_variance <= 0:
            raise ValueError(f"data_variance must be > 0, got {data_variance}.")
        for name in ("encoder", "vector_quantizer", "decoder"):
            try:
                vqvae.get_layer(name)
            except ValueError as error:
                raise ValueError(
                    f"vqvae must have a layer named '{name}' (use build_vqvae)."
                ) from error
        self.vqvae = vqvae
        self.data_variance = float(data_variance)
        self.built = vqvae.built  # nothing of its own to build
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.STAT_NAMES}
        self.ssim_tracker = keras.metrics.Mean(name="ssim")
        self.last_batch = {
            name: keras.Variable(
                0.0, trainable=False, aggregation="only_first_replica", name=f"last_{name}"
            )
            for name in self.STAT_NAMES
        }

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The trackers, listed so that Keras resets them every epoch."""
        return [*self.trackers.values(), self.ssim_tracker]

    def call(self, inputs: Any, training: bool = False) -> Any:
        """Reconstructions of ``inputs`` by the wrapped VQ-VAE."""
        return self.vqvae(inputs, training=training)

    def _forward(self, x: Any, training: bool) -> tuple[Any, dict[str, Any]]:
        """Reconstructions and the loss terms of one batch."""
        z = self.vqvae.get_layer("encoder")(x, training=training)
        vq = self.vqvae.get_layer("vector_quantizer")(z, training=training, return_dict=True)
        reconstructions = self.vqvae.get_layer("decoder")(vq["quantized"], training=training)
        reconstruction_loss = (
            ops.mean(ops.square(x - ops.cast(reconstructions, x.dtype))) / self.data_variance
        )
        stats = {
            "loss": reconstruction_loss + vq["loss"],
            "reconstruction_loss": reconstruction_loss,
        }
        stats.update({name: vq[name] for name in self.STAT_NAMES[2:]})  # the quantizer's
        return reconstructions, stats

    def _record(self, stats: dict[str, Any]) -> dict[str, Any]:
        for name, value in stats.items():
            self.trackers[name].update_state(value)
            self.last_batch[name].assign(ops.cast(value, "float32"))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data: Any) -> dict[str, Any]:
        """One optimisation step on a batch; returns the epoch-mean metrics."""
        x = _images(data)
        # Forward pass.
        with tf.GradientTape() as tape:
            _, stats = self._forward(x, training=True)
            # Keras sums the replicas' gradients: each differentiates its loss / replicas.
            # A LossScaleOptimizer (mixed_float16) scales it up against float16 underflow.
            scaled_loss = self.optimizer.scale_loss(scale_for_replicas(stats["loss"]))
        # Backpropagation.
        variables = self.vqvae.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._record(stats)

    def test_step(self, data: Any) -> dict[str, Any]:
        """Evaluate a batch (no codebook updates); adds ``ssim``."""
        x = _images(data)
        reconstructions, stats = self._forward(x, training=False)
        ssim = tf.image.ssim(x, ops.cast(reconstructions, x.dtype), max_val=1.0)
        self.ssim_tracker.update_state(ops.mean(ssim))
        logs = self._record(stats)
        return {**logs, "ssim": self.ssim_tracker.result()}

    def last_batch_logs(self) -> dict[str, float]:
        """Raw (not epoch-averaged) values of the last train/test batch."""
        return {name: float(v.numpy()) for name, v in self.last_batch.items()}

    def get_config(self) -> dict[str, Any]:
        """The wrapped VQ-VAE (serialised) and ``data_variance``."""
        return {
            **super().get_config(),
            "vqvae": keras.saving.serialize_keras_object(self.vqvae),
            "data_variance": self.data_variance,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VQVAETrainer:
        """Rebuild the trainer and its VQ-VAE from `get_config`."""
        config = dict(config)
        vqvae = keras.saving.deserialize_keras_object(config.pop("vqvae"))
        return cls(vqvae, **config)


def _images(data: Any) -> Any:
    """The image tensor of a batch given as ``x``, ``(x,)`` or ``(x, y)``."""
    if isinstance(data, (tuple, list)):
        data = data[0]
    return ops.cast(data, "float32")


def encode_codes(vqvae: keras.Model, images: Any, batch_size: int = 32) -> np.ndarray:
    """Code grids of images: ``(N, S, S, C)`` in [0, 1] -> int32 ``(N, h, w)``."""
    encoder = vqvae.get_layer("encoder")
    quantizer = vqvae.get_layer("vector_quantizer")
    images = np.asarray(images, dtype="float32")
    grid = encoder.output_shape[1:3]
    chunks = [np.zeros((0, *grid), dtype="int32")]
    for start in range(0, len(images), batch_size):
        z = encoder(images[start : start + batch_size], training=False)
        chunks.append(np.asarray(quantizer.get_code_indices(z), dtype="int32"))
    return np.concatenate(chunks)


def decode_codes(vqvae: keras.Model, codes: Any, batch_size: int = 32) -> np.ndarray:
    """Images of code grids: int ``(N, h, w)`` -> float32 ``(N, S, S, C)`` in [0, 1]."""
    decoder = vqvae.get_layer("decoder")
    quantizer = vqvae.get_layer("vector_quantizer")
    codes = np.asarray(codes, dtype="int32")
    chunks = [np.zeros((0, *decoder.output_shape[1:]), dtype="float32")]
    for start in range(0, len(codes), batch_size):
        quantized = quantizer.quantize_indices(codes[start : start + batch_size])
        chunks.append(np.asarray(decoder(quantized, training=False), dtype="float32"))
    return np.concatenate(chunks)
