"""Small seeded CNNs that read slices: the C2ST's real-vs-generated classifier and the probes.

One builder (:func:`small_cnn`) and one training loop (:func:`train`) serve every network the
evaluation trains, so they share what makes a result reproducible: explicit initializer seeds,
a fixed number of steps, batches drawn from a seeded permutation, no wall-clock limit.

The probe (:func:`train_probe`) is one multi-head CNN trained on real training slices to
predict each slice's level and its subject's attributes (one head per condition of the
dataset's manifest). Its heads give the slice-level distribution and the condition fidelity
of samples; its penultimate layer (``features``, 64 units) is the feature space of the
coverage metrics: trained to tell levels and attributes apart, it is anatomy-aware, which a
randomly initialised network is not, and no pretrained network is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from oasis_vqvae.data.conditions import ConditionSpec
from oasis_vqvae.errors import DataError

if TYPE_CHECKING:
    import keras
    import pandas as pd

POOLED_SIDE = 64
"""Images are average-pooled to at most this side before the first convolution."""
FILTERS = (16, 32, 64, 64)
"""Filters of the stride-2 3x3 convolutions (64 px -> 4 x 4 x 64)."""
FEATURES = 64
"""Units of the penultimate layer (the coverage feature space)."""
PREDICT_BATCH = 256


@dataclass(frozen=True)
class Head:
    """One output of a small CNN: what it predicts and how its loss is computed."""

    name: str
    kind: str
    """'binary' (one logit), 'categorical' (one logit per value) or 'continuous' (one value)."""
    values: tuple[Any, ...] = ()
    """Categorical only: the values, in the order of the logits."""

    @property
    def units(self) -> int:
        """Width of the head's output layer."""
        return len(self.values) if self.kind == "categorical" else 1


@dataclass
class Probe:
    """A trained probe: the model, its heads and how continuous targets were standardised."""

    model: Any
    heads: tuple[Head, ...]
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Continuous heads: (mean, std) of the training targets; predictions are mapped back."""

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Per head: class probabilities ``(N, K)`` or values ``(N,)``; plus ``features``."""
        outputs = predict(self.model, images)
        result = {"features": outputs["features"]}
        for head in self.heads:
            raw = outputs[head.name]
            if head.kind == "categorical":
                result[head.name] = _softmax(raw)
            else:
                mean, std = self.scale[head.name]
                result[head.name] = raw[:, 0] * std + mean
        return result


def small_cnn(
    shape: tuple[int, int], heads: tuple[Head, ...], seed: int, *, every_pixel: bool = False
) -> keras.Model:
    """To <= 64 px, four stride-2 3x3 convolutions, dense ``features``, one layer per head.

    Input ``(H, W, 1)`` float in [0, 1]; outputs a dict ``{features, <head.name>...}``. Larger
    images are average-pooled to <= 64 px, or with ``every_pixel`` folded into channels
    (each ``p x p`` block of pixels becomes ``p * p`` channels of one position): the probe
    reads anatomy, which pooling keeps, while a real-vs-generated classifier must see fine
    texture (sulci, noise, blur), which pooling averages away. Every initializer has its own
    seed derived from ``seed``: same seed, same weights, whatever else the process has built
    before.
    """
    import keras

    layers = keras.layers
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))

    def init() -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=next(seeds))

    inputs = keras.Input((*shape, 1), name="image")
    pool = max(1, min(shape) // POOLED_SIDE)
    x = inputs
    if pool > 1 and every_pixel:
        x = _space_to_depth(x, shape, pool)
    elif pool > 1:
        x = layers.AveragePooling2D(pool)(x)
    for filters in FILTERS:
        x = layers.Conv2D(
            filters, 3, strides=2, padding="same", activation="relu", kernel_initializer=init()
        )(x)
    x = layers.Flatten()(x)  # keeps where in the slice a feature is (level, head size)
    dense = layers.Dense(FEATURES, activation="relu", kernel_initializer=init(), name="features")
    features = dense(x)
    outputs = {"features": features}
    for head in heads:
        outputs[head.name] = layers.Dense(head.units, kernel_initializer=init(), name=head.name)(
            features
        )
    return keras.Model(inputs, outputs, name="small_cnn")


def _space_to_depth(x: Any, shape: tuple[int, int], block: int) -> Any:
    """``(B, H, W, 1)`` -> ``(B, H/block, W/block, block**2)`` with built-in Keras layers."""
    import keras

    height, width = shape[0] // block, shape[1] // block
    x = keras.layers.Cropping2D(((0, shape[0] % block), (0, shape[1] % block)))(x)
    x = keras.layers.Reshape((height, block, width, block))(x)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    return keras.layers.Reshape((height, width, block * block))(x)


def train(
    model: keras.Model,
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    heads: tuple[Head, ...],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> None:
    """Train ``model`` for exactly ``steps`` batches of ``images`` ``(N, H, W)``.

    ``targets[name]`` is ``(N,)``: 0/1 (binary), a class index or -1 if unknown (categorical),
    a standardised value or NaN if unknown (continuous). Unknown targets add no loss. Batches
    walk seeded permutations of the images (a new one per pass), so the run is a function of
    its inputs and ``seed`` only.
    """
    import keras
    import tensorflow as tf

    if len(images) == 0:
        raise DataError("a probe needs at least one training image")
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)  # not in the traced step: that would trace twice
    batch = min(batch_size, len(images))
    order = _batch_order(len(images), steps, batch, seed)
    tensors = {h.name: tf.constant(_target_array(h, targets[h.name])) for h in heads}

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n(
                [_head_loss(h, outputs[h.name], tf.gather(tensors[h.name], index)) for h in heads]
            )
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    for indices in order:
        step(tf.constant(_as_float(images[indices])[..., None]), tf.constant(indices))


def predict(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` for ``images`` ``(N, H, W)``, float64 numpy, in batches."""
    import tensorflow as tf

    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), PREDICT_BATCH):
        x = tf.constant(_as_float(images[start : start + PREDICT_BATCH])[..., None])
        for name, value in model(x, training=False).items():
            chunks.setdefault(name, []).append(value.numpy().astype(np.float64))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


# --- the condition probe -------------------------------------------------------------------------


def probe_heads(specs: dict[str, ConditionSpec], conditions: pd.DataFrame) -> tuple[Head, ...]:
    """One head per condition with at least two distinct known values in ``conditions``."""
    heads = []
    for name, spec in specs.items():
        known = [v for v in conditions[name] if not _missing(v)] if name in conditions else []
        if len({str(v) for v in known}) < 2:
            continue  # nothing to learn (e.g. an attribute no training subject has)
        if spec["kind"] == "categorical":
            heads.append(Head(name, "categorical", tuple(spec["values"])))
        else:
            heads.append(Head(name, "continuous"))
    return tuple(heads)


def encode_targets(head: Head, values: Any, origin: str) -> np.ndarray:
    """Raw condition values -> class indices (-1 unknown) or floats (NaN unknown).

    Categorical values match the spec's by equality, numbers as numbers (``0.5`` == ``"0.5"``).
    Raises DataError naming ``origin`` and the value if one is not among the spec's.
    """
    values = list(values)
    if head.kind != "categorical":
        return np.array([np.nan if _missing(v) else float(v) for v in values], np.float64)
    keys = {_key(v): i for i, v in enumerate(head.values)}
    out = np.full(len(values), -1, np.int64)
    for row, value in enumerate(values):
        if _missing(value):
            continue
        if _key(value) not in keys:
            raise DataError(
                f"{origin}: row {row + 1}: {head.name} {value!r} is not one of {list(head.values)}"
            )
        out[row] = keys[_key(value)]
    return out


def train_probe(
    images: np.ndarray,
    conditions: pd.DataFrame,
    specs: dict[str, ConditionSpec],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> Probe:
    """The condition probe, trained on real slices ``(N, H, W)`` and their conditions table."""
    heads = probe_heads(specs, conditions)
    targets, scale = {}, {}
    for head in heads:
        encoded = encode_targets(head, conditions[head.name], "training conditions")
        if head.kind == "continuous":
            mean, std = float(np.nanmean(encoded)), float(np.nanstd(encoded)) or 1.0
            scale[head.name] = (mean, std)
            encoded = (encoded - mean) / std
        targets[head.name] = encoded
    model = small_cnn(images.shape[1:3], heads, seed)
    train(
        model, images, targets, heads,
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
    )  # fmt: skip
    return Probe(model, heads, scale)


# --- helpers -------------------------------------------------------------------------------------


def _batch_order(count: int, steps: int, batch: int, seed: int) -> list[np.ndarray]:
    """``steps`` index batches of size ``batch`` from consecutive seeded permutations."""
    rng = np.random.default_rng(seed)
    passes = -(-steps * batch // count)
    flat = np.concatenate([rng.permutation(count) for _ in range(passes)])
    return [np.sort(flat[i * batch : (i + 1) * batch]) for i in range(steps)]


def _target_array(head: Head, values: np.ndarray) -> np.ndarray:
    if head.kind == "categorical":
        return np.asarray(values, np.int32)
    return np.asarray(values, np.float32)


def _head_loss(head: Head, output: Any, target: Any) -> Any:
    """Mean loss over the batch's known targets (0 if none is known)."""
    import tensorflow as tf

    if head.kind == "categorical":
        known = target >= 0
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.maximum(target, 0), tf.cast(output, tf.float32)
        )
    elif head.kind == "binary":
        known = tf.ones_like(target, tf.bool)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(target, tf.cast(output[:, 0], tf.float32))
    else:
        known = tf.math.is_finite(target)
        error = tf.cast(output[:, 0], tf.float32) - tf.where(known, target, 0.0)
        losses = error * error
    weights = tf.cast(known, tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def _as_float(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _key(value: Any) -> str:
    """Comparable form of a condition value: numbers as floats, anything else as text."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)
