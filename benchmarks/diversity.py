"""Speed of the evaluate stage's diversity (mean pairwise MS-SSIM) against per-pair MS-SSIM.

Makes ``--images`` synthetic brain slices (``--size`` px, uint8: several subjects, every level)
and times, in one run:

  (a) the project's ``oasis_vqvae.metrics.mean_pairwise_ms_ssim`` over all pairs of them:
      each image's local statistics once per scale, blur(x * y) per pair, separable windows;
  (b) the plain route, ``tf.image.ssim_multiscale`` over the pairs in batches (what evaluate
      did before), on all pairs of the first images (about ``--naive-pairs`` pairs), scaled
      to all pairs (all of them at 100 images of 256 px take about half an hour on 2 cores);

and checks that (a) and (b) agree on the pairs (b) ran. TensorFlow is warmed up first. Times
are wall-clock on a possibly shared machine: compare them within one run. The last line is
``diversity_vs_per_pair: <ratio>`` (estimated plain time / project time).

    python benchmarks/diversity.py            # evaluate's 100 images at 256x256
    python benchmarks/diversity.py --quick    # 12 images at 64x64, seconds
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_images(count: int, size: int) -> np.ndarray:
    """``count`` uint8 synthetic slices: subjects of 8 slices from the bottom to the top."""
    from oasis_vqvae.data.synthetic import generate_subject_slices

    subjects = range((count + 7) // 8)
    return np.concatenate([generate_subject_slices(7, s, 8, size) for s in subjects])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="images (evaluate's default)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--naive-pairs", type=int, default=256, help="pairs the plain route runs")
    parser.add_argument("--quick", action="store_true", help="12 images of 64 px, 32 pairs")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.naive_pairs = 12, 64, 32

    from oasis_vqvae import metrics

    images = make_images(args.images, args.size)
    pairs = len(images) * (len(images) - 1) // 2
    metrics.mean_pairwise_ms_ssim(images[:4], max_images=4)  # warm-up: TF start-up, kernels
    metrics.ms_ssim(images[:2], images[1:3])

    start = time.perf_counter()
    ours = metrics.mean_pairwise_ms_ssim(images, max_images=len(images))
    ours_seconds = time.perf_counter() - start

    # The plain route on all pairs of the first m images, about --naive-pairs pairs.
    m = max(2, int((1 + np.sqrt(1 + 8 * args.naive_pairs)) / 2))
    first, second = np.triu_indices(m, k=1)
    start = time.perf_counter()
    plain = metrics.ms_ssim(images[first], images[second]).mean()
    plain_seconds = time.perf_counter() - start
    naive_seconds = plain_seconds * pairs / len(first)
    same_images = metrics.mean_pairwise_ms_ssim(images[:m], max_images=m)

    print(f"{len(images)} images of {args.size}x{args.size}: {pairs} pairs")
    print(f"project: mean MS-SSIM {ours:.6f} in {ours_seconds:.1f} s")
    print(
        f"plain:   {len(first)} pairs in {plain_seconds:.1f} s, "
        f"so {naive_seconds:.0f} s for all {pairs} (estimated)"
    )
    print(f"agreement on those pairs: {same_images:.6f} (project) vs {plain:.6f} (plain)")
    print(f"diversity_vs_per_pair: {naive_seconds / ours_seconds:.2f}")


if __name__ == "__main__":
    main()
