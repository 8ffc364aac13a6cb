"""Broken heads: does each image show one head whose outline a real slice could have.

The two-sample tests and coverage summarise realism; they do not count the samples an eye
rejects at once: a head squared off at a corner, a blotch spilling to the frame's edge, a
fragment. This check counts them. An image's head is its foreground (intensity above
:data:`FOREGROUND`, holes filled), described by four shares (:data:`FEATURES`):

- ``largest_share``: the largest connected piece's share of the foreground (fragments);
- ``ellipse_overlap``: intersection over union of that piece with the ellipse of the same
  second moments (squared-off, dented or bulging heads);
- ``border_share``: the share of the frame's edge pixels inside the foreground (heads and
  blotches spilling out of the frame);
- ``area_share``: the foreground's share of the image (oversized or shrunken heads).

The band of each share spans the real training slices, widened by a tolerance on each side
(all four are shares, so one tolerance in the same units); an image outside any band is
broken. Real held-out slices go through the same bands: their broken share is the check's
false-alarm rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from oasis_vqvae import metrics
from oasis_vqvae.errors import DataError

FOREGROUND = 0.1
"""Intensity in [0, 1] above which a pixel belongs to the head (OASIS backgrounds are black)."""
FEATURES = ("largest_share", "ellipse_overlap", "border_share", "area_share")
FLAWS = ("fragments", "shape", "spill", "size")
"""What a feature outside its band means, in the order of :data:`FEATURES` (figure labels)."""
ELLIPSE_RADIUS_SQUARED = 4.0
"""A uniform ellipse with covariance C is {x: (x - m)' C^-1 (x - m) <= 4}."""


def outline_features(images: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of each image ``(N, H, W)`` (uint8 or [0, 1]), ``(N, 4)``.

    One image at a time: a large uint8 training split is never copied whole as floats.
    """
    return np.array([_features(metrics.as_float(image)) for image in images], np.float64)


def _features(image: np.ndarray) -> tuple[float, float, float, float]:
    head = ndimage.binary_fill_holes(image > FOREGROUND)
    pieces, count = ndimage.label(head)
    if count == 0:
        return 0.0, 0.0, 0.0, 0.0
    sizes = np.bincount(pieces.ravel())[1:]
    largest = pieces == np.argmax(sizes) + 1
    edge = np.concatenate([head[0], head[-1], head[1:-1, 0], head[1:-1, -1]])
    return (
        float(sizes.max() / sizes.sum()),
        _ellipse_overlap(largest),
        float(edge.mean()),
        float(head.mean()),
    )


def _ellipse_overlap(mask: np.ndarray) -> float:
    """IoU of ``mask`` with the ellipse of its own mean and covariance (1: an ellipse)."""
    points = np.argwhere(mask).astype(np.float64)
    if len(points) < 3:
        return 0.0
    covariance = np.cov(points, rowvar=False)
    if np.linalg.det(covariance) <= 1e-9:  # a line of pixels: no ellipse
        return 0.0
    rows, cols = np.indices(mask.shape, dtype=np.float64)
    offset = np.stack([rows, cols], axis=-1) - points.mean(axis=0)
    distance = np.einsum("...i,ij,...j->...", offset, np.linalg.inv(covariance), offset)
    ellipse = distance <= ELLIPSE_RADIUS_SQUARED
    return float((ellipse & mask).sum() / (ellipse | mask).sum())


@dataclass(frozen=True)
class OutlineBands:
    """Per feature, the interval a real head's share falls in."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, real_features: np.ndarray, tolerance: float) -> OutlineBands:
        """The range of ``real_features`` widened by ``tolerance`` on each side."""
        if len(real_features) == 0:
            raise DataError("outline bands need at least one real slice")
        return cls(real_features.min(axis=0) - tolerance, real_features.max(axis=0) + tolerance)

    def excess(self, features: np.ndarray) -> np.ndarray:
        """How far each feature lies outside its band ``(N, 4)``: > 0 outside, <= 0 inside."""
        return np.maximum(self.low - features, features - self.high)

    def broken(self, features: np.ndarray) -> np.ndarray:
        """Whether each image lies outside any band ``(N,)``."""
        return (self.excess(features) > 0).any(axis=1)

    def reasons(self, features: np.ndarray) -> list[str]:
        """Per image, its :data:`FLAWS` (``""`` when whole), for figure labels."""
        outside = self.excess(features) > 0
        return [
            ", ".join(flaw for flaw, out in zip(FLAWS, row, strict=True) if out) for row in outside
        ]


def broken_values(
    bands: OutlineBands,
    held_features: np.ndarray,
    held_groups: np.ndarray,
    sample_features: np.ndarray,
    resamples: int,
    seed: int,
) -> dict[str, float]:
    """Broken shares of samples and of real held-out slices, with 95 % intervals.

    Samples are independent draws: a Wilson interval (not empty when none is broken). Real
    slices of one subject are not: a bootstrap over subjects (``held_groups``).
    """
    broken = bands.broken(sample_features)
    low, high = metrics.wilson_interval(int(broken.sum()), len(broken))
    real_broken = bands.broken(held_features)
    real = metrics.bootstrap(
        lambda index: float(np.mean(real_broken[index])), held_groups,
        resamples=resamples, seed=seed,
    )  # fmt: skip
    return {
        **metrics.Estimate(float(broken.mean()), low, high).as_metrics("broken_share"),
        **real.as_metrics("broken_share_real"),
    }
