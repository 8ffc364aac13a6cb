"""The fine-detail check on known cases: a set is its own equal, blur and noise move it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from oasis_vqvae import spectra
from oasis_vqvae.data.synthetic import generate_subject_slices
from oasis_vqvae.errors import DataError

SIZE = 64


@pytest.fixture(scope="module")
def real() -> tuple[np.ndarray, np.ndarray]:
    """Slices of 6 synthetic subjects (8 levels each), uint8, and each slice's subject."""
    slices = np.concatenate([generate_subject_slices(5, s, 8, SIZE) for s in range(1, 7)])
    return slices, np.repeat(np.arange(1, 7), 8)


def _blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(image.astype(np.float32), sigma) for image in images])


def test_a_sinusoid_has_its_power_at_its_radius():
    y, x = np.indices((SIZE, SIZE))
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (5 * y + 12 * x) / SIZE)  # radius sqrt(169) = 13
    profile = spectra.radial_power(wave[None].astype(np.float32))[0]
    assert profile.shape == (SIZE // 2,)
    assert int(np.argmax(profile)) + 1 == 13
    assert profile[12] > 1000 * np.delete(profile, 12).max()


def test_a_set_against_itself_is_exactly_one(real):
    slices, subjects = real
    report = spectra.detail_values(slices, subjects, slices, slices, resamples=50, seed=0)
    for key in ("fine_detail_samples", "fine_detail_reconstructions"):
        assert report.values[key] == pytest.approx(1.0), key
    # Reconstructions are resampled with their slices: no spread at all.
    assert report.values["fine_detail_reconstructions_ci_low"] == pytest.approx(1.0)
    assert report.values["fine_detail_reconstructions_ci_high"] == pytest.approx(1.0)


def test_blur_lowers_and_noise_raises_the_fine_detail(real):
    slices, subjects = real
    blurred = np.clip(np.rint(_blurred(slices, 1.0)), 0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).normal(0, 25, slices.shape)
    noisy = np.clip(np.rint(slices + noise), 0, 255).astype(np.uint8)
    report = spectra.detail_values(slices, subjects, blurred, noisy, resamples=200, seed=0)
    values = report.values
    assert values["fine_detail_reconstructions_ci_high"] < 0.5  # a 1-px blur removes most of it
    assert values["fine_detail_samples_ci_low"] > 1.2
    for key in ("fine_detail_samples", "fine_detail_reconstructions"):
        assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], key
    assert set(report.spectra) == {"real", "reconstructions", "samples"}
    assert report.spectra["reconstructions"][-1] < report.spectra["real"][-1]


def test_other_subjects_keep_about_as_much_detail(real):
    slices, subjects = real
    others = np.concatenate([generate_subject_slices(5, s, 8, SIZE) for s in range(7, 13)])
    report = spectra.detail_values(slices, subjects, slices, others, resamples=200, seed=0)
    values = report.values
    assert 0.8 < values["fine_detail_samples"] < 1.25
    assert values["fine_detail_samples_ci_low"] < 1.0 < values["fine_detail_samples_ci_high"]


def test_sets_of_different_sizes_are_an_error(real):
    slices, subjects = real
    with pytest.raises(DataError, match="one size"):
        spectra.detail_values(slices, subjects, slices, slices[:, :32, :32], resamples=10, seed=0)
    with pytest.raises(DataError, match="square images"):
        spectra.radial_power(np.zeros((2, 16, 8), np.float32))


def test_chunks_give_the_same_spectra_as_one_image_at_a_time():
    images = np.random.default_rng(1).integers(0, 256, (2 * spectra.CHUNK + 5, 16, 16), np.uint8)
    together = spectra.radial_power(images)
    alone = np.concatenate([spectra.radial_power(image[None]) for image in images])
    np.testing.assert_allclose(together, alone, rtol=1e-12)
