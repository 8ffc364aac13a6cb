"""Speed of the VQ-VAE train step against the Keras-example trainer, same architecture.

Times, in one process, the training step at 128x128 and 256x256 with batch 32 of two
trainers of the same VQ-VAE: filters [32, 64], 2 residual blocks of 32 filters,
embedding_dim 16, 64 codes (the issue's settings, applied over the ``vqvae`` block of
params.yaml, which supplies the rest: quantizer, EMA, restarts, learning rate, seed;
``--params`` / ``--set`` change them):

  baseline  the trainer style of the Keras VQ-VAE example (keras-io
            examples/generative/vq_vae.py), written below: a `VectorQuantizer` layer
            computing the distances as the example does and adding its loss with
            ``add_loss``, a ``VQVAETrainer.train_step`` taking ``MSE / variance +
            sum(vqvae.losses)`` under a ``tf.GradientTape``, plain Adam, default compile
            options; the encoder and decoder are the project's architecture made of stock
            Keras layers, so both sides do the same arithmetic;
  ours      the project's trainer set up exactly as the train-vqvae stage does
            (`seed_everything`, which turns on TensorFlow op determinism,
            `resolve_precision` of ``vqvae.precision``, the stage's `build_model` and
            `with_loss_scaling`, ``VQVAETrainer``, ``compile``, ``build``). With the default
            ``auto`` it trains in mixed bfloat16 on a CPU or GPU that has bfloat16
            arithmetic, in float32 elsewhere;
  ours, float32  the same in float32, timed too when ours is not float32, to show what the
            precision is worth and what the rest of the trainer is.

Both train on one synthetic batch already in memory, repeated by ``tf.data`` (the input
pipeline is not measured). Each trainer first runs warm-up steps with ``fit`` (tracing,
oneDNN set-up); then the script calls the train function ``fit`` built, one step at a
time, alternating between the two trainers (baseline, ours, ours, baseline, ...). The
machine may be shared and busy: both steps of a pair see about the same load, so the
ratio is the median of the step-by-step ratios; images/s are medians (best in
brackets), and the CPU time per step, which load hardly changes, is shown as well.

FLOPs are counted analytically: 2 x multiply-adds of every convolution and transposed
convolution plus the quantizer's distance matmul, per image, forward; a training step
is counted as 3 x forward (forward + gradients of inputs and weights). ``--profile-flops``
cross-checks the forward count with ``tf.compat.v1.profiler`` on a concrete function.

The last line is ``train_vs_baseline: <ratio>``: the geometric mean of the ratios of the
sizes run (128 and 256 by default; the line above it says which).

    python benchmarks/train_throughput.py [--quick] [--sizes 128 256] [--steps N]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from tensorflow.python.framework.config import is_op_determinism_enabled  # noqa: E402

import oasis_vqvae.models.vqvae as vqvae_module  # noqa: E402
from oasis_vqvae.config import VQVAEConfig, load_params  # noqa: E402
from oasis_vqvae.models import VQVAETrainer, build_decoder, build_encoder  # noqa: E402
from oasis_vqvae.precision import Policy, resolve_precision, with_loss_scaling  # noqa: E402
from oasis_vqvae.stages.common import seed_everything  # noqa: E402
from oasis_vqvae.stages.train_vqvae import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The architecture and batch the comparison is specified for (the issue), applied over the
# params file's vqvae block (which supplies everything else: quantizer, EMA, restarts,
# data_init, learning rate, seed); --set overrides them in turn.
ISSUE_SETTINGS = (
    "vqvae.filters=[32, 64]",
    "vqvae.residual_blocks=2",
    "vqvae.residual_filters=32",
    "vqvae.embedding_dim=16",
    "vqvae.num_embeddings=64",
    "vqvae.batch_size=32",
)
TRAIN_FLOPS_PER_FORWARD = 3  # forward + input gradients + weight gradients


# --------------------------------------------------------------------------------------
# Baseline: the Keras VQ-VAE example's quantizer and trainer, on the project's architecture


class ExampleVectorQuantizer(layers.Layer):
    """The Keras example's quantizer: codebook ``(D, K)``, one-hot lookup, ``add_loss``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, beta: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.num_embeddings = num_embeddings
        self.beta = beta
        w_init = tf.random_uniform_initializer()
        self.embeddings = tf.Variable(
            initial_value=w_init(shape=(embedding_dim, num_embeddings), dtype="float32"),
            trainable=True,
            name="embeddings_vqvae",
        )

    def call(self, x: Any) -> Any:
        input_shape = tf.shape(x)
        flattened = tf.reshape(x, [-1, self.embedding_dim])
        encoding_indices = self.get_code_indices(flattened)
        encodings = tf.one_hot(encoding_indices, self.num_embeddings)
        quantized = tf.matmul(encodings, self.embeddings, transpose_b=True)
        quantized = tf.reshape(quantized, input_shape)
        commitment_loss = self.beta * tf.reduce_mean((tf.stop_gradient(quantized) - x) ** 2)
        codebook_loss = tf.reduce_mean((quantized - tf.stop_gradient(x)) ** 2)
        self.add_loss(commitment_loss + codebook_loss)
        return x + tf.stop_gradient(quantized - x)  # straight-through estimator

    def get_code_indices(self, flattened_inputs: Any) -> Any:
        similarity = tf.matmul(flattened_inputs, self.embeddings)
        distances = (
            tf.reduce_sum(flattened_inputs**2, axis=1, keepdims=True)
            + tf.reduce_sum(self.embeddings**2, axis=0)
            - 2 * similarity
        )
        return tf.argmin(distances, axis=1)


class ExampleVQVAETrainer(keras.models.Model):
    """The Keras example's trainer: GradientTape step, three `Mean` trackers."""

    def __init__(self, vqvae: keras.Model, train_variance: float, **kwargs):
        super().__init__(**kwargs)
        self.train_variance = train_variance
        self.vqvae = vqvae
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.vq_loss_tracker = keras.metrics.Mean(name="vq_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.vq_loss_tracker]

    def train_step(self, x: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            reconstructions = self.vqvae(x)
            reconstruction_loss = tf.reduce_mean((x - reconstructions) ** 2) / self.train_variance
            total_loss = reconstruction_loss + sum(self.vqvae.losses)
        grads = tape.gradient(total_loss, self.vqvae.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.vqvae.trainable_variables, strict=True))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.vq_loss_tracker.update_state(sum(self.vqvae.losses))
        return {
            "loss": self.total_loss_tracker.result(),
            "reconstruction_loss": self.reconstruction_loss_tracker.result(),
            "vqvae_loss": self.vq_loss_tracker.result(),
        }


def _stock_residual_block(x: Any, filters: int, residual_filters: int) -> Any:
    h = layers.Conv2D(residual_filters, 3, padding="same")(x)
    h = layers.LeakyReLU()(h)
    h = layers.Conv2D(filters, 1)(h)
    return layers.Add()([x, h])


def stock_encoder(cfg: VQVAEConfig, size: int) -> keras.Model:
    """The project's encoder architecture, stock Keras layers."""
    inputs = keras.Input((size, size, 1))
    x = inputs
    for f in cfg.filters:
        x = layers.Conv2D(f, 4, strides=2, padding="same", activation="relu")(x)
    for _ in range(cfg.residual_blocks):
        x = _stock_residual_block(x, cfg.filters[-1], cfg.residual_filters)
    x = layers.LeakyReLU()(x)
    outputs = layers.Conv2D(cfg.embedding_dim, 1)(x)
    return keras.Model(inputs, outputs, name="encoder")


def stock_decoder(cfg: VQVAEConfig, size: int) -> keras.Model:
    """The project's decoder architecture, stock Keras layers."""
    grid = size // 2 ** len(cfg.filters)
    inputs = keras.Input((grid, grid, cfg.embedding_dim))
    x = layers.Conv2D(cfg.filters[-1], 3, padding="same")(inputs)
    for _ in range(cfg.residual_blocks):
        x = _stock_residual_block(x, cfg.filters[-1], cfg.residual_filters)
    x = layers.LeakyReLU()(x)
    for f in reversed(cfg.filters):
        x = layers.Conv2DTranspose(f, 4, strides=2, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="decoder")


def baseline_trainer(cfg: VQVAEConfig, size: int, variance: float) -> keras.Model:
    """Example-style trainer around the project's architecture; plain Adam, default compile."""
    inputs = keras.Input((size, size, 1))
    quantizer = ExampleVectorQuantizer(
        cfg.num_embeddings, cfg.embedding_dim, cfg.beta, name="vector_quantizer"
    )
    outputs = stock_decoder(cfg, size)(quantizer(stock_encoder(cfg, size)(inputs)))
    trainer = ExampleVQVAETrainer(keras.Model(inputs, outputs, name="vq_vae"), variance)
    trainer.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate))
    return trainer


# --------------------------------------------------------------------------------------
# Ours: the train-vqvae stage's set-up


def project_trainer(
    cfg: VQVAEConfig,
    size: int,
    variance: float,
    policy: Policy,
    jit_compile: bool | None = None,
    steps_per_execution: int = 1,
    stock_conv: bool = False,
) -> keras.Model:
    """The trainer as `oasis_vqvae.stages.train_vqvae` builds and compiles it, in ``policy``.

    ``jit_compile`` / ``steps_per_execution`` other than None / 1 measure candidate
    changes to the stage; the stage itself passes neither. ``stock_conv`` builds the
    model with ``keras.layers.Conv2D`` in place of the project's `Conv2D` (the model as
    it was before that layer), to show what the layer is worth.
    """
    if stock_conv:
        saved, vqvae_module.Conv2D = vqvae_module.Conv2D, layers.Conv2D
        try:
            model = build_model(cfg, size, policy)
        finally:
            vqvae_module.Conv2D = saved
    else:
        model = build_model(cfg, size, policy)
    trainer = VQVAETrainer(model, data_variance=variance)
    options: dict[str, Any] = {}
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    if steps_per_execution != 1:
        options["steps_per_execution"] = steps_per_execution
    optimizer = with_loss_scaling(keras.optimizers.Adam(cfg.learning_rate), policy)
    trainer.compile(optimizer=optimizer, **options)
    trainer.build((None, size, size, 1))
    return trainer


# --------------------------------------------------------------------------------------
# FLOPs


def forward_flops(cfg: VQVAEConfig, size: int) -> int:
    """Forward FLOPs per image: 2 x MACs of the convolutions + the distance matmul."""
    flops = 0
    for model in (stock_encoder(cfg, size), stock_decoder(cfg, size)):
        for layer in model.layers:
            if isinstance(layer, layers.Conv2DTranspose):
                _, h, w, c = layer.input.shape  # every input pixel meets the whole kernel
            elif isinstance(layer, layers.Conv2D):
                _, h, w, _ = layer.output.shape  # every output pixel does
                c = layer.input.shape[-1]
            else:
                continue
            kh, kw = layer.kernel_size
            flops += 2 * h * w * kh * kw * c * layer.filters
    grid = size // 2 ** len(cfg.filters)
    flops += 2 * grid * grid * cfg.embedding_dim * cfg.num_embeddings  # z . e for all codes
    return flops


def profiler_forward_flops(cfg: VQVAEConfig, size: int) -> int:
    """Forward FLOPs per image by `tf.compat.v1.profiler` on the baseline's graph (all ops)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    model = baseline_trainer(cfg, size, 1.0).vqvae

    @tf.autograph.experimental.do_not_convert
    def forward(x: Any) -> Any:
        return model(x, training=False)

    spec = tf.TensorSpec((1, size, size, 1), tf.float32)
    function = tf.function(forward).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(function).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


# --------------------------------------------------------------------------------------
# Same math check


def check_same_math(cfg: VQVAEConfig, size: int = 32, batch: int = 4) -> float:
    """Largest relative difference between our encoder/decoder and stock-Keras copies.

    Same weights; compares the outputs and the gradients of a loss w.r.t. the inputs and
    every weight. Differences come from the order of floating-point additions only.
    """
    arch = dict(
        filters=cfg.filters,
        residual_blocks=cfg.residual_blocks,
        residual_filters=cfg.residual_filters,
        embedding_dim=cfg.embedding_dim,
    )
    rng = np.random.default_rng(0)
    worst = 0.0
    pairs = (
        (build_encoder(size, **arch), stock_encoder(cfg, size)),
        (build_decoder(size, **arch), stock_decoder(cfg, size)),
    )
    for ours, stock in pairs:
        # Keras' initial kernels; random biases (they start at 0) so the bias path counts.
        weights = [
            w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype("float32")
            for w in stock.get_weights()
        ]
        stock.set_weights(weights)
        ours.set_weights(weights)
        x = tf.constant(rng.uniform(size=(batch, *ours.input_shape[1:])).astype("float32"))
        target = tf.constant(rng.uniform(size=(batch, *ours.output_shape[1:])).astype("float32"))
        results = []
        for model in (ours, stock):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = model(x, training=True)
                loss = tf.reduce_mean((y - target) ** 2)
            results.append([y, *tape.gradient(loss, [x, *model.trainable_weights])])
        for a, b in zip(*results, strict=True):
            scale = float(tf.reduce_max(tf.abs(b))) or 1.0
            worst = max(worst, float(tf.reduce_max(tf.abs(a - b))) / scale)
    return worst


# --------------------------------------------------------------------------------------
# Timing


def warm_up(trainer: keras.Model, dataset: tf.data.Dataset, steps: int) -> Any:
    """Run ``steps`` steps with ``fit`` (tracing, oneDNN set-up); return its train function.

    ``fit`` builds the train function (``make_train_function``) and calls it once per
    step (``steps_per_execution`` steps per call) on an iterator over the dataset; the
    timed steps call that same function directly, which leaves out only ``fit``'s
    per-step callback bookkeeping (no callbacks are given here anyway).
    """
    per_call = trainer.steps_per_execution
    trainer.fit(dataset, epochs=1, steps_per_epoch=steps * per_call, verbose=0)
    return trainer.train_function


def time_step(train_function: Any, iterator: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one call of a train function (one execution)."""
    wall, cpu = time.perf_counter(), time.process_time()
    logs = train_function(iterator)
    float(logs["loss"])  # the step has finished (CPU execution is synchronous anyway)
    return time.perf_counter() - wall, time.process_time() - cpu


def synthetic_batch(size: int, batch: int, seed: int = 0) -> tf.Tensor:
    """Smooth random images in [0, 1], ``(batch, size, size, 1)`` float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(batch, size // 8, size // 8, 1)).astype("float32")
    return tf.image.resize(coarse, (size, size), method="bilinear")


def run_size(
    cfg: VQVAEConfig, size: int, policy: Policy, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up both trainers, then time their steps alternately; returns the statistics."""
    steps = args.steps or (24 if size <= 128 else 10)
    batch = synthetic_batch(size, cfg.batch_size)
    variance = float(tf.math.reduce_variance(batch))
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    keras.utils.set_random_seed(cfg.seed)
    trainers = {
        "baseline": baseline_trainer(cfg, size, variance),
        "ours": project_trainer(
            cfg,
            size,
            variance,
            policy,
            jit_compile=True if args.jit_compile else None,
            steps_per_execution=args.steps_per_execution,
        ),
    }
    if policy != "float32":  # what the precision is worth, and what the rest is
        trainers["ours, float32"] = project_trainer(cfg, size, variance, "float32")
    if args.stock_conv:
        trainers["ours, stock Conv2D"] = project_trainer(
            cfg, size, variance, policy, stock_conv=True
        )
    functions = {name: warm_up(t, dataset, args.warmup) for name, t in trainers.items()}
    iterators = {name: iter(dataset) for name in trainers}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in trainers}
    for step in range(steps):  # baseline, ours, ours, baseline, ...: neighbours share the load
        names = list(trainers) if step % 2 == 0 else list(reversed(trainers))
        for name in names:
            timings[name].append(time_step(functions[name], iterators[name]))
    images = {name: cfg.batch_size * t.steps_per_execution for name, t in trainers.items()}
    rates = {name: [images[name] / w for w, _ in runs] for name, runs in timings.items()}
    cpu = {
        name: [c / trainers[name].steps_per_execution for _, c in runs]
        for name, runs in timings.items()
    }
    ratios = {}
    for name in trainers:
        paired = [o / b for o, b in zip(rates[name], rates["baseline"], strict=True)]
        ratios[name] = {
            "median": statistics.median(paired),
            "best": max(rates[name]) / max(rates["baseline"]),
            "cpu": statistics.median(cpu["baseline"]) / statistics.median(cpu[name]),
        }
    return {
        "steps": steps,
        "rates": rates,
        "cpu": cpu,
        "ratios": ratios,
        "ratio": ratios["ours"]["median"],
        "jit": {name: bool(t.jit_compile) for name, t in trainers.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="128x128 only, 10 timed steps (< 1 min)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="image sizes (128 256)")
    parser.add_argument(
        "--steps", type=int, help="timed steps per trainer (24 at 128x128, 10 at 256x256)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per trainer")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param after the issue's settings, e.g. vqvae.num_embeddings=128",
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="candidate stage change: compile ours with jit_compile=True (Keras refuses XLA "
        "under op determinism, so determinism stays off for the whole run)",
    )
    parser.add_argument(
        "--no-determinism",
        action="store_true",
        help="candidate stage change: seed without tf.config.experimental.enable_op_determinism",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=1,
        help="candidate stage change: compile ours with this steps_per_execution",
    )
    parser.add_argument(
        "--stock-conv",
        action="store_true",
        help="also time ours built with keras.layers.Conv2D (before the project's Conv2D)",
    )
    parser.add_argument(
        "--profile-flops",
        action="store_true",
        help="cross-check the analytic FLOP count with tf.compat.v1.profiler",
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes = args.sizes or [128]
        args.steps = args.steps or 10
    args.sizes = args.sizes or [128, 256]

    cfg = load_params(args.params, overrides=[*ISSUE_SETTINGS, *args.set]).vqvae
    started = time.perf_counter()
    if args.jit_compile or args.no_determinism:
        keras.utils.set_random_seed(cfg.seed)  # seed_everything without op determinism
    else:
        seed_everything(cfg.seed)  # the stage's seeding: turns on op determinism
    deterministic = is_op_determinism_enabled()
    policy = resolve_precision(cfg.precision)

    print(
        f"VQ-VAE train step, batch {cfg.batch_size}; vqvae params ({args.params.name} + "
        f"the issue's architecture): filters {list(cfg.filters)}, {cfg.residual_blocks} "
        f"residual blocks of {cfg.residual_filters}, embedding_dim {cfg.embedding_dim}, "
        f"{cfg.num_embeddings} codes, {cfg.quantizer} quantizer, data_init "
        f"{getattr(cfg, 'data_init', False)}, dead_code_threshold {cfg.dead_code_threshold}"
    )
    print(
        "baseline: Keras-example trainer (VQ layer with add_loss, GradientTape train_step, "
        "Adam, default compile), stock Keras layers, same architecture"
    )
    ours_options = [
        f"precision {policy} (vqvae.precision={cfg.precision})",
        f"op determinism {'on' if deterministic else 'OFF'}",
    ]
    if args.jit_compile:
        ours_options.append("jit_compile=True")
    if args.steps_per_execution != 1:
        ours_options.append(f"steps_per_execution={args.steps_per_execution}")
    print(
        "ours: the train-vqvae stage's set-up (seed_everything, resolve_precision, build_model, "
        f"VQVAETrainer, compile(with_loss_scaling(Adam))); {', '.join(ours_options)}"
    )
    if policy != "float32":
        print("ours, float32: the same with vqvae.precision=float32")
    worst = check_same_math(cfg)
    print(
        f"same math: our encoder/decoder vs stock Keras layers, same weights: largest "
        f"relative difference of outputs and gradients {worst:.1e}"
    )
    print(
        f"FLOPs: analytic, 2 x multiply-adds of the convolutions + quantizer distances; "
        f"train step = {TRAIN_FLOPS_PER_FORWARD} x forward"
    )
    ratios = []
    for size in args.sizes:
        forward = forward_flops(cfg, size)
        train = TRAIN_FLOPS_PER_FORWARD * forward
        result = run_size(cfg, size, policy, args)
        line = f"\n{size}x{size}: forward {forward / 1e9:.3f} GFLOP/image"
        if args.profile_flops:
            line += f" (tf.profiler, all ops: {profiler_forward_flops(cfg, size) / 1e9:.3f})"
        print(line + f", train step {train / 1e9:.3f} GFLOP/image")
        print(f"  {result['steps']} timed steps each, alternating; medians (best)")
        for name in result["rates"]:
            rates = result["rates"][name]
            median, best = statistics.median(rates), max(rates)
            cpu_ms = 1000 * statistics.median(result["cpu"][name])
            label = f"{name} [XLA]" if result["jit"][name] else name
            print(
                f"  {label:18s} {median:7.1f} images/s ({best:6.1f})  "
                f"{median * train / 1e9:6.1f} GFLOP/s ({best * train / 1e9:6.1f})  "
                f"{cpu_ms:7.0f} CPU-ms/step"
            )
        for name, ratio in result["ratios"].items():
            if name != "baseline":
                print(
                    f"  {name} / baseline: {ratio['median']:.2f} (median of the step-by-step "
                    f"ratios); best vs best {ratio['best']:.2f}; by CPU time {ratio['cpu']:.2f}"
                )
        ratios.append(result["ratio"])
        keras.backend.clear_session()
    overall = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    load = os.getloadavg()[0]
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {load:.1f} on "
        f"{os.cpu_count()} cores (other processes slow both trainers alike, not the ratio)"
    )
    sizes = " and ".join(f"{s}x{s}" for s in args.sizes)
    what = "geometric mean over" if len(args.sizes) > 1 else "at"
    print(f"train_vs_baseline = median step-by-step ratio, {what} {sizes}")
    print(f"train_vs_baseline: {overall:.2f}")


if __name__ == "__main__":
    main()
