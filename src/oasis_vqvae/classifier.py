"""The downstream classifier of the utility stage: one small CNN, trained the same way in every arm.

Three 3x3 convolution blocks (convolution, ReLU, 2x2 max pooling) with ``filters`` channels,
global average pooling and a softmax over the classes (two for a binary task). It is trained
from scratch (no pretrained weights are reachable) for a fixed number of steps with Adam on
batches drawn with NumPy from the seed, class-balanced in expectation (each slice is drawn
with probability proportional to one over its class's size), so every arm sees the same
number of examples per class whatever the class shares. ``Augmentation`` is the classic
augmentation arm's transform: horizontal flips, a small affine warp and an intensity jitter.

Same seed, same data -> the same weights and predictions on CPU (ops are deterministic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

PREDICT_BATCH = 256


def build_classifier(
    image_size: int, classes: int, filters: Sequence[int] = (16, 32, 32)
) -> keras.Model:
    """The CNN: ``(B, image_size, image_size, 1)`` floats in [0, 1] -> ``(B, classes)`` logits.

    One stride-2 3x3 convolution with ReLU per entry of ``filters`` (each halves the side),
    global average pooling, one dense layer. Seed Keras first for a reproducible start.
    """
    import keras

    if classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {classes}")
    layers = keras.layers
    stack: list[Any] = [keras.Input((image_size, image_size, 1))]
    stack += [
        layers.Conv2D(count, 3, strides=2, padding="same", activation="relu") for count in filters
    ]
    stack += [layers.GlobalAveragePooling2D(), layers.Dense(classes)]
    return keras.Sequential(stack, name="utility_classifier")


@dataclass(frozen=True)
class Augmentation:
    """Classic augmentation: flips, a small affine warp and an intensity jitter, drawn per image.

    ``rotation`` in degrees, ``shift`` and ``scale`` as fractions of the image side, ``intensity``
    the spread of the contrast factor and brightness offset (``x * (1 + c) + b``, clipped).
    """

    flip: bool = True
    rotation: float = 10.0
    shift: float = 0.05
    scale: float = 0.05
    intensity: float = 0.1

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a batch ``(B, H, W, 1)`` float32 in [0, 1]; same rng state -> same output."""
        import keras

        count, height, width = images.shape[:3]
        if self.flip:
            flipped = rng.random(count) < 0.5
            images = np.where(flipped[:, None, None, None], images[:, :, ::-1], images)
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, count))
        zoom = 1.0 + rng.uniform(-self.scale, self.scale, count)
        shift = rng.uniform(-self.shift, self.shift, (count, 2)) * [width, height]
        transforms = _affine(angle, zoom, shift, height, width)
        warped = keras.ops.image.affine_transform(
            images, transforms, interpolation="bilinear", fill_mode="constant"
        )
        contrast = 1.0 + rng.uniform(-self.intensity, self.intensity, (count, 1, 1, 1))
        brightness = rng.uniform(-self.intensity, self.intensity, (count, 1, 1, 1)) / 2
        out = np.asarray(warped) * contrast + brightness
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _affine(
    angle: np.ndarray, zoom: np.ndarray, shift: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Output -> input maps ``(B, 8)`` for Keras' affine_transform.

    They rotate and zoom about the image centre, then shift: output pixel ``p`` samples the
    input at ``M (p - c) + c - shift``.
    """
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a0, a1, b0, b1 = cos, -sin, sin, cos
    a2 = cx - a0 * cx - a1 * cy - shift[:, 0]
    b2 = cy - b0 * cx - b1 * cy - shift[:, 1]
    zeros = np.zeros_like(cos)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


class Classifier:
    """One CNN of a fixed shape, retrained from scratch by every :meth:`fit`.

    The model, optimizer and compiled training step are built once and reset (weights to a
    fresh seeded initialisation, optimizer state to zero) at each fit: tracing a new step
    for every arm and seed would cost more than the training itself on a small CPU.
    """

    def __init__(
        self,
        image_size: int,
        classes: int,
        *,
        filters: Sequence[int] = (16, 32, 32),
        learning_rate: float = 1e-3,
    ) -> None:
        import keras
        import tensorflow as tf

        self.image_size, self.classes, self.filters = image_size, classes, tuple(filters)
        self.learning_rate = learning_rate
        self.model = build_classifier(image_size, classes, self.filters)
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model, optimizer = self.model, self.optimizer

        @tf.function(reduce_retracing=True)
        def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        self._step = step

    def reset(self, seed: int) -> None:
        """Fresh weights drawn from ``seed`` (as a new model would get) and a zeroed optimizer."""
        from oasis_vqvae.stages.common import seed_everything

        seed_everything(seed)
        fresh = build_classifier(self.image_size, self.classes, self.filters)
        self.model.set_weights(fresh.get_weights())
        for variable in self.optimizer.variables:
            if variable.path.endswith("learning_rate"):
                variable.assign(self.learning_rate)
            else:
                variable.assign(np.zeros(variable.shape, variable.dtype))

    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        steps: int,
        batch_size: int,
        seed: int,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> Classifier:
        """Train from scratch for exactly ``steps`` Adam steps; returns ``self``.

        Args:
            images: ``(N, H, W)`` uint8 or float in [0, 1], ``H == W == image_size``.
            labels: ``(N,)`` int class indices in ``[0, classes)``.
            steps: Adam steps (batches), whatever the number of images.
            batch_size: images per batch, drawn with replacement.
            seed: initial weights, batches and augmentation.
            augment: applied to every batch (float ``(B, H, W, 1)``) with the run's generator.

        The initial weights come from ``seed`` alone, so arms trained with the same seed start
        from the same network (paired comparisons); the batches are drawn from ``seed`` too.
        """
        import tensorflow as tf

        images, labels = _as_float(images)[..., None], np.asarray(labels, np.int64)
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"{len(images)} images, {len(labels)} labels: need as many, >= 1")
        if images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"images {images.shape[1:3]}, classifier {self.image_size} px")
        self.reset(seed)
        rng = np.random.default_rng([seed, 1])
        weights = balanced_weights(labels, self.classes)
        for _ in range(steps):
            chosen = rng.choice(len(images), batch_size, p=weights)
            batch = images[chosen]
            if augment is not None:
                batch = augment(batch, rng)
            self._step(tf.constant(batch), tf.constant(labels[chosen]))
        return self

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, classes)`` float64 of ``(N, H, W)`` images."""
        return predict_proba(self.model, images)


def balanced_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Drawing probability ``(N,)`` of each example: every present class equally likely."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def predict_proba(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, classes)`` float64 of ``(N, H, W)`` images."""
    import tensorflow as tf

    x = _as_float(images)[..., None]
    logits = [
        np.asarray(model(tf.constant(x[i : i + PREDICT_BATCH]), training=False))
        for i in range(0, len(x), PREDICT_BATCH)
    ]
    logits = np.concatenate(logits).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_float(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)
