"""Fast exact PixelCNN sampling: every activation computed once, in raster order.

Plain sampling runs the whole network over the whole grid for every code. But every
layer of the PixelCNN is causal: its output at ``(r, c)`` reads only positions before
``(r, c)`` in raster order (and ``(r, c)`` itself after the first layer). So when the
sampler reaches ``(r, c)``, everything each layer reads there is already final, and
so is the activation it computes. The sampler walks the grid once, computes each layer
at the current position only, keeps the few rows a masked convolution reads back (row
buffers) and draws the code. A whole grid costs about one forward pass instead of one
per code (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models", do the same with per-layer caches).

The gated variant's vertical stack at row ``r`` reads rows above only, so it is
computed for the whole row when the row starts (a convolution over the row buffers, which
keep ``dilation * (k // 2) + 1`` rows for a dilated layer); the horizontal stack then goes
position by position.

The walk is one XLA-compiled TensorFlow graph, no Python per code, on CPU or GPU.
Memory is the row buffers, ``O(batch * width * filters)``, not the whole grid.

Conditional models stay exact: their conditions are constant over a grid, so the
condition embedding and each layer's condition term (``(B, channels)``) are computed once
per batch, before the walk, and added where the model adds them; so is a conditional
position bias (``(B, H, W, C)``, read a row or a position at a time). Classifier-free guidance
(Ho & Salimans 2022) walks the batch twice over, with and without the conditions, and
draws every code from ``(1 + w) * conditional - w * unconditional`` logits.

Supported: the models `oasis_vqvae.models.pixelcnn.build_pixelcnn` builds, plain or
gated, one-hot or embedded codes, with or without a position bias and conditions, any
depth, width, codebook size, first kernel size or vertical dilations. Anything else is
refused with `UnsupportedModelError` rather than sampled from a different distribution,
and every sampler checks its logits against the model's own on a random grid first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from oasis_vqvae.models.conditioning import ConditionEncoder
from oasis_vqvae.models.pixelcnn import (
    ConditionBias,
    GatedPixelBlock,
    MaskedConv2D,
    OneHot,
    PositionBias,
)

__all__ = ["FastSampler", "UnsupportedModelError", "draw_codes", "guided_logits", "model_inputs"]

State = tuple[tf.Tensor, ...]
Terms = tuple[tuple[tf.Tensor, ...], dict[str, tf.Tensor]]
"""A batch's condition terms: per layer ``(B, channels)``, and per conditional position bias
``(B, H, W, C)``; ``()`` for an unconditional model."""


class UnsupportedModelError(ValueError):
    """The model is not a PixelCNN layout the fast sampler reproduces exactly."""


def draw_codes(logits: tf.Tensor, temperature: float, uniform: tf.Tensor) -> tf.Tensor:
    """Inverse-CDF draws ``(B,)`` int32 from logits ``(B, K)`` and uniforms ``(B,)`` in [0, 1).

    Shared by both samplers, so equal logits and uniforms give equal codes. (Drawing the
    uniforms outside the compiled loop keeps them identical with and without XLA, whose
    Philox stream differs from TensorFlow's CPU kernel.)
    """
    probs = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
    below = tf.cast(tf.cumsum(probs, axis=-1) <= uniform[:, None], tf.int32)
    return tf.minimum(tf.reduce_sum(below, axis=-1), tf.shape(logits)[-1] - 1)


def guided_logits(logits: tf.Tensor, guidance: float | tf.Tensor) -> tf.Tensor:
    """Classifier-free guidance: ``(2B, K)`` logits -> ``(B, K)``.

    The first ``B`` rows are conditional, the last ``B`` unconditional; the result is
    ``(1 + w) * conditional - w * unconditional``.
    """
    conditional, unconditional = tf.split(logits, 2, axis=0)
    return (1.0 + guidance) * conditional - guidance * unconditional


def model_inputs(model: keras.Model, codes, conditions=None):
    """What ``model`` takes: ``codes`` alone, or ``[codes, conditions]`` if it is conditional.

    Raises ValueError if conditions are missing for, or given to, the wrong kind of model.
    """
    count = conditions_count(model)
    if count == 0:
        if conditions is not None and np.shape(conditions)[-1] != 0:
            raise ValueError(f"{model.name} is unconditional; it takes no conditions.")
        return codes
    if conditions is None or tuple(np.shape(conditions)[1:]) != (count,):
        shape = None if conditions is None else np.shape(conditions)
        raise ValueError(f"{model.name} needs conditions (B, {count}), got {shape}.")
    return [codes, conditions]


def conditions_count(model: keras.Model) -> int:
    """Number of condition columns a PixelCNN takes (0: unconditional)."""
    inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
    return int(inputs[1].shape[-1]) if len(inputs) > 1 else 0


# Layer weights, restricted to what one position reads.


@dataclass(frozen=True)
class _Dense:
    """A conv as a matrix over a flattened window (or a 1x1 conv): ``act(x @ W + b)``."""

    kernel: tf.Tensor  # (window taps * in channels, out channels)
    bias: tf.Tensor
    activation: Callable[[tf.Tensor], tf.Tensor]
    flops: int  # 2 x multiply-adds per position, over the taps the mask keeps

    def __call__(self, x: tf.Tensor, extra: tf.Tensor | None = None) -> tf.Tensor:
        y = tf.tensordot(x, self.kernel, 1) + self.bias
        return self.activation(y if extra is None else y + extra)


@dataclass(frozen=True)
class _OneHotTaps:
    """A masked convolution over one-hot codes, done as a lookup of kernel rows.

    ``taps`` are the kernel offsets ``(dy, dx)`` the mask keeps. Code ``K`` (the padding
    sentinel) looks up a zero row, as the zero padding of a one-hot input would give.
    """

    table: tf.Tensor  # (taps * (K + 1), filters)
    bias: tf.Tensor
    activation: Callable[[tf.Tensor], tf.Tensor]
    taps: np.ndarray  # (taps, 2)
    flops: int

    def __call__(self, codes: tf.Tensor, extra: tf.Tensor | None = None) -> tf.Tensor:
        """Codes ``(..., taps)`` read at the tap offsets -> activations ``(..., filters)``."""
        rows_per_tap = self.table.shape[0] // len(self.taps)
        index = codes + rows_per_tap * tf.range(len(self.taps), dtype=codes.dtype)
        y = tf.reduce_sum(tf.gather(self.table, index), axis=-2) + self.bias
        return self.activation(y if extra is None else y + extra)


def _kernel(layer: keras.layers.Layer) -> np.ndarray:
    """The effective kernel ``(kh, kw, in, out)``: masked for a `MaskedConv2D`."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)
    if isinstance(layer, MaskedConv2D):
        kernel = kernel * _mask(layer)[:, :, None, None]
    return kernel


def _mask(layer: keras.layers.Layer) -> np.ndarray:
    if isinstance(layer, MaskedConv2D):
        return np.asarray(layer._kernel_mask[:, :, 0, 0], dtype=np.float32)
    return np.ones(tuple(layer.kernel_size), np.float32)


def _bias(layer: keras.layers.Layer) -> tf.Tensor:
    if layer.use_bias:
        return tf.constant(keras.ops.convert_to_numpy(layer.bias), tf.float32)
    return tf.zeros((layer.filters,), tf.float32)


def _dense(layer: keras.layers.Layer, rows: int | None = None) -> _Dense:
    """``layer``'s top ``rows`` kernel rows (all of them by default) as one matrix."""
    kernel = _kernel(layer)[:rows]
    taps = int(_mask(layer)[:rows].sum())
    return _Dense(
        kernel=tf.constant(kernel.reshape(-1, kernel.shape[-1])),
        bias=_bias(layer),
        activation=layer.activation,
        flops=2 * taps * kernel.shape[-2] * kernel.shape[-1],
    )


def _one_hot_taps(
    layer: MaskedConv2D, rows: int, embedding: np.ndarray | None = None
) -> _OneHotTaps:
    """The kept taps of ``layer``'s top ``rows`` kernel rows, as lookups by code.

    With an ``embedding`` ``(K, D)`` in front of the layer, each tap's table is the
    embedding times the tap's kernel: the lookup then does both layers.
    """
    kernel = _kernel(layer)
    if embedding is not None:
        kernel = np.einsum("kd,hwdf->hwkf", embedding, kernel)
    taps = np.argwhere(_mask(layer)[:rows] > 0)
    table = np.concatenate([np.pad(kernel[dy, dx], ((0, 1), (0, 0))) for dy, dx in taps])
    return _OneHotTaps(
        table=tf.constant(table),
        bias=_bias(layer),
        activation=layer.activation,
        taps=taps,
        flops=2 * len(taps) * kernel.shape[-1],
    )


def _plus(x: tf.Tensor, term: tf.Tensor | None) -> tf.Tensor:
    """``x`` ``(B, C)`` or ``(B, W, C)`` plus a per-sample condition term ``(B, C)``."""
    if term is None:
        return x
    return x + (term if x.shape.rank == 2 else term[:, None, :])


def _gate(x: tf.Tensor) -> tf.Tensor:
    a, b = tf.split(x, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


# Row buffers: (B, rows, W + 2 * pad, C); the last row is the current one.


def _row_buffer(batch: int, rows: int, width: int, pad: int, channels: int) -> tf.Tensor:
    return tf.zeros((batch, rows, width + 2 * pad, channels), tf.float32)


def _put(buffer: tf.Tensor, value: tf.Tensor, col: tf.Tensor | int) -> tf.Tensor:
    """Write ``value`` ``(B, C)`` or ``(B, n, C)`` into the current row from column ``col``."""
    value = tf.reshape(value, (value.shape[0], -1, value.shape[-1]))
    return _update(buffer, value, buffer.shape[1] - 1, col)


def _update(tensor: tf.Tensor, value: tf.Tensor, row: tf.Tensor | int, col: tf.Tensor | int):
    """``tensor[b, row, col + j] = value[b, j]`` for every ``b``, ``j`` (XLA scatters in place).

    ``tensor`` is ``(B, rows, cols, ...)`` and ``value`` ``(B, n, ...)``.
    """
    batch, count = value.shape[0], value.shape[1]
    b, j = np.meshgrid(np.arange(batch), np.arange(count), indexing="ij")
    rows = tf.fill((batch, count), tf.cast(row, tf.int32))
    index = tf.stack([tf.constant(b, tf.int32), rows, col + tf.constant(j, tf.int32)], axis=-1)
    return tf.tensor_scatter_nd_update(tensor, index, value)


def _shift(buffer: tf.Tensor) -> tf.Tensor:
    """Move on a row: drop the oldest row, start a zero current row."""
    return tf.concat([buffer[:, 1:], tf.zeros_like(buffer[:, :1])], axis=1)


def _window(buffer: tf.Tensor, col: tf.Tensor, width: int) -> tf.Tensor:
    """``buffer[:, :, col:col+width]`` flattened to ``(B, rows * width * C)``."""
    batch, rows, _, channels = buffer.shape
    window = tf.slice(buffer, tf.stack([0, 0, col, 0]), [batch, rows, width, channels])
    return tf.reshape(window, (batch, -1))


def _code_window(padded: tf.Tensor, top: tf.Tensor, col: tf.Tensor, rows: int, cols: int):
    """``padded[:, top:top+rows, col:col+cols]`` flattened to ``(B, rows * cols)``."""
    window = tf.slice(padded, tf.stack([0, top, col]), [padded.shape[0], rows, cols])
    return tf.reshape(window, (padded.shape[0], rows * cols))


def _flat_taps(taps: np.ndarray, cols: int) -> np.ndarray:
    """Tap offsets ``(dy, dx)`` as indices into a ``(rows, cols)`` window flattened."""
    return taps[:, 0] * cols + taps[:, 1]


# The two layouts of build_pixelcnn.


def _position(layers: dict[str, keras.layers.Layer], name: str) -> tf.Tensor | None:
    """A `PositionBias` weight ``(H, W, C)``, or None when the model has none."""
    if name not in layers:
        return None
    return tf.constant(keras.ops.convert_to_numpy(layers[name].bias), tf.float32)


def _position_maps(
    layers: dict[str, keras.layers.Layer], names: Sequence[str], condition: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Per-sample biases ``(B, H, W, C)`` of the conditional `PositionBias` layers of ``names``."""
    return {
        name: tf.cast(layers[name].position_map(condition), tf.float32)
        for name in names
        if name in layers and layers[name].rank
    }


def _add_position(x: tf.Tensor, bias: tf.Tensor | None, row: tf.Tensor, col=None) -> tf.Tensor:
    """``x`` plus the position bias of ``row`` (all columns) or of ``(row, col)``.

    ``bias`` is ``(H, W, C)``, or ``(B, H, W, C)`` when it depends on the conditions.
    """
    if bias is None:
        return x
    axis = bias.shape.rank - 3
    at_row = tf.gather(bias, row, axis=axis)
    return x + (at_row if col is None else tf.gather(at_row, col, axis=axis))


def _embedding(layers: dict[str, keras.layers.Layer]) -> np.ndarray | None:
    """The code embedding matrix ``(K, D)``, or None for one-hot codes."""
    if "embedding" not in layers:
        return None
    return keras.ops.convert_to_numpy(layers["embedding"].embeddings).astype(np.float32)


def _condition_dense(layer: keras.layers.Layer, condition: tf.Tensor) -> tf.Tensor:
    """A condition term ``(B, units)`` float32 of a ``(B, D)`` condition embedding."""
    return tf.cast(layer(condition), tf.float32)


def _activation_after(layers: dict[str, keras.layers.Layer], conv: str, condition: str):
    """The activation of ``conv`` (unconditional) or of the `ConditionBias` after it."""
    if condition in layers:
        return layers[condition].activation
    return layers[conv].activation


def _with_activation(dense: _Dense, activation: Callable) -> _Dense:
    return _Dense(dense.kernel, dense.bias, activation, dense.flops)


class _PlainPlan:
    """Type-A masked conv, type-B residual blocks, 1x1 head, one position at a time."""

    def __init__(self, layers: dict[str, keras.layers.Layer], blocks: int, hidden: int) -> None:
        first = layers["masked_a"]
        self.layers = layers
        self.blocks_count = blocks
        self.pad = first.kernel_size[0] // 2  # code padding: rows above, columns each side
        self.first = _one_hot_taps(first, self.pad + 1, _embedding(layers))
        self.first = _OneHotTaps(
            self.first.table, self.first.bias,
            _activation_after(layers, "masked_a", "masked_a_condition"),
            self.first.taps, self.first.flops,
        )  # fmt: skip
        self.position_bias = _position(layers, "position")
        self.first_index = _flat_taps(self.first.taps, 2 * self.pad + 1)
        self.blocks = [
            (
                _dense(layers[f"res_{i}_in"]),
                _with_activation(
                    _dense(
                        layers[f"res_{i}_masked"],
                        layers[f"res_{i}_masked"].kernel_size[0] // 2 + 1,
                    ),
                    _activation_after(layers, f"res_{i}_masked", f"res_{i}_condition"),
                ),
                layers[f"res_{i}_masked"].kernel_size,
                _dense(layers[f"res_{i}_out"]),
            )
            for i in range(blocks)
        ]
        self.head = [_dense(layers[f"hidden_{i}"]) for i in range(hidden)] + [
            _dense(layers["logits"])
        ]
        self.flops = (
            self.first.flops
            + sum(a.flops + b.flops + c.flops for a, b, _, c in self.blocks)
            + sum(d.flops for d in self.head)
        )

    def initial_state(self, batch: int, width: int) -> State:
        """One row buffer per residual block, for its masked conv's input."""
        return tuple(
            _row_buffer(batch, kh // 2 + 1, width, kw // 2, into.kernel.shape[-1])
            for into, _, (kh, kw), _ in self.blocks
        )

    def condition_terms(self, condition: tf.Tensor) -> Terms:
        """Terms of ``masked_a`` and each block's masked conv, and the conditional bias."""
        names = ["masked_a_condition", *(f"res_{i}_condition" for i in range(self.blocks_count))]
        gates = tuple(_condition_dense(self.layers[name].dense, condition) for name in names)
        return gates, _position_maps(self.layers, ["position"], condition)

    def start_row(self, state: State, padded: tf.Tensor, row: tf.Tensor, terms=()) -> State:
        """Nothing is computed per row."""
        return state

    def position(self, state: State, padded: tf.Tensor, row: tf.Tensor, col: tf.Tensor, terms=()):
        """Logits ``(B, K)`` at ``(row, col)`` and the updated row buffers."""
        gates, maps = terms or ((None,) * (len(self.blocks) + 1), {})
        side = 2 * self.pad + 1
        codes = _code_window(padded, row, col, self.pad + 1, side)
        x = self.first(tf.gather(codes, self.first_index, axis=1), extra=gates[0])
        x = _add_position(x, maps.get("position", self.position_bias), row, col)
        buffers = []
        blocks = zip(self.blocks, state, gates[1:], strict=True)
        for (into, masked, (_, kw), out), buffer, term in blocks:
            buffer = _put(buffer, into(x), col + kw // 2)
            x = x + out(masked(_window(buffer, col, kw), extra=term))
            buffers.append(buffer)
        for layer in self.head:
            x = layer(x)
        return x, tuple(buffers)

    def end_row(self, state: State) -> State:
        """Shift every row buffer."""
        return tuple(_shift(buffer) for buffer in state)


class _GatedPlan:
    """Gated PixelCNN: vertical stacks per row, horizontal stacks per position."""

    def __init__(self, layers: dict[str, keras.layers.Layer], blocks: int, hidden: int) -> None:
        gated = [layers[f"gated_{i}"] for i in range(blocks + 1)]
        self.gated = gated
        first = gated[0]
        self.pad = first.kernel_size // 2
        embedding = _embedding(layers)
        self.first_vertical = _one_hot_taps(first.vertical, self.pad, embedding)  # rows above
        self.first_horizontal = _one_hot_taps(first.horizontal, 1, embedding)
        self.vertical = [_dense(g.vertical, g.kernel_size // 2 + 1) for g in gated[1:]]
        self.vertical_size = [g.kernel_size for g in gated[1:]]
        self.dilations = [g.dilation for g in gated[1:]]
        self.horizontal = [_dense(g.horizontal) for g in gated[1:]]
        self.v_to_h = [_dense(g.vertical_to_horizontal) for g in gated]
        self.h_out = [_dense(g.horizontal_out) for g in gated]
        self.filters = first.filters
        self.layers = layers
        self.position_v = _position(layers, "position_v")
        self.position_h = _position(layers, "position_h")
        self.head = [_dense(layers[f"hidden_{i}"]) for i in range(hidden)] + [
            _dense(layers["logits"])
        ]
        self.flops = sum(
            layer.flops
            for layer in (
                self.first_vertical, self.first_horizontal, *self.vertical,
                *self.horizontal, *self.v_to_h, *self.h_out, *self.head,
            )
        )  # fmt: skip

    def initial_state(self, batch: int, width: int) -> State:
        """Vertical-stack row buffers, current-row horizontal buffers, per-row links."""
        f = self.filters
        vertical = [
            _row_buffer(batch, d * (k // 2) + 1, width, d * (k // 2), f)
            for k, d in zip(self.vertical_size, self.dilations, strict=True)
        ]
        horizontal = [_row_buffer(batch, 1, width, k // 2, f) for k in self.vertical_size]
        links = [tf.zeros((batch, width, 2 * f)) for _ in self.v_to_h]
        return (*vertical, *horizontal, *links)

    def _split(self, state: State) -> tuple[list, list, list]:
        n = len(self.vertical)
        return list(state[:n]), list(state[n : 2 * n]), list(state[2 * n :])

    def condition_terms(self, condition: tf.Tensor) -> Terms:
        """Each gated layer's vertical then horizontal term, and the conditional biases."""
        gates = tuple(
            _condition_dense(dense, condition)
            for g in self.gated
            for dense in (g.condition_v, g.condition_h)
        )
        return gates, _position_maps(self.layers, ["position_v", "position_h"], condition)

    def _unpack(self, terms: Terms | tuple[()]) -> Terms:
        """``terms``, or no condition terms and no conditional biases (unconditional)."""
        return terms or ((None,) * (2 * len(self.gated)), {})

    def start_row(self, state: State, padded: tf.Tensor, row: tf.Tensor, terms=()) -> State:
        """The vertical stacks of the whole row and their links into the horizontal stacks."""
        vertical, horizontal, _ = self._split(state)
        gates, maps = self._unpack(terms)
        v_terms, position_v = gates[0::2], maps.get("position_v", self.position_v)
        width = padded.shape[2] - 2 * self.pad
        slab = tf.reshape(tf.slice(padded, [0, row, 0], [padded.shape[0], self.pad, -1]),
                          (padded.shape[0], -1))  # fmt: skip
        index = (
            self.first_vertical.taps[None, :, 0] * padded.shape[2]
            + np.arange(width)[:, None]
            + self.first_vertical.taps[None, :, 1]
        )  # (W, taps) into the slab of the rows above
        v_pre = _plus(self.first_vertical(tf.gather(slab, index, axis=1)), v_terms[0])
        links = [self.v_to_h[0](v_pre)]
        layers = zip(self.vertical, self.vertical_size, self.dilations, strict=True)
        for i, (conv, k, d) in enumerate(layers):
            v = _gate(v_pre)
            vertical[i] = _put(vertical[i], _add_position(v, position_v, row) if i == 0 else v,
                               d * (k // 2))  # fmt: skip
            v_pre = _plus(tf.squeeze(self._row_conv(vertical[i], conv, k, d), 1), v_terms[i + 1])
            links.append(self.v_to_h[i + 1](v_pre))
        return (*vertical, *horizontal, *links)

    @staticmethod
    def _row_conv(buffer: tf.Tensor, conv: _Dense, k: int, dilation: int) -> tf.Tensor:
        """The kept kernel rows over the row buffer: one output row ``(B, 1, W, C)``."""
        kernel = tf.reshape(conv.kernel, (k // 2 + 1, k, buffer.shape[-1], -1))
        return tf.nn.convolution(buffer, kernel, padding="VALID", dilations=dilation) + conv.bias

    def position(self, state: State, padded: tf.Tensor, row: tf.Tensor, col: tf.Tensor, terms=()):
        """Logits ``(B, K)`` at ``(row, col)`` and the updated horizontal buffers."""
        vertical, horizontal, links = self._split(state)
        gates, maps = self._unpack(terms)
        h_terms, position_h = gates[1::2], maps.get("position_h", self.position_h)
        side = 2 * self.pad + 1
        codes = _code_window(padded, row + self.pad, col, 1, side)
        h_pre = self.first_horizontal(tf.gather(codes, self.first_horizontal.taps[:, 1], axis=1))
        h = self.h_out[0](_gate(_plus(h_pre + links[0][:, col], h_terms[0])))
        h = _add_position(h, position_h, row, col)
        for i, conv in enumerate(self.horizontal):
            k = self.vertical_size[i]
            horizontal[i] = _put(horizontal[i], h, col + k // 2)
            h_pre = conv(_window(horizontal[i], col, k), extra=_plus(links[i + 1][:, col],
                                                                     h_terms[i + 1]))  # fmt: skip
            h = h + self.h_out[i + 1](_gate(h_pre))
        for layer in self.head:
            h = layer(h)
        return h, (*vertical, *horizontal, *links)

    def end_row(self, state: State) -> State:
        """Shift the vertical buffers; clear the horizontal ones."""
        vertical, horizontal, links = self._split(state)
        return (
            *(_shift(b) for b in vertical), *(tf.zeros_like(b) for b in horizontal), *links
        )  # fmt: skip


# Recognising the layout, and the compiled walk over the grid.


def _plan_for(model: keras.Model) -> _PlainPlan | _GatedPlan:
    """The plan of a `build_pixelcnn` model; `UnsupportedModelError` for anything else."""
    layers = {layer.name: layer for layer in model.layers}
    names = [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.name != "condition_encoder"
    ]
    conditional = "condition_encoder" in layers
    if conditional != (conditions_count(model) > 0) or (
        conditional and not isinstance(layers["condition_encoder"], ConditionEncoder)
    ):
        raise UnsupportedModelError(f"{model.name}: conditions input without its encoder")
    hidden = sum(name.startswith("hidden_") for name in names)
    head = [*(f"hidden_{i}" for i in range(hidden)), "logits"]
    codes_in = "embedding" if "embedding" in layers else "one_hot"
    positions = [name for name in ("position", "position_v", "position_h") if name in layers]
    if "gated_0" in layers:
        blocks = sum(name.startswith("gated_") for name in names) - 1
        gated = [f"gated_{i}" for i in range(blocks + 1)]
        expected = [codes_in, gated[0], *positions, *gated[1:], *head]
        plan_type: type = _GatedPlan
        if any(getattr(layers[g], "conditional", None) != conditional for g in gated):
            raise UnsupportedModelError(f"{model.name}: gated layers disagree on conditions")
    else:
        blocks = sum(name.endswith("_add") and name.startswith("res_") for name in names)
        parts = ("in", "masked", *(["condition"] if conditional else []), "out", "add")
        res = [f"res_{i}_{part}" for i in range(blocks) for part in parts]
        first = ["masked_a", "masked_a_condition"] if conditional else ["masked_a"]
        expected = [codes_in, *first, *positions, *res, *head]
        plan_type = _PlainPlan
        if conditional and any(
            layers[name].activation is not keras.activations.linear
            for name in ["masked_a", *(f"res_{i}_masked" for i in range(blocks))]
            if name in layers
        ):
            raise UnsupportedModelError(f"{model.name}: a conditioned conv has an activation")
    if names != expected:
        raise UnsupportedModelError(
            f"{model.name}: layers {names} are not a build_pixelcnn layout ({expected})"
        )
    for layer in model.layers:
        _check_layer(layer)
    return plan_type(layers, blocks, hidden)


def _check_layer(layer: keras.layers.Layer) -> None:
    """Refuse layer settings the plans do not reproduce (strides, dilation, types)."""
    kinds = (keras.layers.InputLayer, OneHot, keras.layers.Embedding, PositionBias,
             GatedPixelBlock, keras.layers.Add, keras.layers.Conv2D, ConditionEncoder,
             ConditionBias)  # fmt: skip
    if not isinstance(layer, kinds):
        raise UnsupportedModelError(f"layer {layer.name!r} ({type(layer).__name__}) is unknown")
    convs = (
        [layer.vertical, layer.horizontal, layer.vertical_to_horizontal, layer.horizontal_out]
        if isinstance(layer, GatedPixelBlock)
        else [layer] if isinstance(layer, keras.layers.Conv2D) else []
    )  # fmt: skip
    for conv in convs:
        one_by_one = tuple(conv.kernel_size) == (1, 1)
        if not (isinstance(conv, MaskedConv2D) or one_by_one):
            raise UnsupportedModelError(f"layer {conv.name!r} is a spatial conv without a mask")
        # Only a gated block's vertical stack may be dilated, by its block's (type-B) dilation.
        dilation = (1, 1)
        if isinstance(layer, GatedPixelBlock) and conv is layer.vertical and layer.mask_type == "B":
            dilation = (layer.dilation, layer.dilation)
        settings = (tuple(conv.strides), tuple(conv.dilation_rate), conv.groups)
        if settings != ((1, 1), dilation, 1):
            raise UnsupportedModelError(
                f"layer {conv.name!r}: strides/groups must be 1 and dilation {dilation[0]}"
            )


class FastSampler:
    """Exact, fast sampling of one PixelCNN (see the module docstring).

    Args:
        pixelcnn: A model from `build_pixelcnn`.
        check: Compare this sampler's logits with the model's on a random grid first
            (one extra forward pass) and refuse the model if they differ.

    Raises:
        UnsupportedModelError: the model is not a layout this sampler reproduces exactly.
    """

    def __init__(self, pixelcnn: keras.Model, check: bool = True) -> None:
        self.model = pixelcnn
        self.num_embeddings = int(pixelcnn.output_shape[-1])
        self.num_conditions = conditions_count(pixelcnn)
        self._plan = _plan_for(pixelcnn)
        self._walk = tf.function(self._walk_grid, jit_compile=True)
        if check:
            self._check_against_model()

    @property
    def flops_per_code(self) -> int:
        """Floating-point operations this sampler does per code and sample (its floor)."""
        return self._plan.flops

    def sample(
        self,
        codes: np.ndarray,
        uniforms: np.ndarray,
        start_row: int,
        temperature: float,
        conditions: np.ndarray | None = None,
        guidance: float = 0.0,
    ) -> np.ndarray:
        """Fill rows ``start_row:`` of ``codes`` ``(B, H, W)``; return the completed grids.

        ``uniforms`` ``(B, H * W)`` in [0, 1) drive the draws (see `draw_codes`);
        ``conditions`` ``(B, C)`` is a conditional model's second input; ``guidance`` > 0
        draws from classifier-free guided logits (conditional models only).
        """
        guided = guidance > 0
        codes = np.asarray(codes, np.int32)
        if guided:
            if not self.num_conditions:
                raise ValueError("guidance needs a conditional model")
            codes = np.concatenate([codes, codes])
            conditions = np.concatenate([conditions, np.full_like(conditions, np.nan)])
        out, _ = self._walk(
            tf.constant(codes),
            tf.constant(uniforms, tf.float32),
            tf.constant(start_row, tf.int32),
            tf.constant(temperature, tf.float32),
            self._terms(conditions, len(codes)),
            tf.constant(guidance, tf.float32),
            collect_logits=False,
            guided=guided,
        )
        return out.numpy()

    def logits(self, codes: np.ndarray, conditions: np.ndarray | None = None) -> np.ndarray:
        """Logits ``(B, H, W, K)`` of given grids, computed position by position."""
        codes = np.asarray(codes, np.int32)
        _, logits = self._walk(
            tf.constant(codes),
            tf.zeros(codes.shape[:1] + (codes.shape[1] * codes.shape[2],)),
            tf.constant(codes.shape[1], tf.int32),  # nothing is sampled
            tf.constant(1.0),
            self._terms(conditions, len(codes)),
            tf.constant(0.0),
            collect_logits=True,
            guided=False,
        )
        return logits.numpy()

    def _terms(self, conditions: np.ndarray | None, batch: int) -> Terms | tuple[()]:
        """Every layer's condition term, computed once for the batch (see `Terms`)."""
        model_inputs(self.model, np.zeros((batch, 1, 1)), conditions)  # checks the shape
        if not self.num_conditions:
            return ()
        if len(conditions) != batch:
            raise ValueError(f"conditions have {len(conditions)} rows for {batch} grids")
        encoder = self.model.get_layer("condition_encoder")
        condition = encoder(tf.constant(conditions, tf.float32), training=False)
        return self._plan.condition_terms(condition)

    def _check_against_model(self) -> None:
        height, width = grid_shape(self.model)
        rng = np.random.default_rng(0)
        codes = rng.integers(0, self.num_embeddings, (2, height, width)).astype(np.int32)
        conditions = None
        if self.num_conditions:
            encodings = self.model.get_layer("condition_encoder").encodings
            conditions = random_conditions(encodings, 2, rng)
            conditions[1] = np.nan  # and the null
        inputs = model_inputs(self.model, codes, conditions)
        expected = self.model(inputs, training=False).numpy()
        error = np.abs(self.logits(codes, conditions) - expected).max()
        scale = np.abs(expected).max() + 1.0
        if not error <= 1e-4 * scale:
            raise UnsupportedModelError(
                f"{self.model.name}: position-by-position logits differ from the model's by "
                f"{error:.3g}; this layout is not supported by the fast sampler"
            )

    def _walk_grid(
        self, codes, uniforms, start_row, temperature, terms, guidance, collect_logits: bool,
        guided: bool,
    ):  # fmt: skip
        """Raster walk: rows ``< start_row`` are kept as given, the rest are drawn.

        Guided: ``codes`` and ``terms`` hold the batch twice (conditional, then null
        conditions); both halves get the same drawn codes.
        """
        plan, pad = self._plan, self._plan.pad
        batch, height, width = codes.shape
        samples = batch // 2 if guided else batch
        padded = tf.pad(codes, [[0, 0], [pad, 0], [pad, pad]], constant_values=self.num_embeddings)
        logits_shape = (samples, height, width, self.num_embeddings) if collect_logits else (0,)
        all_logits = tf.zeros(logits_shape)

        def position(row, col, padded, state, all_logits):
            logits, state = plan.position(state, padded, row, col, terms)
            if guided:
                logits = guided_logits(logits, guidance)
            given = padded[:, row + pad, col + pad][:samples]
            drawn = draw_codes(logits, temperature, uniforms[:, row * width + col])
            # A static (samples,) shape: slicing [:1] of a size-1 batch leaves it unknown.
            code = tf.reshape(tf.where(row >= start_row, drawn, given), (samples,))
            if guided:
                code = tf.concat([code, code], axis=0)
            padded = _update(padded, code[:, None], row + pad, col + pad)
            if collect_logits:
                all_logits = _update(all_logits, logits[:, None], row, col)
            return col + 1, padded, state, all_logits

        def row_step(row, padded, state, all_logits):
            state = plan.start_row(state, padded, row, terms)
            _, padded, state, all_logits = tf.while_loop(
                lambda col, *_: col < width,
                lambda col, *loop: position(row, col, *loop),
                (tf.constant(0), padded, state, all_logits),
            )
            return row + 1, padded, plan.end_row(state), all_logits

        _, padded, _, all_logits = tf.while_loop(
            lambda row, *_: row < height,
            row_step,
            (tf.constant(0), padded, plan.initial_state(batch, width), all_logits),
        )
        return padded[:samples, pad:, pad : pad + width], all_logits


def grid_shape(model: keras.Model) -> tuple[int, int]:
    """``(H, W)`` of the code grids a PixelCNN reads."""
    inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
    return tuple(int(n) for n in inputs[0].shape[1:3])  # type: ignore[return-value]


def random_conditions(encodings, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, C)`` valid conditions drawn at random (indices / values within the range)."""
    columns = []
    for e in encodings:
        if e["kind"] == "categorical":
            columns.append(rng.integers(0, len(e["values"]), count).astype(np.float32))
        else:
            columns.append(rng.uniform(*e["range"], count).astype(np.float32))
    return np.stack(columns, axis=1)
