"""What the probe says about samples: coverage, slice-level distribution, condition fidelity.

The probe (:mod:`oasis_vqvae.probes`) is trained on real training slices only. Here it reads
real held-out slices (validate + test: the generative models never trained on them) and the
samples, and the results become flat metrics with 95 % bootstrap intervals. Real slices are
resampled by subject (slices of one subject are not independent); samples one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oasis_vqvae import metrics
from oasis_vqvae.data.conditions import SLICE_LEVEL
from oasis_vqvae.errors import DataError
from oasis_vqvae.metrics import Estimate
from oasis_vqvae.probes import Head, Probe, encode_targets


@dataclass(frozen=True)
class Fidelity:
    """One condition's probe score on real test slices, samples and shuffled samples.

    ``reconstructions``: on the VQ-VAE's reconstructions of those real test slices, against
    their true conditions: the best a perfect prior could reach through this decoder, so the
    gap between it and ``samples`` is the prior's alone.
    """

    condition: str
    metric: str
    """'mae' (continuous), 'accuracy' or 'auc' (categorical)."""
    key: str
    """Metric key prefix, e.g. ``condition_cdr_auc`` or ``slice_level_mae``."""
    real: Estimate | None
    reconstructions: Estimate | None
    samples: Estimate | None
    shuffled: Estimate | None


SIDES = ("real", "reconstructions", "samples", "shuffled")
"""The scored sets of a :class:`Fidelity` row, in the report's column order."""


@dataclass
class ProbeReport:
    """Metrics and the arrays the figures need."""

    values: dict[str, float] = field(default_factory=dict)
    held_levels: np.ndarray | None = None
    """Predicted slice level of each real held-out slice."""
    sample_levels: np.ndarray | None = None
    """Predicted slice level of each sample."""
    fidelity: list[Fidelity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why a metric is absent (no labels.csv, a condition the probe could not learn...)."""


def coverage_values(
    real: np.ndarray, real_groups: np.ndarray, fake: np.ndarray, k: int, resamples: int, seed: int
) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` vs ``real`` features with intervals.

    Intervals resample the items each metric averages over (samples for precision and
    density, real subjects for recall and coverage) with the other set's k-NN balls fixed.
    """
    found = metrics.coverage_metrics(real, fake, k)
    fake_groups = np.arange(len(fake))
    values: dict[str, float] = {}
    for name, items, groups in (
        ("precision", found.precision, fake_groups),
        ("recall", found.recall, real_groups),
        ("density", found.density, fake_groups),
        ("coverage", found.coverage, real_groups),
    ):
        estimate = metrics.bootstrap(
            lambda index, items=items: float(np.mean(items[index])),
            groups, resamples=resamples, seed=seed,
        )  # fmt: skip
        values |= estimate.as_metrics(name)
    return values


def level_distance(
    held: np.ndarray, held_groups: np.ndarray, samples: np.ndarray, bins: int, resamples: int,
    seed: int,
) -> Estimate:  # fmt: skip
    """Total variation of the predicted-level histograms, real held-out vs samples."""
    return metrics.bootstrap(
        lambda i, j: metrics.total_variation(held[i], samples[j], bins),
        held_groups, other_groups=np.arange(len(samples)), resamples=resamples, seed=seed,
    )  # fmt: skip


def scores(head: Head, predicted: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Per metric of ``head``: a function of an index array scoring predictions vs targets.

    ``targets`` are encoded (:func:`oasis_vqvae.probes.encode_targets`); unknown ones are
    dropped before scoring.
    """
    if head.kind == "continuous":
        known = np.flatnonzero(np.isfinite(targets))
        return {"mae": (known, lambda i: float(np.mean(np.abs(predicted[i] - targets[i]))))}
    known = np.flatnonzero(targets >= 0)
    found = {"accuracy": (known, lambda i: float(np.mean(predicted[i].argmax(1) == targets[i])))}
    if len(head.values) == 2 or all(_numeric(v) for v in head.values):
        # P(not the lowest value): for cdr, the binary CDR > 0 (dementia at all) AUC.
        found["auc"] = (known, lambda i: metrics.auc(1.0 - predicted[i, 0], targets[i] > 0))
    return found


def condition_fidelity(
    probe: Probe,
    test_predictions: dict[str, np.ndarray],
    test_conditions: Any,
    sample_predictions: dict[str, np.ndarray],
    labels: Any,
    reconstruction_predictions: dict[str, np.ndarray],
    *,
    resamples: int,
    seed: int,
) -> tuple[list[Fidelity], list[str]]:
    """Probe scores per condition in ``labels`` (the samples' requested conditions).

    Real: the probe on real test slices against their own conditions (the ceiling; intervals
    over subjects). Reconstructions (predictions on the VQ-VAE's reconstructions of the same
    test slices): against those same conditions. Samples: on the samples against
    what was requested. Shuffled: against the requested conditions permuted among the
    samples (seeded; the floor).
    """
    heads = {head.name: head for head in probe.heads}
    rows, notes = [], []
    rng = np.random.default_rng(seed)
    subjects = np.asarray(test_conditions["subject"])
    for name in [c for c in labels.columns if c != "file"]:
        if name not in heads:
            notes.append(
                f"{name}: the real training slices have fewer than two distinct known values, so "
                "no probe could learn it; its fidelity is not measured"
            )
            continue
        head = heads[name]
        requested = encode_targets(head, labels[name], "labels.csv")
        shuffled = requested[rng.permutation(len(requested))]
        real_targets = encode_targets(head, test_conditions[name], "test conditions")
        real_scores = scores(head, test_predictions[name], real_targets)
        recon_scores = scores(head, reconstruction_predictions[name], real_targets)
        sample_scores = scores(head, sample_predictions[name], requested)
        shuffled_scores = scores(head, sample_predictions[name], shuffled)
        for metric in real_scores:
            key = f"{name}_{metric}" if name == SLICE_LEVEL else f"condition_{name}_{metric}"
            rows.append(
                Fidelity(
                    name, metric, key,
                    _estimate(real_scores[metric], subjects, resamples, seed),
                    _estimate(recon_scores[metric], subjects, resamples, seed),
                    _estimate(sample_scores[metric], None, resamples, seed),
                    _estimate(shuffled_scores[metric], None, resamples, seed),
                )
            )  # fmt: skip
    return rows, notes


def fidelity_values(rows: list[Fidelity]) -> dict[str, float]:
    """``KEY_SIDE`` with ``_ci_low`` / ``_ci_high`` for every row and every side in `SIDES`."""
    values: dict[str, float] = {}
    for row in rows:
        for side in SIDES:
            estimate = getattr(row, side)
            if estimate is not None:
                values |= estimate.as_metrics(f"{row.key}_{side}")
    return values


def level_ceiling(
    probe: Probe, predictions: dict[str, np.ndarray], conditions: Any, resamples: int, seed: int
) -> Estimate | None:
    """MAE of the probe's slice level on real test slices, interval over subjects."""
    head = next((h for h in probe.heads if h.name == SLICE_LEVEL), None)
    if head is None:
        return None
    targets = encode_targets(head, conditions[SLICE_LEVEL], "test conditions")
    known, score = scores(head, predictions[SLICE_LEVEL], targets)["mae"]
    return _estimate((known, score), np.asarray(conditions["subject"]), resamples, seed)


def _estimate(
    scored: tuple[np.ndarray, Any], groups: np.ndarray | None, resamples: int, seed: int
) -> Estimate | None:
    """Bootstrap ``score`` over the known items ``known`` (by ``groups``, or one by one)."""
    known, score = scored
    if len(known) < 2:
        return None
    item_groups = np.arange(len(known)) if groups is None else groups[known]
    estimate = metrics.bootstrap(
        lambda i: score(known[i]), item_groups, resamples=resamples, seed=seed
    )
    return estimate if np.isfinite(estimate.value) else None


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_labels(labels: Any, names: list[str], origin: str) -> None:
    """Raise DataError if ``labels`` names a condition the real dataset does not have."""
    unknown = [c for c in labels.columns if c != "file" and c not in names]
    if unknown:
        raise DataError(
            f"{origin}: column {unknown[0]!r} is not a condition of the real dataset; "
            f"it has {sorted(names)}"
        )
