"""Speed of the fast exact PixelCNN sampler against plain (naive) autoregressive sampling.

The PixelCNN has the seed's size, read from params/seed.yaml (by default 128 filters,
2 residual blocks, a 7x7 first kernel, 2 hidden layers, 128 codes), randomly initialised:
speed does not depend on the weights. For each code grid (32x32 and 64x64; 64x64 is the
code grid of a 256x256 slice) and a batch of 16 samples, one run times:

  (a) naive: one full forward pass of the PixelCNN per code. Every step costs the same,
      so it is timed over the first ``--naive-steps`` positions and scaled to the grid;
  (b) fast: `FastSampler` over whole grids (after one untimed call that compiles it).

Each grid is timed twice: the unconditional seed model, and the same model conditioned on
the demo's kind of conditions (slice level, continuous with Fourier features, and a
4-value categorical CDR; `CONDITION_SPECS`), whose condition terms the fast sampler computes
once per batch. It prints seconds per sample, samples/s and the speed-up, and the fast
sampler's achieved GFLOP/s on the FLOPs it must do (each layer once per code: its
floor), next to this machine's dense float32 matmul rate, i.e. how far it is from that
floor. The full run also measures the peak memory of the fast sampler on 64 samples at
64x64 codes in a fresh process. The last two lines are ``speedup_64x64_conditional: <ratio>`` and
``speedup_64x64: <ratio>`` (unconditional, as before conditions existed).

    python benchmarks/sampling.py [--quick] [--grids 32 64] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONDITION_SPECS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0]},
}


def seed_pixelcnn(grid: int, gated: bool = False, conditional: bool = False):
    """The seed's PixelCNN (params/seed.yaml) for a ``grid`` x ``grid`` code grid."""
    from oasis_vqvae.config import load_params
    from oasis_vqvae.models import build_pixelcnn
    from oasis_vqvae.models.conditioning import condition_encodings

    params = load_params(ROOT / "params" / "seed.yaml")
    cfg = params.pixelcnn
    encodings = condition_encodings(list(CONDITION_SPECS), CONDITION_SPECS) if conditional else ()
    return build_pixelcnn(
        (grid, grid), params.vqvae.num_embeddings, filters=cfg.filters,
        residual_blocks=cfg.residual_blocks, kernel_size=cfg.kernel_size,
        hidden_layers=cfg.hidden_layers, gated=gated, conditions=encodings,
        condition_dim=cfg.condition_dim,
    )  # fmt: skip


def batch_conditions(model, batch: int) -> np.ndarray | None:
    """Random valid conditions ``(batch, C)`` for a conditional model, else None."""
    from oasis_vqvae.models.fast_sampling import conditions_count, random_conditions

    if not conditions_count(model):
        return None
    encodings = model.get_layer("condition_encoder").encodings
    return random_conditions(encodings, batch, np.random.default_rng(0))


def time_naive(model, batch: int, grid: int, steps: int) -> float:
    """Seconds of naive sampling per batch, from ``steps`` timed positions scaled to the grid."""
    import tensorflow as tf

    from oasis_vqvae.models.sampling import _sampling_step

    step = _sampling_step(model, (grid, grid), 1.0)
    codes = tf.zeros((batch, grid, grid), tf.int32)
    conditions = batch_conditions(model, batch)
    conditions = tf.zeros((batch, 0)) if conditions is None else tf.constant(conditions)
    uniforms = tf.random.stateless_uniform((batch,), seed=[0, 0])
    codes = step(codes, conditions, 0, 0, uniforms)  # trace
    started = time.perf_counter()
    for position in range(1, steps + 1):
        codes = step(codes, conditions, position // grid, position % grid, uniforms)
    codes.numpy()
    return (time.perf_counter() - started) / steps * grid * grid


def time_fast(sampler, batch: int, grid: int, repeats: int) -> float:
    """Best seconds of the fast sampler per batch of whole grids."""
    codes = np.zeros((batch, grid, grid), np.int32)
    uniforms = np.random.default_rng(0).random((batch, grid * grid), dtype=np.float32)
    conditions = batch_conditions(sampler.model, batch)
    sampler.sample(codes, uniforms, 0, 1.0, conditions)  # compile
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sampler.sample(codes, uniforms, 0, 1.0, conditions)
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """This machine's dense float32 matmul rate in TensorFlow: the attainable peak."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul(a).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def run_grid(grid: int, args: argparse.Namespace, peak: float, conditional: bool) -> float:
    """Time both samplers on one grid size, print a block of results, return the speed-up."""
    from oasis_vqvae.models.fast_sampling import FastSampler

    model = seed_pixelcnn(grid, conditional=conditional)
    sampler = FastSampler(model)
    naive = time_naive(model, args.batch, grid, args.naive_steps)
    fast = time_fast(sampler, args.batch, grid, args.repeats)
    flops = sampler.flops_per_code * grid * grid * args.batch
    achieved = flops / fast / 1e9
    kind = f"conditional on {list(CONDITION_SPECS)}" if conditional else "unconditional"
    print(f"{grid}x{grid} codes, batch {args.batch}, {kind}:")
    print(f"  naive  {naive / args.batch:9.3f} s/sample  {args.batch / naive:9.2f} samples/s"
          f"  (timed over {args.naive_steps} of {grid * grid} positions, scaled)")  # fmt: skip
    print(f"  fast   {fast / args.batch:9.4f} s/sample  {args.batch / fast:9.2f} samples/s"
          f"  (whole grids, best of {args.repeats})")  # fmt: skip
    print(f"  fast FLOPs {flops / 1e9:.2f} G per batch ({sampler.flops_per_code} per code): "
          f"{achieved:.1f} GFLOP/s, {achieved / peak:.0%} of matmul peak "
          f"({fast / (flops / peak / 1e9):.1f}x the floor time)")  # fmt: skip
    print(f"  speed-up {naive / fast:.0f}x")
    return naive / fast


def peak_memory_mb(grid: int, batch: int) -> float:
    """Peak RSS (MB) of a fresh process that fast-samples ``batch`` grids of ``grid``.

    Read from the child's own ``VmHWM`` (Linux): ``ru_maxrss`` would carry this process's
    peak over into the child across fork and exec.
    """
    code = (
        "import re, sys; sys.path.insert(0, 'benchmarks');"
        "from sampling import seed_pixelcnn; from oasis_vqvae.models import sample_codes;"
        f"sample_codes(seed_pixelcnn({grid}), {batch}, ({grid}, {grid}), batch_size={batch},"
        " progress=False);"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 64], help="code grid sides")
    parser.add_argument("--batch", type=int, default=16, help="samples per batch (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fast batches per grid")
    parser.add_argument(
        "--naive-steps", type=int, default=16, help="timed naive positions per grid"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one timed fast batch, 4 naive steps, no memory run"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.naive_steps = 1, 4
    if 64 not in args.grids:
        parser.error("--grids must include 64 (the last line reports it)")

    peak = matmul_gflops()
    print(f"dense float32 matmul peak here: {peak:.1f} GFLOP/s")
    speedups = {grid: run_grid(grid, args, peak, False) for grid in args.grids}
    conditional = {grid: run_grid(grid, args, peak, True) for grid in args.grids}
    if not args.quick:
        print(f"peak RSS, fast sampler, 64 samples at 64x64 codes: {peak_memory_mb(64, 64):.0f} MB")
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this process, naive included, peak RSS: {own_peak:.0f} MB)")
    print(f"speedup_64x64_conditional: {conditional[64]:.1f}")
    print(f"speedup_64x64: {speedups[64]:.1f}")


if __name__ == "__main__":
    main()
