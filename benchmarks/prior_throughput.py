"""Speed of the project's PixelCNN prior train step against the Keras-example PixelCNN.

Times, in one process, one training step of two priors over the same code grid (``--grid``,
by default the grid of the params file: ``data.image_size`` halved once per
``vqvae.filters`` entry, 32x32 for the demo), the same codebook (``vqvae.num_embeddings``)
and the same batch (``--batch``, default ``pixelcnn.batch_size``):

  keras     the PixelCNN of the Keras VQ-VAE example (keras-io
            examples/generative/vq_vae.py, as in examples/generative/pixelcnn.py), written
            below with stock Keras layers: one-hot codes, a 7x7 type-A masked convolution of
            128 filters (ReLU), 2 residual blocks (1x1 ReLU -> masked 3x3 type B of 64 filters
            ReLU -> 1x1 ReLU, added to the input), two 1x1 ReLU layers of 128, 1x1 logits.
            Its `PixelConvLayer` multiplies the kernel by the mask and assigns it back to the
            kernel at every call, as the example does. Compiled as the example compiles it:
            Adam(3e-4), sparse categorical cross-entropy from logits, ``metrics=["accuracy"]``;
  ours      the prior of the train-pixelcnn stage as ``--params`` configures it (params.yaml:
            the demo's gated prior, 24 filters, 8 gated layers, learned embedding, position
            bias, conditioned on slice level and CDR), set up as
            `oasis_vqvae.stages.train_pixelcnn` does: `seed_everything` (op determinism on,
            for both priors: it is process-wide), `resolve_precision`, the stage's
            `build_model` with the condition encodings of ``pixelcnn.conditions``, and
            ``compile`` with `with_loss_scaling` (Adam at ``pixelcnn.learning_rate``).

Both train on one batch of random codes (and, for a conditional prior, random valid
conditions) in memory, repeated by ``tf.data``: the input pipeline is not measured, and
speed does not depend on the codes. Each prior first runs warm-up steps with ``fit``
(tracing); then the train functions ``fit`` built are called one step at a time,
alternating (keras, ours, ours, keras, ...) as benchmarks/train_throughput.py does: both
steps of a pair see about the same load of a shared machine, so the ratio is the median of
the step-by-step ratios. Step times and codes/s are medians (best in brackets); the CPU time
per step, which load hardly changes, is shown too.

The last line is ``prior_vs_keras: <ratio>``: keras step time / ours, > 1 when the project's
prior trains faster per step (it is a different model: the line says what a step of each
costs, not which learns more per step).

    python benchmarks/prior_throughput.py [--quick] [--grid 32] [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from oasis_vqvae.config import Params, load_params  # noqa: E402
from oasis_vqvae.models.fast_sampling import random_conditions  # noqa: E402
from oasis_vqvae.precision import resolve_precision, with_loss_scaling  # noqa: E402
from oasis_vqvae.stages.common import seed_everything  # noqa: E402
from oasis_vqvae.stages.train_pixelcnn import build_model, model_encodings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import time_step, warm_up  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Condition specs as a dataset's codes.json describes them (the synthetic source's values);
# only their kind and size matter for speed.
CONDITION_SPECS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]},
    "sex": {"kind": "categorical", "values": ["F", "M"]},
    "age": {"kind": "continuous", "range": [18.0, 96.0]},
}
KERAS_FILTERS = 128
KERAS_RESIDUAL_BLOCKS = 2
KERAS_HIDDEN_LAYERS = 2
KERAS_LEARNING_RATE = 3e-4


# --------------------------------------------------------------------------------------
# Baseline: the Keras example's PixelCNN


class PixelConvLayer(layers.Layer):
    """The Keras example's masked convolution: a Conv2D whose kernel is masked at each call."""

    def __init__(self, mask_type: str, **kwargs: Any):
        super().__init__()
        self.mask_type = mask_type
        self.conv = layers.Conv2D(**kwargs)

    def build(self, input_shape: Any) -> None:
        self.conv.build(input_shape)
        kh, kw = self.conv.kernel.shape[:2]
        mask = np.zeros(self.conv.kernel.shape, dtype="float32")
        mask[: kh // 2, ...] = 1.0
        mask[kh // 2, : kw // 2, ...] = 1.0
        if self.mask_type == "B":
            mask[kh // 2, kw // 2, ...] = 1.0
        self.mask = mask

    def call(self, inputs: Any) -> Any:
        self.conv.kernel.assign(self.conv.kernel * self.mask)
        return self.conv(inputs)


class ResidualBlock(layers.Layer):
    """The Keras example's residual block: 1x1 -> masked 3x3 (half the filters) -> 1x1."""

    def __init__(self, filters: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.conv1 = layers.Conv2D(filters=filters, kernel_size=1, activation="relu")
        self.pixel_conv = PixelConvLayer(
            mask_type="B", filters=filters // 2, kernel_size=3, activation="relu", padding="same"
        )
        self.conv2 = layers.Conv2D(filters=filters, kernel_size=1, activation="relu")

    def call(self, inputs: Any) -> Any:
        x = self.conv2(self.pixel_conv(self.conv1(inputs)))
        return layers.add([inputs, x])


class OneHot(layers.Layer):
    """``tf.one_hot`` of the int codes, as the example applies it to its input."""

    def __init__(self, depth: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, codes: Any) -> Any:
        return tf.one_hot(codes, self.depth)


def keras_pixelcnn(grid: int, num_embeddings: int) -> keras.Model:
    """The example's PixelCNN over ``(B, grid, grid)`` int32 codes, compiled as it does."""
    inputs = keras.Input(shape=(grid, grid), dtype="int32")
    x = OneHot(num_embeddings)(inputs)
    x = PixelConvLayer(
        mask_type="A", filters=KERAS_FILTERS, kernel_size=7, activation="relu", padding="same"
    )(x)
    for _ in range(KERAS_RESIDUAL_BLOCKS):
        x = ResidualBlock(filters=KERAS_FILTERS)(x)
    for _ in range(KERAS_HIDDEN_LAYERS):
        x = PixelConvLayer(
            mask_type="B", filters=KERAS_FILTERS, kernel_size=1, strides=1,
            activation="relu", padding="valid",
        )(x)  # fmt: skip
    outputs = layers.Conv2D(filters=num_embeddings, kernel_size=1, strides=1, padding="valid")(x)
    model = keras.Model(inputs, outputs, name="keras_pixelcnn")
    model.compile(
        optimizer=keras.optimizers.Adam(KERAS_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# --------------------------------------------------------------------------------------
# Ours: the train-pixelcnn stage's set-up


def project_pixelcnn(params: Params, grid: int) -> tuple[keras.Model, list[dict[str, Any]]]:
    """The prior as `oasis_vqvae.stages.train_pixelcnn` builds and compiles it."""
    cfg = params.pixelcnn
    unknown = [name for name in cfg.conditions if name not in CONDITION_SPECS]
    if unknown:
        raise SystemExit(
            f"pixelcnn.conditions: {unknown[0]!r} has no spec here; known: {list(CONDITION_SPECS)}"
        )
    encodings = model_encodings(cfg, {name: CONDITION_SPECS[name] for name in cfg.conditions})
    policy = resolve_precision(cfg.precision)
    model = build_model(cfg, (grid, grid), params.vqvae.num_embeddings, policy, encodings)
    model.compile(
        optimizer=with_loss_scaling(keras.optimizers.Adam(cfg.learning_rate), policy),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, encodings


# --------------------------------------------------------------------------------------
# Timing


def datasets(
    grid: int, batch: int, num_embeddings: int, encodings: list[dict[str, Any]]
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """One repeated batch of random codes for each prior: ``(codes, codes)`` pairs."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, num_embeddings, (batch, grid, grid)).astype("int32")
    plain = tf.data.Dataset.from_tensors((codes, codes)).repeat()
    if not encodings:
        return plain, plain
    conditions = random_conditions(encodings, batch, rng)
    return plain, tf.data.Dataset.from_tensors(((codes, conditions), codes)).repeat()


def run(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up both priors, time their steps alternately; returns the statistics."""
    seed_everything(params.pixelcnn.seed)  # the stage's seeding (op determinism: both priors)
    ours, encodings = project_pixelcnn(params, args.grid)
    models = {"keras": keras_pixelcnn(args.grid, params.vqvae.num_embeddings), "ours": ours}
    keras_data, our_data = datasets(args.grid, args.batch, params.vqvae.num_embeddings, encodings)
    data = {"keras": keras_data, "ours": our_data}
    functions = {name: warm_up(model, data[name], args.warmup) for name, model in models.items()}
    iterators = {name: iter(data[name]) for name in models}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for step in range(args.steps):  # keras, ours, ours, keras, ...: neighbours share the load
        for name in list(models) if step % 2 == 0 else list(reversed(models)):
            timings[name].append(time_step(functions[name], iterators[name]))
    paired = [k[0] / o[0] for k, o in zip(timings["keras"], timings["ours"], strict=True)]
    return {
        "timings": timings,
        "ratio": statistics.median(paired),
        "cpu_ratio": statistics.median(c for _, c in timings["keras"])
        / statistics.median(c for _, c in timings["ours"]),
        "weights": {name: model.count_params() for name, model in models.items()},
        "policy": resolve_precision(params.pixelcnn.precision),
    }


def describe(params: Params) -> str:
    """Our prior in one line."""
    cfg = params.pixelcnn
    kind = f"gated, {cfg.residual_blocks} gated layers" if cfg.gated else (
        f"plain, {cfg.residual_blocks} residual blocks"
    )  # fmt: skip
    code_input = f"embedding {cfg.embedding_dim}" if cfg.embedding_dim else "one-hot"
    return (
        f"{cfg.filters} filters, {kind}, kernel {cfg.kernel_size}, {cfg.hidden_layers} hidden, "
        f"{code_input}, position bias {cfg.position_bias}, conditions {list(cfg.conditions)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param, e.g. pixelcnn.filters=64",
    )  # fmt: skip
    parser.add_argument("--grid", type=int, help="code grid side (default: the params' grid)")
    parser.add_argument("--batch", type=int, help="batch size (default: pixelcnn.batch_size)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per prior")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per prior")
    parser.add_argument("--quick", action="store_true", help="5 timed steps, 1 warm-up step")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = min(args.steps, 5), 1
    params = load_params(args.params, args.set)
    args.grid = args.grid or params.data.image_size >> len(params.vqvae.filters)
    args.batch = args.batch or params.pixelcnn.batch_size
    started = time.perf_counter()

    result = run(params, args)
    codes = args.batch * args.grid * args.grid
    print(
        f"PixelCNN train step, {args.grid}x{args.grid} codes, {params.vqvae.num_embeddings}-code "
        f"codebook, batch {args.batch}; {args.steps} timed steps each, alternating"
    )
    print(
        f"keras: the Keras example's PixelCNN ({KERAS_FILTERS} filters, one-hot, 7x7 type A, "
        f"{KERAS_RESIDUAL_BLOCKS} residual blocks, {KERAS_HIDDEN_LAYERS} 1x1 layers, "
        f"Adam {KERAS_LEARNING_RATE:g}, accuracy metric)"
    )
    print(
        f"ours: {args.params.name} pixelcnn block: {describe(params)}; precision {result['policy']}"
    )
    print("  medians (best)")
    for name, runs in result["timings"].items():
        walls = [w for w, _ in runs]
        median_ms, best_ms = 1000 * statistics.median(walls), 1000 * min(walls)
        cpu_ms = 1000 * statistics.median(c for _, c in runs)
        print(
            f"  {name:6s} {median_ms:8.1f} ms/step ({best_ms:7.1f})  "
            f"{codes / statistics.median(walls):10.0f} codes/s ({codes / min(walls):9.0f})  "
            f"{cpu_ms:8.0f} CPU-ms/step  {result['weights'][name]:>9,d} weights"
        )
    print(
        f"  ours / keras speed: {result['ratio']:.2f} (median of the step-by-step ratios); "
        f"by CPU time {result['cpu_ratio']:.2f}"
    )
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other processes slow both priors alike, not the ratio)"
    )
    print(f"prior_vs_keras: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
