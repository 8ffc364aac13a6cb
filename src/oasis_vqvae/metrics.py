"""Image and sample-quality metrics: SSIM, nearest neighbours, code KL, C2ST, coverage.

Also MS-SSIM, PSNR, bootstrap intervals, AUC, total variation, improved precision / recall and
density / coverage.

Every image function takes grayscale images ``(N, H, W)``: float32 in [0, 1], or uint8 in
[0, 255] (scaled to [0, 1] on the fly, so large reference sets can stay in 8 bits).

SSIM (Wang et al. 2004) is computed on the value range the slices are stored in (8-bit,
scaled to [0, 1], so ``max_val`` = 1), with the constants of the paper and of
``tf.image.ssim``: an 11x11 Gaussian window of sigma 1.5 (separable, normalised to sum 1),
``K1 = 0.01``, ``K2 = 0.03`` (``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``L = 1``), population
(biased) local variances, 'valid' filtering (no padding, so a 64 px image has 54 x 54 windows),
and the mean of the per-window SSIM map as the image's score. This equals scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`` up to float32 rounding (the tests check 1e-3).

MS-SSIM (Wang et al. 2003) is ``tf.image.ssim_multiscale`` with the same window and constants.
Its five scales need images of at least 161 px (the coarsest scale, 1/16 of the side, must hold
the 11 px window). Smaller images use as many scales as fit (:func:`ms_ssim_scales`: 3 at
64 px, 2 at 32 px) and the first power factors renormalised to sum 1; scores are comparable
only between runs of the same image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from oasis_vqvae.errors import DataError

if TYPE_CHECKING:  # heavy import, loaded lazily at run time
    import tensorflow as tf

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Weights of the five MS-SSIM scales, finest first (Wang et al. 2003, as in TensorFlow)."""
KL_PSEUDOCOUNT = 0.5
"""Added to every bin of both code histograms, so a code unseen on one side has finite KL."""
PAIR_BUDGET = 2**24
"""Pixels (pairs x H x W) per block of the vectorised SSIM search: ~64 MB per float32 map."""
PREFILTER_SIDE = 64
"""Images are average-pooled to at most this side for the cheap pre-filter distance."""


def as_float(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1]; uint8 input is divided by 255."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def _check_pairs(images: np.ndarray, others: np.ndarray) -> None:
    if images.ndim != 3 or images.shape != others.shape:
        raise DataError(
            f"expected two image stacks (N, H, W) of one shape, got {images.shape} and "
            f"{others.shape}"
        )


def ssim(images: np.ndarray, others: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """SSIM ``(N,)`` of each image to its counterpart (``tf.image.ssim``, see module doc)."""
    import tensorflow as tf

    _check_pairs(images, others)
    scores = [
        tf.image.ssim(
            as_float(images[i : i + batch_size])[..., None],
            as_float(others[i : i + batch_size])[..., None],
            max_val=1.0, filter_size=SSIM_WINDOW, filter_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2,
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]  # fmt: skip
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def ms_ssim_scales(side: int) -> int:
    """How many MS-SSIM scales (at most 5) fit an image whose smaller side is ``side``.

    Scale ``s`` (0-based) has side ``ceil(side / 2**s)``, which must hold the 11 px window.
    """
    if side < SSIM_WINDOW:
        raise DataError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {side}")
    scales = 1
    while scales < len(MS_SSIM_POWER_FACTORS) and math.ceil(side / 2**scales) >= SSIM_WINDOW:
        scales += 1
    return scales


def ms_ssim_power_factors(side: int) -> tuple[float, ...]:
    """The first :func:`ms_ssim_scales` power factors, renormalised to sum 1."""
    factors = MS_SSIM_POWER_FACTORS[: ms_ssim_scales(side)]
    return tuple(f / sum(factors) for f in factors)


def ms_ssim(images: np.ndarray, others: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """MS-SSIM ``(N,)`` of each image to its counterpart (``tf.image.ssim_multiscale``)."""
    import tensorflow as tf

    _check_pairs(images, others)
    factors = ms_ssim_power_factors(min(images.shape[1:]))
    scores = [
        tf.image.ssim_multiscale(
            as_float(images[i : i + batch_size])[..., None],
            as_float(others[i : i + batch_size])[..., None],
            max_val=1.0, power_factors=factors, filter_size=SSIM_WINDOW,
            filter_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2,
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]  # fmt: skip
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def mse(images: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mean squared error ``(N,)`` per image pair, on [0, 1] values."""
    _check_pairs(images, others)
    return np.mean(np.square(as_float(images) - as_float(others)), axis=(1, 2))


def psnr(mse_values: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB from per-image MSE on [0, 1] values (peak 1)."""
    return 10.0 * np.log10(1.0 / np.maximum(np.asarray(mse_values), 1e-12))


def mean_pairwise_ms_ssim(images: np.ndarray, max_images: int, seed: int = 0) -> float:
    """Mean MS-SSIM over all pairs of (at most ``max_images``, seeded choice of) images.

    A diversity measure: lower means the images differ more from one another. The value of
    :func:`ms_ssim` averaged over the pairs (the tests check), computed as :func:`pairwise_ssim`
    is: each image's local statistics once per scale, only blur(x * y) per pair, so 100 images
    at 256 px take 30 s instead of 13 min on two CPU cores (benchmarks/diversity.py).
    """
    if len(images) < 2:
        raise DataError(f"diversity needs at least 2 images, got {len(images)}")
    if len(images) > max_images:
        chosen = np.random.default_rng(seed).choice(len(images), max_images, replace=False)
        images = images[np.sort(chosen)]
    factors = ms_ssim_power_factors(min(images.shape[1:]))
    first, second = np.triu_indices(len(images), k=1)
    scores = np.ones(len(first), np.float64)
    scaled = as_float(images)
    for scale, factor in enumerate(factors):
        if scale:
            scaled = _halve(scaled)
        structure, ssim_ = _pairwise_ssim_terms(scaled, scaled)
        # As tf.image.ssim_multiscale: contrast-structure at every scale, SSIM at the last.
        term = ssim_ if scale == len(factors) - 1 else structure
        scores *= np.maximum(term[first, second], 0.0) ** factor
    return float(scores.mean())


def _halve(images: np.ndarray) -> np.ndarray:
    """One MS-SSIM down-scaling, as TensorFlow's: odd sides padded symmetrically, 2x2 mean."""
    odd = [(0, 0), (0, images.shape[1] % 2), (0, images.shape[2] % 2)]
    images = np.pad(images, odd, "symmetric")
    count, height, width = images.shape
    return images.reshape(count, height // 2, 2, width // 2, 2).mean(axis=(2, 4))


# --- nearest neighbours by SSIM ------------------------------------------------------------------


def _gaussian_kernel() -> np.ndarray:
    """The normalised 1-D window; its outer product is tf.image.ssim's 2-D window."""
    offsets = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return (weights / weights.sum()).astype(np.float32)


def _blur(images: tf.Tensor) -> tf.Tensor:
    """Gaussian-weighted local means ``(..., H-10, W-10)`` of ``(..., H, W)``: two 1-D passes.

    The images become the channels of one depthwise convolution, several times faster on a
    CPU than a batch of one-channel images.
    """
    import tensorflow as tf

    kernel = _gaussian_kernel()
    shape = tf.shape(images)
    height, width = shape[-2], shape[-1]
    channels = tf.transpose(tf.reshape(images, [-1, height, width]), [1, 2, 0])[None]
    count = tf.shape(channels)[-1]
    rows = tf.tile(kernel.reshape(-1, 1, 1, 1), [1, 1, count, 1])
    cols = tf.tile(kernel.reshape(1, -1, 1, 1), [1, 1, count, 1])
    blurred = tf.nn.depthwise_conv2d(channels, rows, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, cols, [1, 1, 1, 1], "VALID")
    blurred = tf.transpose(blurred[0], [2, 0, 1])
    return tf.reshape(blurred, tf.concat([shape[:-2], tf.shape(blurred)[1:]], axis=0))


def _local_stats(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Local means and (population) variances of every window."""
    mean = _blur(images)
    return mean, _blur(images * images) - mean * mean


def _ssim_maps(
    mean_x: tf.Tensor, var_x: tf.Tensor, mean_y: tf.Tensor, var_y: tf.Tensor, cross: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Luminance and contrast-structure maps from local statistics and ``cross`` = blur(x * y)."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    covariance = cross - mean_x * mean_y
    luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    return luminance, (2 * covariance + c2) / (var_x + var_y + c2)


def _ssim_from_stats(
    mean_x: tf.Tensor, var_x: tf.Tensor, mean_y: tf.Tensor, var_y: tf.Tensor, cross: tf.Tensor
) -> tf.Tensor:
    """Mean SSIM over the last two axes, from local statistics and ``cross`` = blur(x * y)."""
    import tensorflow as tf

    luminance, structure = _ssim_maps(mean_x, var_x, mean_y, var_y, cross)
    return tf.reduce_mean(luminance * structure, axis=[-2, -1])


def pairwise_ssim(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """SSIM ``(M, N)`` of every query to every reference, in vectorised blocks.

    Local means and variances are computed once per image; only blur(x * y) is per pair.
    Same formula and window as :func:`ssim` (the tests check they agree).
    """
    _check_stack(queries, references)
    return _pairwise_ssim_terms(as_float(queries), as_float(references))[1]


def _pairwise_ssim_terms(
    queries: np.ndarray, references: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean contrast-structure and mean SSIM ``(M, N)`` of every float32 query to every reference.

    Passed one stack twice, it fills only the upper triangle (and diagonal): half the work.
    """
    import tensorflow as tf

    pixels = int(np.prod(queries.shape[1:]))
    block = max(1, int(math.isqrt(PAIR_BUDGET // pixels)))
    one_set = queries is references
    structure = np.zeros((len(queries), len(references)), np.float32)
    ssim_ = np.zeros_like(structure)
    for r in range(0, len(references), block):
        ref = tf.constant(references[r : r + block])
        mean_y, var_y = _local_stats(ref)
        for q in range(0, r + 1 if one_set else len(queries), block):
            query = tf.constant(queries[q : q + block])
            mean_x, var_x = _local_stats(query)
            cross = _blur(query[:, None] * ref[None])
            luminance, contrast = _ssim_maps(
                mean_x[:, None], var_x[:, None], mean_y[None], var_y[None], cross
            )
            structure[q : q + block, r : r + block] = tf.reduce_mean(contrast, [-2, -1]).numpy()
            ssim_[q : q + block, r : r + block] = tf.reduce_mean(
                luminance * contrast, [-2, -1]
            ).numpy()
    return structure, ssim_


def candidate_ssim(queries: np.ndarray, references: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """SSIM ``(M, k)`` of each query to its own k references ``references[indices[m]]``.

    As :func:`pairwise_ssim`, local means and variances are computed once per image (each
    reference is a candidate of many queries); only blur(x * y) is per pair.
    """
    import tensorflow as tf

    used, position = np.unique(indices, return_inverse=True)
    position = position.reshape(indices.shape)
    mean_y, var_y = _stats_in_blocks(references[used])
    pixels = int(np.prod(queries.shape[1:]))
    per_block = max(1, PAIR_BUDGET // (pixels * indices.shape[1]))
    out = np.empty(indices.shape, np.float32)
    for q in range(0, len(queries), per_block):
        query = tf.constant(as_float(queries[q : q + per_block]))
        ref = tf.constant(as_float(references[indices[q : q + per_block]]))
        mean_x, var_x = _local_stats(query)
        cross = _blur(query[:, None] * ref)
        rows = position[q : q + per_block]
        out[q : q + per_block] = _ssim_from_stats(
            mean_x[:, None], var_x[:, None], mean_y[rows], var_y[rows], cross
        ).numpy()
    return out


def _stats_in_blocks(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_local_stats` of a stack, ``PAIR_BUDGET`` pixels at a time, as float32 arrays."""
    import tensorflow as tf

    block = max(1, PAIR_BUDGET // int(np.prod(images.shape[1:])))
    means, variances = zip(
        *(
            _local_stats(tf.constant(as_float(images[i : i + block])))
            for i in range(0, len(images), block)
        ),
        strict=True,
    )
    return np.concatenate(means), np.concatenate(variances)


def _check_stack(queries: np.ndarray, references: np.ndarray) -> None:
    if queries.ndim != 3 or references.ndim != 3 or queries.shape[1:] != references.shape[1:]:
        raise DataError(
            f"expected image stacks (N, H, W) of one image size, got {queries.shape} and "
            f"{references.shape}"
        )
    if len(references) == 0:
        raise DataError("nearest-neighbour search needs at least one reference image")


def _pooled(images: np.ndarray) -> np.ndarray:
    """Images average-pooled to at most PREFILTER_SIDE, flattened ``(N, D)`` float32."""
    factor = max(1, min(images.shape[1:]) // PREFILTER_SIDE)
    height, width = (side - side % factor for side in images.shape[1:])
    chunk = max(1, PAIR_BUDGET // (height * width))  # bounds the float32 copy
    pooled = [
        as_float(images[i : i + chunk, :height, :width])
        .reshape(-1, height // factor, factor, width // factor, factor)
        .mean(axis=(2, 4))
        .reshape(-1, (height // factor) * (width // factor))
        for i in range(0, len(images), chunk)
    ]
    return np.concatenate(pooled)


def prefilter(queries: np.ndarray, references: np.ndarray, candidates: int) -> np.ndarray:
    """Indices ``(M, k)`` of each query's ``candidates`` nearest references by pooled L2.

    Squared distances come from one matrix product, ``|x|^2 + |y|^2 - 2 x.y``, per block of
    references (kept as they are, e.g. uint8, until pooled), so memory stays bounded.
    """
    import tensorflow as tf

    query = tf.constant(_pooled(queries))
    query_norm = tf.reduce_sum(query * query, axis=1, keepdims=True)
    block = max(1, 16 * PAIR_BUDGET // int(np.prod(references.shape[1:])))
    best = best_index = None
    for r in range(0, len(references), block):
        ref = tf.constant(_pooled(references[r : r + block]))
        distance = (
            query_norm + tf.reduce_sum(ref * ref, axis=1)[None] - 2 * query @ tf.transpose(ref)
        )
        index = tf.broadcast_to(tf.range(r, r + ref.shape[0])[None], tf.shape(distance))
        if best is not None:  # keep the k best so far beside this block's
            distance = tf.concat([best, distance], axis=1)
            index = tf.concat([best_index, index], axis=1)
        negated, order = tf.math.top_k(-distance, k=min(candidates, int(distance.shape[1])))
        best, best_index = -negated, tf.gather(index, order, batch_dims=1)
    return best_index.numpy()


def nearest_ssim(
    queries: np.ndarray, references: np.ndarray, candidates: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's highest SSIM to any reference and that reference's index, ``(M,)`` each.

    With ``candidates`` = 0 (or at least the number of references) the search is exact: SSIM
    of every pair, computed in vectorised blocks (:func:`pairwise_ssim`). Otherwise it is
    pre-filtered: exact SSIM only to each query's ``candidates`` nearest references by L2
    distance on images average-pooled to at most 64 px (:func:`prefilter`). That can miss
    the SSIM-nearest reference if it is not among the L2-nearest; near-copies (SSIM ~ 1) have
    a tiny L2 distance, so copy detection is not affected in practice.
    ``benchmarks/nearest_neighbours.py`` reports how often the two agree.
    """
    _check_stack(queries, references)
    if len(queries) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    if candidates <= 0 or candidates >= len(references):
        scores = pairwise_ssim(queries, references)
        best = np.argmax(scores, axis=1)
        return scores[np.arange(len(queries)), best], best
    indices = prefilter(queries, references, candidates)
    scores = candidate_ssim(queries, references, indices)
    best = np.argmax(scores, axis=1)
    return scores[np.arange(len(queries)), best], indices[np.arange(len(queries)), best]


# --- latent codes --------------------------------------------------------------------------------


def code_histogram(codes: np.ndarray, num_embeddings: int) -> np.ndarray:
    """How often each of ``num_embeddings`` codes occurs in integer code grids."""
    codes = np.asarray(codes).ravel()
    if codes.size and (codes.min() < 0 or codes.max() >= num_embeddings):
        raise DataError(
            f"codes must lie in [0, {num_embeddings}), got {codes.min()}..{codes.max()}"
        )
    return np.bincount(codes.astype(np.int64), minlength=num_embeddings)


def perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of a code histogram: the effective number of codes in use."""
    probabilities = counts / max(counts.sum(), 1)
    nonzero = probabilities[probabilities > 0]
    return float(np.exp(-np.sum(nonzero * np.log(nonzero))))


def code_kl(
    counts_p: np.ndarray, counts_q: np.ndarray, pseudocount: float = KL_PSEUDOCOUNT
) -> float:
    """KL(P || Q) in nats between two code histograms, each smoothed by ``pseudocount``."""
    if np.shape(counts_p) != np.shape(counts_q):
        raise DataError(f"histograms differ in size: {np.shape(counts_p)} vs {np.shape(counts_q)}")
    p = np.asarray(counts_p, np.float64) + pseudocount
    q = np.asarray(counts_q, np.float64) + pseudocount
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


# --- classifier two-sample test ------------------------------------------------------------------


@dataclass(frozen=True)
class TwoSampleResult:
    """Cross-fitted accuracy of real-vs-generated classifiers (0.5 = indistinguishable)."""

    accuracy: float
    ci_low: float
    ci_high: float
    held_out: int
    """Images (half real, half generated) scored, each by a classifier that never saw it."""
    trained_on: int
    """Images each classifier trains on (the other folds), at most."""
    steps: int
    """Training steps of each classifier: always the number asked for (no time limit)."""
    real_scores: tuple[float, ...]
    """Probability of 'real' for each scored real image, from the classifier that held it out."""
    generated_scores: tuple[float, ...]
    folds: int
    """Classifiers trained, one per fold."""
    real_index: tuple[int, ...] = ()
    """Index into the real images of each of ``real_scores``."""
    generated_index: tuple[int, ...] = ()
    """Index into the generated images of each of ``generated_scores``."""


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % for z = 1.96)."""
    if trials <= 0:
        raise DataError("a confidence interval needs at least one trial")
    share = successes / trials
    denominator = 1 + z**2 / trials
    centre = (share + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def require_images(test: str, needed: int, **counts: int) -> None:
    """Raise DataError if any set has fewer than ``needed`` images, saying how many it needs."""
    short = {name: count for name, count in counts.items() if count < needed}
    if short:
        have = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items())
        raise DataError(
            f"{test}: needs at least {needed} images per set to be meaningful, got {have}; "
            "raise generate.count or use more held-out subjects (evaluate.min_images sets the bar)"
        )


def two_sample_test(
    real: np.ndarray,
    generated: np.ndarray,
    *,
    real_groups: Sequence[Any] | np.ndarray | None = None,
    paired: bool = False,
    folds: int = 4,
    steps: int = 200,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    min_images: int = 2,
) -> TwoSampleResult:
    """Cross-fitted classifier two-sample test (Lopez-Paz & Oquab 2017), small seeded CNNs.

    The real images (at most as many as samples) are dealt into ``folds`` parts by
    ``real_groups`` (e.g. subjects: slices of one subject look alike, so a classifier that saw
    some of them would recognise the others by their subject, not by their realism; without
    groups every image is its own group), and as many samples into parts of the same sizes.
    For every part a fresh CNN (:func:`oasis_vqvae.probes.small_cnn`) trains on the other
    parts, real against samples, for exactly ``steps`` batches, and scores that part. So every
    image is scored once, by a classifier that never saw it nor its subject, and the accuracy
    over all of them is reported with a 95 % Wilson interval (chance is exactly 50 %). The
    CNNs read every pixel (no pooling, see ``every_pixel``): fine texture counts.

    Why folds rather than one split: one classifier trained on half the images is weak and
    its accuracy swings with its seed (demo samples: 0.59 to 0.73 over six seeds); ``folds``
    classifiers trained on ``(folds - 1) / folds`` of the images are stronger and their
    mistakes average out. The interval covers the choice of scored images, not the
    classifiers' seeds.

    ``paired``: ``generated[i]`` is made from ``real[i]`` (e.g. its reconstruction), so every
    part holds the same indices on both sides: no classifier trains on the twin of an image it
    scores, nor on its subject. Raises DataError if a set has fewer than ``min_images`` images
    or there are fewer real groups than folds.
    """
    from oasis_vqvae import probes

    require_images("two-sample test", max(2, min_images), real=len(real), generated=len(generated))
    if paired and len(real) != len(generated):
        raise ValueError(
            f"paired sets differ in size: {len(real)} real, {len(generated)} generated"
        )
    rng = np.random.default_rng(seed)
    real_parts = _folds_by_group(real_groups, len(real), len(generated), folds, rng)
    sizes = [len(part) for part in real_parts]
    if paired:
        generated_parts = real_parts
    else:
        chosen = rng.permutation(len(generated))[: sum(sizes)]
        generated_parts = np.split(chosen, np.cumsum(sizes)[:-1])
    real, generated = as_float(real), as_float(generated)
    heads = (probes.Head("real", "binary"),)
    real_scores, generated_scores = [], []
    for fold in range(folds):
        train_real = np.concatenate(real_parts[:fold] + real_parts[fold + 1 :])
        train_generated = np.concatenate(generated_parts[:fold] + generated_parts[fold + 1 :])
        model = probes.small_cnn(real.shape[1:], heads, seed + fold, every_pixel=True)
        probes.train(
            model, np.concatenate([real[train_real], generated[train_generated]]),
            {"real": np.repeat([1.0, 0.0], [len(train_real), len(train_generated)])}, heads,
            steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed + fold,
        )  # fmt: skip
        test_x = np.concatenate([real[real_parts[fold]], generated[generated_parts[fold]]])
        logits = probes.predict(model, test_x)["real"][:, 0]
        scores = 1.0 / (1.0 + np.exp(-logits))
        real_scores.extend(scores[: sizes[fold]].tolist())
        generated_scores.extend(scores[sizes[fold] :].tolist())
    correct = int(np.sum(np.array(real_scores) > 0.5) + np.sum(np.array(generated_scores) <= 0.5))
    low, high = wilson_interval(correct, 2 * sum(sizes))
    return TwoSampleResult(
        accuracy=correct / (2 * sum(sizes)), ci_low=low, ci_high=high,
        held_out=2 * sum(sizes), trained_on=2 * (sum(sizes) - min(sizes)), steps=steps,
        real_scores=tuple(real_scores), generated_scores=tuple(generated_scores), folds=folds,
        real_index=tuple(np.concatenate(real_parts).tolist()),
        generated_index=tuple(np.concatenate(generated_parts).tolist()),
    )  # fmt: skip


def _groups(groups: Sequence[Any] | np.ndarray | None, count: int) -> np.ndarray:
    return np.arange(count) if groups is None else np.asarray(groups)


def _folds_by_group(
    groups: Sequence[Any] | np.ndarray | None,
    count: int,
    generated: int,
    folds: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Real indices dealt into ``folds`` parts of whole groups, in a seeded order.

    Each group, in a seeded order, joins the part with the fewest images, until the parts
    hold as many images as there are samples (the group that crosses that line is trimmed,
    the groups after it are not used), so no part outweighs the samples it is tested with.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    members = _group_members(_groups(groups, count))
    if len(members) < folds:
        raise DataError(
            f"two-sample test: {len(members)} real subjects cannot fill {folds} folds; "
            f"need at least {folds} held-out subjects (or lower evaluate.c2st.folds)"
        )
    parts: list[list[int]] = [[] for _ in range(folds)]
    room = min(count, generated)
    for group in rng.permutation(len(members)):
        if room == 0:
            break
        taken = members[group][:room].tolist()
        min(parts, key=len).extend(taken)
        room -= len(taken)
    if min(map(len, parts)) == 0:
        raise DataError(
            f"two-sample test: {generated} samples leave a fold empty with {folds} folds; "
            "need more samples (generate.count)"
        )
    return [np.array(part, np.int64) for part in parts]


# --- intervals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95 % interval."""

    value: float
    low: float
    high: float

    def as_metrics(self, key: str) -> dict[str, float]:
        """``{key: value, key_ci_low: low, key_ci_high: high}``."""
        return {key: self.value, f"{key}_ci_low": self.low, f"{key}_ci_high": self.high}


def bootstrap(
    statistic: Any,
    groups: Sequence[Any] | np.ndarray,
    *,
    resamples: int,
    seed: int,
    other_groups: Sequence[Any] | np.ndarray | None = None,
) -> Estimate:
    """Percentile bootstrap (95 %) of ``statistic(index)`` resampling whole groups.

    ``groups`` labels each item (e.g. its subject, so slices of one subject are resampled
    together); ``statistic`` takes an index array into the items and returns a float. With
    ``other_groups`` the statistic compares two sets and takes two index arrays, each
    resampled by its own groups. The value is the statistic on all items.
    """
    rng = np.random.default_rng(seed)
    sides = [np.asarray(groups)] + ([] if other_groups is None else [np.asarray(other_groups)])
    members = [_group_members(side) for side in sides]
    value = float(statistic(*(np.arange(len(side)) for side in sides)))
    draws = np.empty(resamples)
    for r in range(resamples):
        indices = []
        for side, groups_of_side in zip(sides, members, strict=True):
            picked = rng.integers(0, len(groups_of_side), len(groups_of_side))
            if len(groups_of_side) == len(side):  # one item per group: the items themselves
                indices.append(picked)
            else:
                indices.append(np.concatenate([groups_of_side[g] for g in picked]))
        draws[r] = statistic(*indices)
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0:
        return Estimate(value, math.nan, math.nan)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    """Indices of each group's items, groups in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN if one class."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    count_pos, count_neg = int(positive.sum()), int((~positive).sum())
    if count_pos == 0 or count_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2.0)[inverse]  # average 1-based rank of each tie group
    u_statistic = ranks[positive].sum() - count_pos * (count_pos + 1) / 2
    return float(u_statistic / (count_pos * count_neg))


def histogram_share(values: np.ndarray, bins: int) -> np.ndarray:
    """Share of ``values`` in each of ``bins`` equal bins of [0, 1] (values clipped into it)."""
    counts = np.bincount(
        np.clip((np.asarray(values) * bins).astype(np.int64), 0, bins - 1), minlength=bins
    )
    return counts / max(1, counts.sum())


def total_variation(values_p: np.ndarray, values_q: np.ndarray, bins: int) -> float:
    """Total-variation distance of two [0, 1] samples' histograms: half the L1 distance."""
    difference = histogram_share(values_p, bins) - histogram_share(values_q, bins)
    return float(0.5 * np.abs(difference).sum())


# --- coverage of the real distribution -----------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    """Per-item indicators of improved precision / recall and density / coverage.

    Means over the items give the metrics; keeping the items lets intervals resample them
    (precision and density over samples, recall and coverage over real slices).
    """

    precision: np.ndarray
    """(M,) bool: the sample lies inside some real slice's k-NN ball."""
    recall: np.ndarray
    """(N,) bool: the real slice lies inside some sample's k-NN ball."""
    density: np.ndarray
    """(M,) float: real k-NN balls holding the sample, divided by k."""
    coverage: np.ndarray
    """(N,) bool: the real slice's k-NN ball holds at least one sample."""


def coverage_metrics(real: np.ndarray, fake: np.ndarray, k: int) -> Coverage:
    """Precision / recall / density / coverage of ``fake`` ``(M, D)`` vs ``real`` ``(N, D)``.

    Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem
    et al. 2020) in a feature space. A point's k-NN radius is the distance to its k-th nearest
    neighbour in its own set (itself excluded), Euclidean. Both sets need more than ``k`` points.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) <= k or len(fake) <= k:
        raise DataError(
            f"coverage: k-NN radii need more than k = {k} points per set, got {len(real)} real "
            f"and {len(fake)} generated; raise generate.count or lower evaluate.coverage.k"
        )
    real_radius = _knn_radius(real, k)
    fake_radius = _knn_radius(fake, k)
    real_to_fake = _distances(real, fake)  # (N, M)
    inside_real = real_to_fake <= real_radius[:, None]  # sample m in real n's ball
    return Coverage(
        precision=inside_real.any(axis=0),
        recall=(real_to_fake <= fake_radius[None, :]).any(axis=1),
        density=inside_real.sum(axis=0) / k,
        coverage=real_to_fake.min(axis=1) <= real_radius,
    )


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _knn_radius(points: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point of the same set."""
    distances = _distances(points, points)
    np.fill_diagonal(distances, np.inf)
    return np.partition(distances, k - 1, axis=1)[:, k - 1]
