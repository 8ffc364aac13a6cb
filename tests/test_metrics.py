"""Metric functions on known cases: SSIM against scikit-image, copies, code KL, the C2ST."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from oasis_vqvae import metrics
from oasis_vqvae.data.synthetic import generate_subject_slices
from oasis_vqvae.errors import DataError


@pytest.fixture(scope="module")
def slices() -> np.ndarray:
    """48 synthetic brain slices of 32 px from 4 subjects, uint8 (48, 32, 32)."""
    return np.concatenate([generate_subject_slices(3, s, 12, 32) for s in range(1, 5)])


@pytest.fixture(scope="module")
def pairs(slices) -> tuple[np.ndarray, np.ndarray]:
    """Slices and noisy, shifted versions of them, float32 in [0, 1]."""
    rng = np.random.default_rng(0)
    images = metrics.as_float(slices[:12])
    noisy = np.clip(np.roll(images, 1, axis=2) + rng.normal(0, 0.05, images.shape), 0, 1)
    return images, noisy.astype(np.float32)


def test_identical_images_have_ssim_and_ms_ssim_one(slices):
    images = slices[:6]
    assert np.allclose(metrics.ssim(images, images), 1.0, atol=1e-6)
    assert np.allclose(metrics.ms_ssim(images, images), 1.0, atol=1e-6)
    assert np.allclose(metrics.pairwise_ssim(images, images).diagonal(), 1.0, atol=1e-5)


def test_ssim_agrees_with_scikit_image(pairs):
    images, noisy = pairs
    ours = metrics.ssim(images, noisy)
    reference = [
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        for a, b in zip(images, noisy, strict=True)
    ]
    assert 0.2 < ours.min() < ours.max() < 0.99  # a spread of real values, not a degenerate case
    assert np.max(np.abs(ours - reference)) < 1e-3


def test_vectorised_search_matches_per_pair_ssim(pairs, slices):
    images, noisy = pairs
    matrix = metrics.pairwise_ssim(images, noisy)
    for i in range(len(images)):
        column = metrics.ssim(np.repeat(images[i : i + 1], len(noisy), axis=0), noisy)
        assert np.allclose(matrix[i], column, atol=1e-5)
    # uint8 references are scaled the same way as float ones
    assert np.allclose(
        metrics.pairwise_ssim(slices[:3], slices[3:9]),
        metrics.pairwise_ssim(metrics.as_float(slices[:3]), metrics.as_float(slices[3:9])),
    )


def test_nearest_finds_the_best_pair_exactly_and_prefiltered(pairs):
    images, _ = pairs
    noise = np.random.default_rng(3).normal(0, 0.02, images.shape)
    queries = np.clip(images + noise, 0, 1).astype(np.float32)
    exact, index = metrics.nearest_ssim(queries, images)
    matrix = metrics.pairwise_ssim(queries, images)
    assert np.array_equal(index, matrix.argmax(axis=1))
    assert np.allclose(exact, matrix.max(axis=1))
    assert np.array_equal(index, np.arange(len(images)))  # each query's own original
    prefiltered, pre_index = metrics.nearest_ssim(queries, images, candidates=3)
    assert np.array_equal(pre_index, index)
    assert np.allclose(prefiltered, exact, atol=1e-5)


def test_candidate_ssim_is_the_pairwise_ssim_of_each_candidate(pairs, monkeypatch):
    images, noisy = pairs
    indices = np.random.default_rng(1).integers(0, len(noisy), (len(images), 4))  # repeats too
    monkeypatch.setattr(metrics, "PAIR_BUDGET", 5 * 4 * 32 * 32)  # blocks of 5 queries: 3 blocks
    scores = metrics.candidate_ssim(images, noisy, indices)
    expected = np.take_along_axis(metrics.pairwise_ssim(images, noisy), indices, axis=1)
    assert expected.max() - expected.min() > 0.2  # a spread of values, not one repeated
    assert np.allclose(scores, expected, atol=1e-5)


def test_copied_training_slice_is_flagged_as_a_copy(slices):
    train, other_subject = slices[:36], slices[36:]
    samples = np.stack([train[7], other_subject[5], np.flipud(train[20])])
    best, index = metrics.nearest_ssim(samples, train)
    assert index[0] == 7 and best[0] == pytest.approx(1.0, abs=1e-5)
    copies = best >= 0.95
    assert copies.tolist() == [True, False, False]


def test_ms_ssim_scales_follow_the_image_size():
    assert metrics.ms_ssim_scales(256) == 5
    assert metrics.ms_ssim_scales(161) == 5
    assert metrics.ms_ssim_scales(160) == 4
    assert metrics.ms_ssim_scales(64) == 3
    assert metrics.ms_ssim_scales(32) == 2
    assert metrics.ms_ssim_scales(16) == 1
    assert sum(metrics.ms_ssim_power_factors(64)) == pytest.approx(1.0)
    with pytest.raises(DataError, match="11 px"):
        metrics.ms_ssim_scales(8)


def test_diversity_is_lower_for_varied_images(slices):
    varied = metrics.mean_pairwise_ms_ssim(slices, max_images=48)
    same = metrics.mean_pairwise_ms_ssim(np.repeat(slices[:1], 5, axis=0), max_images=48)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert varied < 0.9


@pytest.mark.parametrize("shape", [(64, 64), (45, 52)])  # (45, 52): odd sides are padded
def test_pairwise_diversity_is_the_mean_of_tensorflows_ms_ssim_over_the_pairs(shape):
    rng = np.random.default_rng(0)
    images = rng.random((3, *shape)).astype(np.float32)
    images = np.concatenate([images, np.clip(0.7 * images + 0.2 * rng.random(images.shape), 0, 1)])
    first, second = np.triu_indices(len(images), k=1)
    expected = metrics.ms_ssim(images[first], images[second]).mean()
    assert metrics.mean_pairwise_ms_ssim(images, max_images=6) == pytest.approx(expected, abs=1e-5)


def test_psnr_and_mse_of_a_known_difference():
    images = np.zeros((2, 16, 16), np.float32)
    others = np.full((2, 16, 16), 0.1, np.float32)
    mse = metrics.mse(images, others)
    assert np.allclose(mse, 0.01)
    assert np.allclose(metrics.psnr(mse), 20.0)


def test_code_kl_is_zero_for_equal_histograms_and_positive_otherwise():
    codes = np.array([[0, 1], [1, 3]])
    counts = metrics.code_histogram(codes, 5)
    assert counts.tolist() == [1, 2, 0, 1, 0]
    assert metrics.code_kl(counts, counts) == 0.0
    assert metrics.code_kl(counts, np.array([0, 0, 4, 0, 4])) > 0.5
    with pytest.raises(DataError, match="lie in"):
        metrics.code_histogram(codes, 3)


def test_wilson_interval_brackets_the_share():
    low, high = metrics.wilson_interval(50, 100)
    assert low < 0.5 < high and high - low == pytest.approx(0.192, abs=0.01)
    assert metrics.wilson_interval(10, 10)[1] == 1.0


def test_two_sample_test_is_at_chance_on_two_halves_of_the_same_data(slices):
    order = np.random.default_rng(1).permutation(len(slices))
    result = metrics.two_sample_test(
        slices[order[:24]], slices[order[24:]], steps=100, batch_size=8, seed=0
    )
    # Every image scored once (4 folds of 6 + 6), each classifier trained on the other 3 folds.
    assert result.held_out == 48 and result.trained_on == 36 and result.folds == 4
    assert sorted(result.real_index) == sorted(result.generated_index) == list(range(24))
    assert 0.25 <= result.accuracy <= 0.75
    assert result.ci_low <= 0.5 <= result.ci_high


def test_two_sample_test_tells_slices_from_noise(slices):
    noise = np.random.default_rng(2).integers(0, 256, slices.shape, dtype=np.uint8)
    result = metrics.two_sample_test(slices, noise, steps=100, batch_size=8, seed=0)
    assert result.accuracy >= 0.95 and result.ci_low > 0.5
    assert len(result.real_scores) == len(result.generated_scores) == 48


def test_two_sample_test_sees_texture_that_pooling_to_64_px_averages_away():
    # 128-px images of flat 2x2 blocks, and the same kind with a +-40 checkerboard on top:
    # average-pooled to 64 px (as the probe reads images) the two kinds are the same images.
    rng = np.random.default_rng(0)

    def blocks(count: int) -> np.ndarray:
        return rng.integers(60, 196, (count, 64, 64)).repeat(2, axis=1).repeat(2, axis=2)

    checker = (np.indices((128, 128)).sum(axis=0) % 2) * 80 - 40
    flat, textured = blocks(48), blocks(48)
    pooled = textured.reshape(48, 64, 2, 64, 2).mean(axis=(2, 4))
    assert np.array_equal((textured + checker).reshape(48, 64, 2, 64, 2).mean(axis=(2, 4)), pooled)
    result = metrics.two_sample_test(
        flat.astype(np.uint8), (textured + checker).astype(np.uint8), steps=100, batch_size=16
    )
    assert result.accuracy >= 0.9 and result.ci_low > 0.5


def test_paired_two_sample_test_of_a_set_against_itself_is_exactly_at_chance(slices):
    # Twins share a fold, so one classifier gives both the same score: one of them is right.
    subjects = np.repeat(np.arange(4), 12)
    result = metrics.two_sample_test(
        slices, slices.copy(), real_groups=subjects, paired=True, steps=20, batch_size=8
    )
    assert result.real_index == result.generated_index
    assert result.accuracy == 0.5 and result.held_out == 96


def test_paired_two_sample_test_tells_slices_from_their_noisy_twins(slices):
    noise = np.random.default_rng(3).normal(0, 20, slices.shape)
    noisy = np.clip(slices + noise, 0, 255).astype(np.uint8)
    subjects = np.repeat(np.arange(4), 12)
    result = metrics.two_sample_test(
        slices, noisy, real_groups=subjects, paired=True, steps=100, batch_size=8
    )
    assert result.accuracy >= 0.9 and result.ci_low > 0.5


def test_paired_two_sample_test_needs_twins(slices):
    with pytest.raises(ValueError, match="paired sets differ in size: 48 real, 47 generated"):
        metrics.two_sample_test(slices, slices[:47], paired=True)


def test_two_sample_folds_are_whole_subjects_of_equal_size():
    subjects = np.repeat(np.arange(10), 5)  # 10 subjects x 5 slices
    rng = np.random.default_rng(0)
    parts = metrics._folds_by_group(subjects, len(subjects), 40, 4, rng)
    scored = np.concatenate(parts)
    assert len(scored) == 40 and len(set(scored.tolist())) == 40  # as many as samples, once each
    assert max(map(len, parts)) - min(map(len, parts)) <= 5  # at most one subject apart
    owners = [set(subjects[part].tolist()) for part in parts]
    # No subject in two folds: the classifier scoring a fold never trained on its subjects.
    assert sum(map(len, owners)) == len(set().union(*owners))


def test_two_sample_test_needs_a_subject_per_fold(slices):
    subjects = np.repeat(np.arange(4), 12)
    with pytest.raises(DataError, match="4 real subjects cannot fill 5 folds"):
        metrics.two_sample_test(slices, slices, real_groups=subjects, folds=5)


def test_two_sample_test_needs_images_on_both_sides(slices):
    with pytest.raises(DataError, match="two-sample test"):
        metrics.two_sample_test(slices[:1], slices[1:2])
