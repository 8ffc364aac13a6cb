"""Conditions of a conditional PixelCNN: how values are encoded and embedded.

A conditional PixelCNN reads, besides its codes, a float32 tensor ``(B, C)`` of the ``C``
conditions it was built with, in order (e.g. ``[slice_level, cdr]``):

- a categorical condition holds the *index* of its value in the spec's sorted ``values``
  (``cdr`` 0.5 is index 1 of ``[0.0, 0.5, 1.0, 2.0]``);
- a continuous one holds the raw value (``slice_level`` 0.3, ``age`` 71.0);
- NaN anywhere in a row means "no condition": the row gets the learned null embedding
  (what ``condition_dropout`` trains, and what unconditional sampling and classifier-free
  guidance ask for).

`ConditionEncoder` maps that tensor to one vector ``h`` ``(B, dim)`` per sample, which
every gated layer adds to its gates (van den Oord et al. 2016, section 2.3):
``y = tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)``. Each condition gets its own
encoding, summed, then one ReLU layer mixes them (so one condition's effect can depend on
another's value):

- categorical: an embedding row per value;
- continuous, ``"linear"``: the value scaled to [0, 1] over the spec's range, times a
  learned vector (one direction per condition: the model can only move along it);
- continuous, ``"fourier"``: the scaled value and ``sin``/``cos`` of it at
  `FOURIER_FREQUENCIES` frequencies, through a dense layer, so a level can switch features
  on and off along the range (the bottom and the top of the brain look unlike each other,
  not like two ends of one axis).

The helpers here (`condition_encodings`, `encode_conditions`, `decode_conditions`) turn
values as the data tables hold them into that tensor and back, in NumPy/pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import keras
import numpy as np
from keras import layers, ops

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONTINUOUS_ENCODINGS",
    "ConditionEncoder",
    "ConditionEncoding",
    "FOURIER_FREQUENCIES",
    "condition_encodings",
    "decode_conditions",
    "encode_conditions",
    "null_conditions",
    "value_index",
]

CONTINUOUS_ENCODINGS = ("linear", "fourier")
FOURIER_FREQUENCIES = 6
"""sin/cos of pi * 2^k * x for k < 6: features as fine as 1/64 of the range."""


class ConditionEncoding(TypedDict, total=False):
    """How one condition enters the model (the JSON of ``conditions.json`` and the layer)."""

    name: str
    kind: Literal["categorical", "continuous"]
    values: list[Any]
    """Categorical: the values, in index order."""
    range: list[float]
    """Continuous: [lo, hi], mapped to [0, 1]."""
    encoding: Literal["embedding", "linear", "fourier"]


def condition_encodings(
    names: Sequence[str], specs: Mapping[str, Mapping[str, Any]], continuous: str = "fourier"
) -> list[ConditionEncoding]:
    """The encodings of ``names`` from a dataset's condition specs (codes.json ``conditions``)."""
    if continuous not in CONTINUOUS_ENCODINGS:
        raise ValueError(f"continuous encoding must be one of {CONTINUOUS_ENCODINGS}")
    encodings: list[ConditionEncoding] = []
    for name in names:
        spec = specs[name]
        if spec["kind"] == "categorical":
            values = list(spec["values"])
            if not values:
                raise ValueError(f"categorical condition {name!r} has no values")
            encodings.append(
                {"name": name, "kind": "categorical", "values": values, "encoding": "embedding"}
            )
        elif spec["kind"] == "continuous":
            lo, hi = (float(v) for v in spec["range"])
            encodings.append(
                {"name": name, "kind": "continuous", "range": [lo, hi], "encoding": continuous}
            )
        else:
            raise ValueError(f"condition {name!r}: unknown kind {spec['kind']!r}")
    return encodings


def value_index(encoding: ConditionEncoding, value: Any) -> int | None:
    """Index of a categorical ``value`` in ``encoding["values"]`` (None if it is not there).

    Numbers compare as numbers (a CSV's ``1`` is the spec's ``1.0``), anything else as text.
    """
    for index, known in enumerate(encoding["values"]):
        if _same(known, value):
            return index
    return None


def _same(known: Any, value: Any) -> bool:
    numeric = (int, float, np.integer, np.floating)
    if isinstance(known, numeric) and not isinstance(known, bool):
        try:
            return float(value) == float(known)
        except (TypeError, ValueError):
            return False
    return str(value) == str(known)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))


def encode_conditions(
    table: pd.DataFrame | Mapping[str, Sequence[Any]], encodings: Sequence[ConditionEncoding]
) -> np.ndarray:
    """The model's conditions input ``(N, C)`` float32 from columns of values.

    Missing values (None, NaN) become NaN; a categorical value outside the encoding's values
    raises ValueError naming the condition and the value.
    """
    columns = [list(table[e["name"]]) for e in encodings]
    count = len(columns[0]) if columns else len(table)  # type: ignore[arg-type]
    out = np.full((count, len(encodings)), np.nan, np.float32)
    for j, (encoding, column) in enumerate(zip(encodings, columns, strict=True)):
        for i, value in enumerate(column):
            if _missing(value):
                continue
            if encoding["kind"] == "categorical":
                index = value_index(encoding, value)
                if index is None:
                    raise ValueError(
                        f"{encoding['name']}: {value!r} is not among {encoding['values']}"
                    )
                out[i, j] = index
            else:
                out[i, j] = float(value)
    return out


def decode_conditions(
    conditions: np.ndarray, encodings: Sequence[ConditionEncoding]
) -> dict[str, list[Any]]:
    """Values per condition name from a conditions tensor ``(N, C)`` (inverse of encoding)."""
    decoded: dict[str, list[Any]] = {}
    for j, encoding in enumerate(encodings):
        column = np.asarray(conditions)[:, j]
        if encoding["kind"] == "categorical":
            decoded[encoding["name"]] = [
                None if np.isnan(v) else encoding["values"][int(v)] for v in column
            ]
        else:
            decoded[encoding["name"]] = [None if np.isnan(v) else float(v) for v in column]
    return decoded


def null_conditions(count: int, encodings: Sequence[ConditionEncoding]) -> np.ndarray:
    """``(count, C)`` NaN: every row asks for the null (unconditional) embedding."""
    return np.full((count, len(encodings)), np.nan, np.float32)


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class ConditionEncoder(layers.Layer):
    """Conditions ``(B, C)`` float32 (see the module docstring) -> ``h`` ``(B, dim)``.

    Args:
        encodings: One `ConditionEncoding` per column, in order.
        dim: Width of ``h``.
        dropout: Training only: the probability that a sample's conditions are all
            replaced by the learned null (classifier-free guidance's training).
        seed: Seed of the dropout draws. Draw ``n`` (the ``n``-th training call) uses the
            stateless seed ``(seed, n)``, ``n`` kept in the weight ``dropout_step``, so a run
            resumed from saved weights draws as an uninterrupted one.
    """

    def __init__(
        self,
        encodings: Sequence[ConditionEncoding],
        dim: int,
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not encodings:
            raise ValueError("ConditionEncoder needs at least one condition")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.encodings = [dict(e) for e in encodings]
        self.dim, self.dropout, self.seed = int(dim), float(dropout), seed
        self.parts = []
        for e in self.encodings:
            name = f"{e['name']}_{e['encoding']}"
            if e["encoding"] == "embedding":
                part = layers.Embedding(len(e["values"]), self.dim, name=name)
            elif e["encoding"] in CONTINUOUS_ENCODINGS:
                part = layers.Dense(self.dim, use_bias=False, name=name)
            else:
                raise ValueError(f"unknown encoding {e['encoding']!r}")
            self.parts.append(part)
        self.mix = layers.Dense(self.dim, activation="relu", name="mix")

    def build(self, input_shape: tuple) -> None:
        """Check ``C``; build each encoding, the null vector and the mixing layer."""
        if input_shape[-1] != len(self.encodings):
            raise ValueError(
                f"conditions have {input_shape[-1]} columns, the encoder "
                f"{len(self.encodings)} ({[e['name'] for e in self.encodings]})"
            )
        batch = input_shape[0]
        for e, part in zip(self.encodings, self.parts, strict=True):
            if e["encoding"] == "embedding":
                part.build((batch,))
            else:
                width = 1 + (2 * FOURIER_FREQUENCIES if e["encoding"] == "fourier" else 0)
                part.build((batch, width))
        self.bias = self.add_weight(shape=(self.dim,), initializer="zeros", name="bias")
        self.null = self.add_weight(shape=(self.dim,), initializer="random_normal", name="null")
        self.dropout_step = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="dropout_step",
            aggregation="only_first_replica",
        )  # fmt: skip
        self.mix.build((batch, self.dim))

    def _features(self, e: dict[str, Any], column: Any) -> Any:
        """One column ``(B,)`` (NaN already replaced) -> its encoding's input."""
        lo, hi = e["range"]
        x = (column - lo) / (hi - lo if hi > lo else 1.0)
        x = x[:, None]
        if e["encoding"] == "linear":
            return x
        scales = np.pi * 2.0 ** np.arange(FOURIER_FREQUENCIES, dtype="float32")
        angles = x * ops.convert_to_tensor(scales)[None, :]
        return ops.concatenate([x, ops.sin(angles), ops.cos(angles)], axis=-1)

    def call(self, conditions: Any, training: bool | None = None) -> Any:
        """``(B, C)`` -> ``(B, dim)``; rows with a NaN (or dropped) get the null."""
        conditions = ops.cast(conditions, "float32")
        missing = ops.isnan(conditions)
        clean = ops.where(missing, ops.zeros_like(conditions), conditions)
        total = self.bias[None, :]
        for j, (e, part) in enumerate(zip(self.encodings, self.parts, strict=True)):
            column = clean[:, j]
            if e["encoding"] == "embedding":
                top = len(e["values"]) - 1
                index = ops.clip(ops.cast(ops.round(column), "int32"), 0, top)
                total = total + part(index)
            else:
                total = total + part(self._features(e, column))
        null = ops.any(missing, axis=-1)
        if training and self.dropout > 0:
            null = ops.logical_or(null, self._dropped(ops.shape(null)))
        total = ops.where(null[:, None], self.null[None, :], total)
        return self.mix(total)

    def _dropped(self, shape: Any) -> Any:
        """Which samples of this training batch get the null (bool ``(B,)``)."""
        import tensorflow as tf

        step = tf.identity(self.dropout_step.value)
        seed = tf.stack([tf.constant(self.seed or 0, tf.int64), step])
        draw = tf.random.stateless_uniform(shape, seed=seed, alg="philox")
        self.dropout_step.assign_add(tf.constant(1, tf.int64))
        return draw < self.dropout

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(B, C)`` -> ``(B, dim)``."""
        return (input_shape[0], self.dim)

    def get_config(self) -> dict[str, Any]:
        """Layer config plus the encodings, ``dim``, ``dropout`` and ``seed``."""
        return {
            **super().get_config(),
            "encodings": self.encodings,
            "dim": self.dim,
            "dropout": self.dropout,
            "seed": self.seed,
        }
