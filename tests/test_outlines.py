"""The broken-head check on known cases: whole heads pass, each kind of break is caught."""

from __future__ import annotations

import numpy as np
import pytest

from oasis_vqvae import outlines
from oasis_vqvae.data.synthetic import generate_subject_slices
from oasis_vqvae.errors import DataError

SIZE = 64


def _slices(subjects: range) -> np.ndarray:
    return np.concatenate([generate_subject_slices(5, s, 8, SIZE) for s in subjects])


@pytest.fixture(scope="module")
def bands() -> outlines.OutlineBands:
    """Bands of 12 synthetic subjects' slices (8 levels each) at the default tolerance."""
    return outlines.OutlineBands.fit(outlines.outline_features(_slices(range(1, 13))), 0.03)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """Slices of 4 other subjects, uint8 (32, 64, 64)."""
    return _slices(range(13, 17))


def _ellipse(rows: float, cols: float) -> np.ndarray:
    y, x = np.indices((SIZE, SIZE)) - (SIZE - 1) / 2
    return ((y / rows) ** 2 + (x / cols) ** 2 <= 1).astype(np.float32)


def test_an_ellipse_fits_itself_and_a_square_does_not():
    ellipse = outlines.outline_features(_ellipse(25, 18)[None])[0]
    square = np.zeros((SIZE, SIZE), np.float32)
    square[12:52, 12:52] = 1.0
    boxed = outlines.outline_features(square[None])[0]
    assert ellipse == pytest.approx([1.0, 1.0, 0.0, np.pi * 25 * 18 / SIZE**2], abs=0.02)
    assert boxed[1] < 0.95  # the square's moment ellipse (a circle) leaves its corners out


def test_holes_inside_the_head_do_not_count():
    ring = _ellipse(25, 18) - _ellipse(10, 6)  # dark ventricles inside the head
    assert outlines.outline_features(ring[None])[0] == pytest.approx(
        outlines.outline_features(_ellipse(25, 18)[None])[0]
    )


def test_real_slices_are_whole_against_their_own_bands_and_other_subjects(bands, held_out):
    train = outlines.outline_features(_slices(range(1, 13)))
    assert not outlines.OutlineBands.fit(train, 0.0).broken(train).any()  # a set against itself
    assert not bands.broken(outlines.outline_features(held_out)).any()


def _broken_variants(slice_: np.ndarray) -> dict[str, np.ndarray]:
    """One real slice broken four ways, each as a sample could break."""
    head = outlines.outline_features(slice_[None])
    rows, cols = np.nonzero(slice_ > outlines.FOREGROUND * 255)
    squared = slice_.copy()  # the head's upper-right quarter filled out to its bounding box
    squared[rows.min() : (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2 :][
        :, : cols.max() - (cols.min() + cols.max()) // 2
    ] = 200
    fragment = slice_.copy()
    fragment[1:11, 1:11] = 200  # a blob in the corner, apart from the head
    spill = slice_.copy()
    spill[SIZE // 2 - 20 : SIZE // 2 + 20, cols.max() :] = 150  # a blotch out to the frame's edge
    assert head[0, 0] == 1.0
    return {
        "shape": squared,
        "fragments": fragment,
        "spill": spill,
        "size": np.zeros_like(slice_),  # no head at all
    }


def test_each_kind_of_break_is_caught_and_named(bands, held_out):
    variants = _broken_variants(held_out[len(held_out) // 2])  # a mid-level slice
    features = outlines.outline_features(np.stack(list(variants.values())))
    assert bands.broken(features).all()
    for reason, expected in zip(bands.reasons(features), variants, strict=True):
        assert expected in reason.split(", "), (expected, reason)


def test_broken_values_count_broken_samples_with_intervals(bands, held_out):
    whole = outlines.outline_features(held_out)
    broken = outlines.outline_features(np.stack(list(_broken_variants(held_out[3]).values())))
    samples = np.concatenate([whole, broken])  # 4 broken of 36
    subjects = np.repeat(np.arange(4), 8)
    values = outlines.broken_values(bands, whole, subjects, samples, resamples=200, seed=0)
    assert values["broken_share"] == pytest.approx(4 / 36)
    assert values["broken_share_ci_low"] < 4 / 36 < values["broken_share_ci_high"]
    assert values["broken_share_real"] == values["broken_share_real_ci_high"] == 0.0
    none = outlines.broken_values(bands, whole, subjects, whole, resamples=200, seed=0)
    assert none["broken_share"] == 0.0 < none["broken_share_ci_high"]  # Wilson: never empty


def test_bands_need_real_slices():
    with pytest.raises(DataError, match="at least one real slice"):
        outlines.OutlineBands.fit(np.zeros((0, len(outlines.FEATURES))), 0.03)
