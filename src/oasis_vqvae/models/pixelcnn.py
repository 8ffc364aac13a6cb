"""PixelCNN prior over VQ-VAE code grids (plain and gated).

The model reads an int32 grid of codes ``(B, H, W)`` (e.g. ``(B, 32, 32)``) and
returns logits ``(B, H, W, K)`` over the ``K = num_embeddings`` codes. The logits at
position ``(i, j)`` depend only on codes strictly before it in raster order
(rows above, then the same row to the left), so ``p(codes) = prod p(c_ij | c_<ij)``
and sampling goes position by position (see `oasis_vqvae.models.sampling`).

Causality comes from masked convolutions (`MaskedConv2D`): the kernel is multiplied
by a fixed 0/1 mask in every call, so it stays masked after training and the
mask is rebuilt from the config (``mask_type``) when a ``.keras`` file loads.

Layer structure (names, which `oasis_vqvae.models.fast_sampling` relies on):
- input: ``one_hot`` (the Keras example), or ``embedding`` (a learned code embedding,
  ``embedding_dim`` wide: a low-rank first layer, far cheaper when ``K`` is large).
- plain: input -> ``masked_a`` (type-A ``kernel_size`` conv, ReLU) [-> ``position``] ->
  ``res_{i}`` blocks (``res_{i}_in`` 1x1 -> ``res_{i}_masked`` type-B 3x3 ->
  ``res_{i}_out`` 1x1, ``res_{i}_add``) -> ``hidden_{i}`` 1x1 ReLU -> ``logits`` 1x1.
- gated: input -> ``gated_0`` (type A, ``kernel_size``) [-> ``position_v``,
  ``position_h`` on its two stacks] -> ``gated_{i}``
  (type B, 3x3, i = 1..residual_blocks; vertical stacks dilated by ``dilations``, cycled)
  -> ``hidden_{i}`` -> ``logits``; each
  `GatedPixelBlock` maps ``[vertical, horizontal]`` stacks to new stacks.
Every layer keeps the grid size (``padding="same"``, stride 1).

Conditional (``conditions`` given): a second input ``conditions`` ``(B, C)`` ->
``condition_encoder`` (see `oasis_vqvae.models.conditioning`) -> ``h`` ``(B, D)``. Gated:
every ``gated_{i}`` is ``conditional`` and takes ``[v, h_stack, h]``. Plain: ``masked_a``
and each ``res_{i}_masked`` lose their ReLU to a following ``masked_a_condition`` /
``res_{i}_condition`` (`ConditionBias`). With ``condition_maps`` > 0 the position
layers also take ``h``: the bias then depends on the conditions (`PositionBias`).
Unconditional models keep the layers above,
so ``.keras`` files saved before conditions still load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from oasis_vqvae.models.conditioning import ConditionEncoder, ConditionEncoding
from oasis_vqvae.models.vqvae import Conv2D, bias_and_activation

__all__ = [
    "ConditionBias",
    "GatedPixelBlock",
    "MASK_TYPES",
    "MaskedConv2D",
    "OneHot",
    "PositionBias",
    "build_pixelcnn",
    "causal_mask",
]

MASK_TYPES = ("A", "B", "vertical_A", "vertical_B")


def causal_mask(kernel_size: int | Sequence[int], mask_type: str) -> np.ndarray:
    """The 0/1 mask ``(kh, kw)`` float32 of a causal kernel centred at ``(kh//2, kw//2)``.

    - "A": rows above the centre, and the centre row left of the centre
      (the centre itself excluded; first layer, which sees the current code).
    - "B": as "A" plus the centre (later layers).
    - "vertical_A": all rows above the centre (full width); "vertical_B": rows up
      to and including the centre row. Used by the gated vertical stack.

    E.g. ``causal_mask(3, "A")`` is ``[[1, 1, 1], [1, 0, 0], [0, 0, 0]]``.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}.")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}.")
    ci, cj = kh // 2, kw // 2
    mask = np.zeros((kh, kw), dtype="float32")
    if mask_type.startswith("vertical"):
        mask[: ci + (mask_type == "vertical_B"), :] = 1.0
    else:
        mask[:ci, :] = 1.0
        mask[ci, : cj + (mask_type == "B")] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class MaskedConv2D(layers.Conv2D):
    """A stride-1 "same" `Conv2D` whose kernel is multiplied by `causal_mask`.

    ``(B, H, W, C)`` -> ``(B, H, W, filters)``. Takes the `Conv2D` arguments plus
    ``mask_type`` (see `causal_mask`); the kernel size must be odd.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        mask_type: str = "B",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("padding", "same")
        super().__init__(filters, kernel_size, **kwargs)
        if self.padding != "same" or tuple(self.strides) != (1, 1):
            raise ValueError("MaskedConv2D needs padding='same' and strides=1.")
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError("MaskedConv2D needs data_format='channels_last', groups=1.")
        self.mask_type = mask_type
        self._kernel_mask = causal_mask(self.kernel_size, mask_type)[:, :, None, None]
        # The mask's non-zero rows and columns: only they are convolved (see convolution_op).
        rows, cols = np.nonzero(self._kernel_mask[:, :, 0, 0])
        if not len(rows):
            raise ValueError(f"A {kernel_size} kernel of mask type {mask_type!r} sees nothing.")
        self._taps = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        """Convolve with the masked kernel, cropped to the taps the mask keeps.

        Same result as the full "same" convolution with the masked kernel (the stored kernel
        is never changed), without the multiplications by zero: a causal mask keeps at most
        the upper half of the kernel (7x7 type A: 3 of 7 rows).
        """
        top, bottom, left, right = self._taps
        mask = ops.convert_to_tensor(self._kernel_mask[top:bottom, left:right], kernel.dtype)
        kernel = kernel[top:bottom, left:right] * mask
        # Output row i reads input rows i + (r - ci) * dilation for kept kernel rows r (ci: the
        # centre row): pad above, drop the rows below that no kept tap reaches; columns alike.
        (ci, cj), (dy, dx) = (k // 2 for k in self.kernel_size), self.dilation_rate
        pad_bottom, pad_right = (bottom - 1 - ci) * dy, (right - 1 - cj) * dx
        inputs = inputs[:, : pad_bottom if pad_bottom < 0 else None,
                        : pad_right if pad_right < 0 else None]  # fmt: skip
        inputs = ops.pad(
            inputs,
            [[0, 0], [(ci - top) * dy, max(pad_bottom, 0)],
             [(cj - left) * dx, max(pad_right, 0)], [0, 0]],
        )  # fmt: skip
        return ops.conv(
            inputs, kernel, padding="valid", data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )  # fmt: skip

    def call(self, inputs: Any) -> Any:
        """``activation(masked_conv(inputs) + bias)``; the bias added as `vqvae.Conv2D` does."""
        return bias_and_activation(self, self.convolution_op(inputs, self.kernel))

    def get_config(self) -> dict[str, Any]:
        """Conv2D's config plus ``mask_type``."""
        return {**super().get_config(), "mask_type": self.mask_type}


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class OneHot(layers.Layer):
    """Int codes ``(B, H, W)`` -> one-hot float ``(B, H, W, num_classes)``."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, inputs: Any) -> Any:
        """One-hot encode the codes."""
        return ops.one_hot(ops.cast(inputs, "int32"), self.num_classes, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(B, H, W)`` -> ``(B, H, W, num_classes)``."""
        return (*input_shape, self.num_classes)

    def get_config(self) -> dict[str, Any]:
        """Layer config plus ``num_classes``."""
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class PositionBias(layers.Layer):
    """Adds a learned bias per grid position and channel: ``(B, H, W, C)`` -> same shape.

    Masked convolutions see only a window of earlier codes, so a PixelCNN cannot tell how
    far down the slice it is (where a head should start or close). This bias tells it.
    It depends on no code, so the model stays causal.

    With ``rank`` > 0 the layer takes ``[x, c]``, ``c`` ``(B, D)`` the condition embedding,
    and the bias also depends on the conditions: ``sum_r a_r(c) S_r[h, w] U_r[ch]`` with
    ``rank`` spatial maps ``S_r``, their channel loadings ``U_r`` and ``a = Dense(rank)(c)``.
    Where brain, background and cerebellum lie depends on the slice level, and the gates'
    condition term, the same at every position, cannot say where (location-dependent
    conditioning, van den Oord et al. 2016, section 2.3; low-rank, so few grids fit it).
    """

    def __init__(self, rank: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self.rank = int(rank)
        if self.rank:
            self.mix = layers.Dense(self.rank, dtype="float32", name="mix")

    def build(self, input_shape: Any) -> None:
        """One ``(H, W, C)`` weight, zero at the start (and the conditional maps' weights)."""
        x_shape = tuple(input_shape[0] if self.rank else input_shape)
        self.bias = self.add_weight(shape=x_shape[1:], initializer="zeros", name="bias")
        if self.rank:
            height, width, channels = x_shape[1:]
            self.mix.build(tuple(input_shape[1]))
            # Zero maps: the layer starts as the unconditional bias; random loadings so the
            # maps' gradients are not zero.
            self.maps = self.add_weight(
                shape=(self.rank, height, width), initializer="zeros", name="maps"
            )
            self.loadings = self.add_weight(
                shape=(self.rank, channels), initializer="glorot_uniform", name="loadings"
            )

    def position_map(self, condition: Any) -> Any:
        """The bias of each sample ``(B, H, W, C)`` float32 for embeddings ``(B, D)``."""
        per_rank = ops.einsum("br,rc->brc", self.mix(ops.cast(condition, "float32")),
                              ops.cast(self.loadings, "float32"))  # fmt: skip
        spatial = ops.einsum("rhw,brc->bhwc", ops.cast(self.maps, "float32"), per_rank)
        return spatial + ops.cast(self.bias, "float32")[None]

    def call(self, inputs: Any) -> Any:
        """Add the bias (of the sample's conditions, with ``rank`` > 0)."""
        if not self.rank:
            return inputs + ops.cast(self.bias, inputs.dtype)
        x, condition = inputs
        return x + ops.cast(self.position_map(condition), x.dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Same as ``x``."""
        return tuple(input_shape[0] if self.rank else input_shape)

    def get_config(self) -> dict[str, Any]:
        """Layer config (plus ``rank`` when the bias is conditional)."""
        config = super().get_config()
        if self.rank:  # absent from unconditional configs, as before condition maps
            config["rank"] = self.rank
        return config


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class ConditionBias(layers.Layer):
    """``[x (B, H, W, C), c (B, D)]`` -> ``activation(x + dense(c))``, the same at every position.

    The plain PixelCNN's way of taking a condition: its masked convolutions run without
    their activation and this adds the condition's term before it (as the gated layers do).
    """

    def __init__(self, units: int, activation: str | None = "relu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.dense = layers.Dense(self.units, dtype=self.dtype_policy, name="dense")

    def build(self, input_shape: Sequence[tuple]) -> None:
        """Build the dense map of the condition ``(B, D)`` -> ``(B, units)``."""
        x_shape, c_shape = (tuple(s) for s in input_shape)
        if x_shape[-1] != self.units:
            raise ValueError(f"ConditionBias has {self.units} units, x {x_shape[-1]} channels")
        self.dense.build(c_shape)

    def call(self, inputs: Sequence[Any]) -> Any:
        """Add the condition term and apply the activation."""
        x, condition = inputs
        return self.activation(x + ops.cast(self.dense(condition), x.dtype)[:, None, None, :])

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        """Same as ``x``."""
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        """Layer config plus ``units`` and ``activation``."""
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
        }


def _gate(x: Any) -> Any:
    """Gated activation: tanh(first half of channels) * sigmoid(second half)."""
    a, b = ops.split(x, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class GatedPixelBlock(layers.Layer):
    """One unconditional layer of the Gated PixelCNN.

    From van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
    Decoders", figure 2.

    Inputs ``[v, h]`` ``(B, H, W, C)`` each -> outputs ``[v', h']`` ``(B, H, W, filters)``:

        v_pre = vertical(v)                 # k x k, rows above only (masked)
        v'    = tanh * sigmoid(v_pre)
        h_pre = horizontal(h) + v_to_h(v_pre)   # 1 x k row conv + 1x1 link
        h'    = h_out(tanh * sigmoid(h_pre)) (+ h if mask_type == "B")

    The vertical stack at ``(i, j)`` depends only on rows ``< i`` (type "vertical_A"
    on the first layer, "vertical_B" on stacked ones), which plays the role of the
    paper's down-shift, so linking it into the horizontal stack at the same
    position is causal. The horizontal stack sees its own row left of ``j``
    (type "A" first, "B" later). Together they cover every earlier position in the
    receptive field: no blind spot. ``mask_type="A"`` is the first layer (no
    residual: its input holds the current code); "B" layers add a residual.

    ``dilation`` > 1 dilates the vertical convolution (rows and columns): the stack then
    reads rows ``i - dilation`` and ``i`` and reaches ``dilation`` rows further up per layer
    instead of one, so a few layers see across a 64x64 code grid (causal dilated
    convolutions as in WaveNet, van den Oord et al. 2016). The horizontal stack stays
    undilated: it fills in the current row's detail.

    ``conditional=True`` (section 2.3 of the paper): the inputs are ``[v, h, c]`` with ``c``
    ``(B, D)`` the condition embedding, and ``condition_v(c)``, ``condition_h(c)``
    (``(B, 2 * filters)``, one value per sample) are added to ``v_pre`` and ``h_pre``, so
    both halves of both gates see the condition: ``tanh(W_f x + V_f c) * sigmoid(W_g x + V_g c)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        mask_type: str = "B",
        conditional: bool = False,
        dilation: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}.")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mask_type = mask_type
        self.dilation = int(dilation)
        k, f2, dtype = self.kernel_size, 2 * self.filters, self.dtype_policy
        self.vertical = MaskedConv2D(
            f2, (k, k), mask_type=f"vertical_{mask_type}", dilation_rate=self.dilation,
            dtype=dtype, name="vertical",
        )  # fmt: skip
        self.horizontal = MaskedConv2D(
            f2, (1, k), mask_type=mask_type, dtype=dtype, name="horizontal"
        )
        self.vertical_to_horizontal = Conv2D(f2, 1, dtype=dtype, name="v_to_h")
        self.horizontal_out = Conv2D(self.filters, 1, dtype=dtype, name="h_out")
        self.conditional = bool(conditional)
        if self.conditional:  # V_v^T h and V_h^T h: one gate bias per sample and stack
            self.condition_v = layers.Dense(f2, dtype=dtype, name="condition_v")
            self.condition_h = layers.Dense(f2, dtype=dtype, name="condition_h")

    def build(self, input_shape: Sequence[tuple]) -> None:
        """Build the convolutions for ``[v_shape, h_shape(, condition_shape)]``."""
        v_shape, h_shape = (tuple(s) for s in input_shape[:2])
        if self.conditional:
            if len(input_shape) != 3:
                raise ValueError("A conditional gated block takes [v, h, condition].")
            self.condition_v.build(tuple(input_shape[2]))
            self.condition_h.build(tuple(input_shape[2]))
        if self.mask_type == "B" and h_shape[-1] != self.filters:
            raise ValueError(
                f"A type-B gated block needs {self.filters} horizontal input "
                f"channels for its residual, got {h_shape[-1]}."
            )
        self.vertical.build(v_shape)
        self.horizontal.build(h_shape)
        self.vertical_to_horizontal.build((*v_shape[:-1], 2 * self.filters))
        self.horizontal_out.build((*h_shape[:-1], self.filters))

    def call(self, inputs: Sequence[Any]) -> list[Any]:
        """``[v, h]`` (or ``[v, h, condition]``) -> ``[v', h']``."""
        v_in, h_in = inputs[:2]
        # Vertical stack (plus its condition term, constant over the grid).
        v = self.vertical(v_in)
        if self.conditional:
            v = v + self.condition_v(inputs[2])[:, None, None, :]
        # Horizontal stack, fed by the vertical one.
        h = self.horizontal(h_in) + self.vertical_to_horizontal(v)
        if self.conditional:
            h = h + self.condition_h(inputs[2])[:, None, None, :]
        h_out = self.horizontal_out(_gate(h))
        if self.mask_type == "B":
            h_out = h_out + h_in
        return [_gate(v), h_out]

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> list[tuple]:
        """Both stacks get ``filters`` channels."""
        v_shape, h_shape = (tuple(s) for s in input_shape[:2])
        return [(*v_shape[:-1], self.filters), (*h_shape[:-1], self.filters)]

    def get_config(self) -> dict[str, Any]:
        """Layer config plus ``filters``, ``kernel_size``, ``mask_type`` (and ``conditional``)."""
        config = {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "mask_type": self.mask_type,
        }
        if self.conditional:  # absent from unconditional configs, as before conditions
            config["conditional"] = True
        if self.dilation != 1:  # absent from undilated configs, as before dilation
            config["dilation"] = self.dilation
        return config


def _position_bias(x: Any, name: str, dtype: str | None, rank: int, condition: Any) -> Any:
    """``x`` plus a `PositionBias` (conditional with ``rank`` > 0)."""
    if rank:
        return PositionBias(rank, dtype=dtype, name=name)([x, condition])
    return PositionBias(dtype=dtype, name=name)(x)


def _residual_block(
    x: Any, filters: int, name: str, dtype: str | None, condition: Any = None
) -> Any:
    """Keras-example residual block: 1x1 -> masked 3x3 (B) -> 1x1, plus the input.

    With a ``condition`` ``(B, D)``, the masked conv's ReLU moves into ``{name}_condition``,
    which adds the condition's term first.
    """
    h = Conv2D(filters // 2, 1, activation="relu", dtype=dtype, name=f"{name}_in")(x)
    activation = "relu" if condition is None else None
    h = MaskedConv2D(
        filters // 2, 3, mask_type="B", activation=activation, dtype=dtype, name=f"{name}_masked"
    )(h)
    if condition is not None:
        h = ConditionBias(filters // 2, dtype=dtype, name=f"{name}_condition")([h, condition])
    h = Conv2D(filters, 1, activation="relu", dtype=dtype, name=f"{name}_out")(h)
    return layers.Add(dtype=dtype, name=f"{name}_add")([x, h])


def build_pixelcnn(
    grid_shape: Sequence[int],
    num_embeddings: int,
    filters: int = 128,
    residual_blocks: int = 2,
    kernel_size: int = 7,
    hidden_layers: int = 2,
    gated: bool = False,
    embedding_dim: int = 0,
    position_bias: bool = False,
    conditions: Sequence[ConditionEncoding] = (),
    condition_dim: int = 32,
    condition_dropout: float = 0.0,
    condition_maps: int = 0,
    dilations: Sequence[int] = (1,),
    seed: int | None = None,
    name: str = "pixelcnn",
    dtype: str | None = None,
) -> keras.Model:
    """PixelCNN: int32 codes ``(B, H, W)`` -> logits ``(B, H, W, num_embeddings)``.

    With ``conditions``, the model takes ``[codes, conditions]``, ``conditions`` float32
    ``(B, C)`` as `oasis_vqvae.models.conditioning` describes, embedded by a
    ``condition_encoder`` into ``(B, condition_dim)`` that every gated layer (or, plain,
    the first masked conv and each residual block's masked conv) adds to its
    pre-activations. Conditions are constant over the grid, so the model stays causal.

    Args:
        grid_shape: ``(H, W)`` of the VQ-VAE's latent grid, e.g. ``(32, 32)``.
        num_embeddings: Codebook size ``K``; codes are in ``[0, K)``.
        filters: Width of the network.
        residual_blocks: Type-B residual blocks (plain) or gated layers (gated).
        kernel_size: Odd size of the first (type-A) masked convolution.
        hidden_layers: 1x1 ReLU convolutions before the output.
        gated: Gated PixelCNN (vertical/horizontal stacks, no blind spot) instead
            of the plain PixelCNN (whose stacked masks leave a blind spot up-right).
        embedding_dim: 0 feeds one-hot codes to the first masked convolution; > 0 a
            learned embedding of this size (the first layer then costs
            ``embedding_dim / num_embeddings`` as much).
        position_bias: Add a learned `PositionBias` after the first layer, so the model
            knows where in the grid each code is.
        name: Model name.
        conditions: The encodings of the model's conditions, in input order (empty: an
            unconditional single-input model, the layout of before conditions).
        condition_dim: Width of the condition embedding.
        condition_dropout: Training only: share of samples whose conditions are replaced
            by the learned null (so the model also samples unconditionally).
        condition_maps: > 0: the position bias also depends on the conditions, through
            this many low-rank spatial maps (see `PositionBias`); needs ``position_bias``
            and ``conditions``.
        dilations: Gated only: the vertical stacks' dilations of ``gated_1`` onwards,
            cycled (e.g. ``(1, 2, 4, 8)``: 8 layers reach 3 + 30 rows up, not 3 + 8).
        seed: Seed of the condition dropout draws.
        dtype: The layers' Keras dtype policy, e.g. ``"mixed_bfloat16"`` (None: the global
            one); the embeddings and the logits compute in float32 under any policy.

    The output is logits (no softmax): train with
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` on
    ``(codes, codes)`` pairs.
    """
    height, width = (int(s) for s in grid_shape)
    if height < 1 or width < 1:
        raise ValueError(f"grid_shape must be positive, got {tuple(grid_shape)}.")
    if int(num_embeddings) < 2:
        raise ValueError(f"num_embeddings must be >= 2, got {num_embeddings}.")
    if filters < 2:
        raise ValueError(f"filters must be >= 2, got {filters}.")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}.")
    if residual_blocks < 0 or hidden_layers < 0 or embedding_dim < 0:
        raise ValueError("residual_blocks, hidden_layers and embedding_dim must be >= 0.")
    if condition_maps and not (position_bias and conditions):
        raise ValueError("condition_maps needs position_bias and at least one condition.")
    dilations = [int(d) for d in dilations] or [1]
    if min(dilations) < 1 or (not gated and max(dilations) > 1):
        raise ValueError(f"dilations must be >= 1, and 1 for a plain PixelCNN: {dilations}.")

    inputs = keras.Input((height, width), dtype="int32", name="codes")
    condition = None
    if conditions:
        condition_input = keras.Input((len(conditions),), dtype="float32", name="conditions")
        condition = ConditionEncoder(
            conditions, condition_dim, condition_dropout, seed, name="condition_encoder"
        )(condition_input)
    if embedding_dim:
        # float32: each row's gradient sums over every position holding its code.
        x = layers.Embedding(num_embeddings, embedding_dim, dtype="float32", name="embedding")(
            inputs
        )
    else:
        x = OneHot(num_embeddings, dtype=dtype, name="one_hot")(inputs)
    if gated:
        # Vertical and horizontal stacks.
        extra = [] if condition is None else [condition]
        gated_kwargs = {"conditional": True} if conditions else {}
        v, h = GatedPixelBlock(
            filters, kernel_size, "A", dtype=dtype, name="gated_0", **gated_kwargs
        )([x, x, *extra])
        if position_bias:
            v = _position_bias(v, "position_v", dtype, condition_maps, condition)
            h = _position_bias(h, "position_h", dtype, condition_maps, condition)
        for i in range(1, residual_blocks + 1):
            dilation = dilations[(i - 1) % len(dilations)]
            v, h = GatedPixelBlock(
                filters, 3, "B", dtype=dtype, name=f"gated_{i}", dilation=dilation, **gated_kwargs
            )([v, h, *extra])
        x = h
    else:
        # Type-A masked convolution, then type-B residual blocks.
        x = MaskedConv2D(
            filters, kernel_size, mask_type="A", activation=None if conditions else "relu",
            dtype=dtype, name="masked_a",
        )(x)  # fmt: skip
        if condition is not None:
            x = ConditionBias(filters, dtype=dtype, name="masked_a_condition")([x, condition])
        if position_bias:
            x = _position_bias(x, "position", dtype, condition_maps, condition)
        for i in range(residual_blocks):
            x = _residual_block(x, filters, f"res_{i}", dtype, condition)
    # Per-position head.
    for i in range(hidden_layers):
        x = Conv2D(filters, 1, activation="relu", dtype=dtype, name=f"hidden_{i}")(x)
    logits = Conv2D(num_embeddings, 1, dtype="float32", name="logits")(x)
    model_inputs = inputs if condition is None else [inputs, condition_input]
    return keras.Model(model_inputs, logits, name=name)
