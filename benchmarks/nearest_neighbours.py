"""Speed of the SSIM nearest-neighbour search against a naive per-pair loop.

Makes QUERIES query and REFERENCES reference images (SIZE x SIZE, uint8): synthetic brain
slices of a few subjects, each reference a shifted, noisy variant of one of them, each query
a noisy variant of a slice of other subjects (so it has no exact copy). Then times, in one run:

  (a) the project's search, ``oasis_vqvae.metrics.nearest_ssim`` with ``--candidates`` k
      (exact SSIM to the k nearest by pooled L2), on every query against every reference;
  (b) a naive loop, one ``tf.image.ssim`` call per (query, reference) pair, on ``--naive-pairs``
      pairs, scaled to QUERIES x REFERENCES pairs (running it all would take hours);
  (c) the project's exact search (``candidates`` = 0: SSIM of every pair, vectorised) on the
      first ``--check`` queries, scaled, and how often (a) finds the same neighbour as (c).

TensorFlow is imported and warmed up before timing. Times are wall-clock on a possibly shared
machine: compare them within one run. The last line is ``nearest_vs_naive: <ratio>``
(estimated naive time / measured project time).

    python benchmarks/nearest_neighbours.py            # the issue's 1,000 x 10,000 at 256x256
    python benchmarks/nearest_neighbours.py --quick    # 40 x 400 at 64x64, seconds
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

BASE_SUBJECTS = 6
BASE_SLICES = 16
SHIFT = 3
NOISE = 6.0
"""Standard deviation (grey levels) of the noise making every image distinct."""


def make_images(count: int, size: int, subjects: range, seed: int) -> np.ndarray:
    """``count`` uint8 images: noisy, shifted variants of synthetic slices of ``subjects``."""
    from oasis_vqvae.data.synthetic import generate_subject_slices

    base = np.concatenate([generate_subject_slices(7, s, BASE_SLICES, size) for s in subjects])
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size), np.uint8)
    for start in range(0, count, 256):  # in chunks: the float noise of all would be large
        index = np.arange(start, min(count, start + 256))
        shifts = rng.integers(-SHIFT, SHIFT + 1, (len(index), 2))
        pairs = zip(index % len(base), shifts, strict=True)
        chunk = np.stack([np.roll(base[i], tuple(s), axis=(0, 1)) for i, s in pairs])
        noisy = chunk + rng.normal(0.0, NOISE, chunk.shape)
        out[index] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def time_project(queries: np.ndarray, references: np.ndarray, candidates: int) -> tuple:
    from oasis_vqvae.metrics import nearest_ssim

    started = time.perf_counter()
    scores, index = nearest_ssim(queries, references, candidates)
    return time.perf_counter() - started, scores, index


def time_naive(queries: np.ndarray, references: np.ndarray, pairs: int) -> float:
    """Seconds per pair of the per-pair loop (keeping the running best, as a search would)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(queries), pairs), rng.integers(0, len(references), pairs)
    chosen = zip(*picks, strict=True)
    best = -1.0
    started = time.perf_counter()
    for q, r in chosen:
        x = queries[q][None, ..., None].astype(np.float32) / 255.0
        y = references[r][None, ..., None].astype(np.float32) / 255.0
        best = max(best, float(tf.image.ssim(x, y, max_val=1.0)[0]))
    return (time.perf_counter() - started) / pairs


def warm_up(size: int) -> None:
    """First calls trace and allocate; keep that out of every timing."""
    from oasis_vqvae.metrics import nearest_ssim

    images = np.zeros((4, size, size), np.uint8)
    nearest_ssim(images, images, 2)
    nearest_ssim(images, images, 0)
    time_naive(images, images, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="default %(default)s")
    parser.add_argument("--references", type=int, default=10_000, help="default %(default)s")
    parser.add_argument("--size", type=int, default=256, help="image side, default %(default)s")
    parser.add_argument("--candidates", type=int, default=64, help="k of (a), default %(default)s")
    parser.add_argument("--naive-pairs", type=int, default=300, help="pairs timed in (b)")
    parser.add_argument("--check", type=int, default=4, help="queries of (c), 0 to skip")
    parser.add_argument("--quick", action="store_true", help="40 x 400 at 64 px, k 16")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.references, args.size, args.candidates = 40, 400, 64, 16
        args.naive_pairs, args.check = 100, 10
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    started = time.perf_counter()
    references = make_images(args.references, args.size, range(1, BASE_SUBJECTS + 1), 1)
    queries = make_images(args.queries, args.size, range(50, 50 + BASE_SUBJECTS), 2)
    print(
        f"images: {args.queries} queries x {args.references} references, {args.size}x{args.size} "
        f"uint8 ({references.nbytes / 1e6:.0f} MB of references), made in "
        f"{time.perf_counter() - started:.1f} s"
    )
    warm_up(args.size)
    pairs = args.queries * args.references
    seconds, scores, index = time_project(queries, references, args.candidates)
    per_pair = time_naive(queries, references, args.naive_pairs)
    naive = per_pair * pairs
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"(a) nearest_ssim, k={args.candidates:<6} {seconds:10.1f} s  (measured)")
    print(
        f"(b) naive per-pair loop      {naive:10.1f} s  (estimated: {per_pair * 1e3:.2f} ms/pair "
        f"over {args.naive_pairs} pairs x {pairs} pairs)"
    )
    if args.check:
        check = min(args.check, args.queries)
        exact_seconds, exact, exact_index = time_project(queries[:check], references, 0)
        same = np.mean(exact_index == index[:check])
        gap = float(np.max(exact - scores[:check]))
        print(
            f"(c) exact search             {exact_seconds * args.queries / check:10.1f} s  "
            f"(estimated from {check} queries: {exact_seconds / check:.2f} s/query)"
        )
        print(f"(a) found the exact SSIM-nearest for {same:.0%} of {check} queries; "
              f"largest SSIM shortfall {gap:.4f}")  # fmt: skip
    print(f"nearest_vs_naive: {naive / seconds:.2f}")


if __name__ == "__main__":
    main()
