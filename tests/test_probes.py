"""The evaluation's probes and sample tests on known cases: coverage, intervals, AUC, levels."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from oasis_vqvae import fidelity, metrics, probes
from oasis_vqvae.data.synthetic import generate_subject_slices
from oasis_vqvae.errors import DataError
from oasis_vqvae.stages.common import seed_everything

SUBJECTS, SLICES, SIZE = 8, 12, 32


@pytest.fixture(scope="module")
def stacks() -> tuple[np.ndarray, pd.DataFrame]:
    """96 synthetic slices of 32 px (8 subjects x 12 levels) and their conditions table."""
    images = np.concatenate(
        [generate_subject_slices(3, s, SLICES, SIZE) for s in range(1, SUBJECTS + 1)]
    )
    conditions = pd.DataFrame(
        {
            "subject": np.repeat([f"s{s}" for s in range(SUBJECTS)], SLICES),
            "slice": np.tile(np.arange(SLICES), SUBJECTS),
            "slice_level": np.tile(np.linspace(0, 1, SLICES), SUBJECTS),
            # A subject attribute the images show: even subjects are darkened.
            "group": np.repeat(["a", "b"] * (SUBJECTS // 2), SLICES),
        }
    )
    images[conditions["group"].to_numpy() == "b"] //= 2
    return images, conditions


SPECS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "group": {"kind": "categorical", "values": ["a", "b"]},
    "unknown": {"kind": "continuous", "range": [0.0, 1.0]},  # no subject has it: no head
}


@pytest.fixture(scope="module")
def probe(stacks) -> probes.Probe:
    images, conditions = stacks
    seed_everything(0)
    train = conditions["subject"].isin([f"s{s}" for s in range(6)]).to_numpy()
    table = conditions[train].assign(unknown=None)
    return probes.train_probe(
        images[train], table, SPECS, steps=150, batch_size=16, learning_rate=3e-3, seed=0
    )


# --- coverage ------------------------------------------------------------------------------------


def _clusters(rng: np.random.Generator, centres: list[int], per: int) -> np.ndarray:
    return np.concatenate([rng.normal(10.0 * c, 1.0, (per, 8)) for c in centres])


def test_a_set_against_itself_has_full_coverage():
    points = _clusters(np.random.default_rng(0), [0, 1, 2, 3], 40)
    found = metrics.coverage_metrics(points, points, k=5)
    for name in ("precision", "recall", "coverage"):
        assert getattr(found, name).mean() == 1.0, name
    assert found.density.mean() >= 1.0  # each point sits in its own 5 neighbours' balls


def test_dropping_a_mode_lowers_recall_and_coverage_not_precision():
    rng = np.random.default_rng(1)
    real = _clusters(rng, [0, 1, 2, 3], 50)
    same = _clusters(rng, [0, 1, 2, 3], 50)
    dropped = _clusters(rng, [0, 1, 2], 67)  # as many points, one mode missing
    full, partial = (metrics.coverage_metrics(real, fake, k=5) for fake in (same, dropped))
    assert full.recall.mean() >= 0.9 and full.coverage.mean() >= 0.9
    assert partial.recall.mean() <= 0.8 and partial.coverage.mean() <= 0.78
    assert partial.precision.mean() >= 0.9  # what is drawn is still realistic


def test_coverage_needs_more_points_than_k():
    points = np.zeros((5, 3))
    with pytest.raises(DataError, match="more than k = 5 points"):
        metrics.coverage_metrics(points, np.ones((20, 3)), k=5)


# --- intervals, AUC, total variation -------------------------------------------------------------


def test_bootstrap_brackets_the_mean_and_groups_widen_it():
    rng = np.random.default_rng(2)
    # 10 subjects x 20 slices: a subject effect makes slices of one subject alike.
    values = np.repeat(rng.normal(0, 1, 10), 20) + rng.normal(0, 0.1, 200)
    subjects = np.repeat(np.arange(10), 20)

    def mean(i):
        return float(values[i].mean())

    by_subject = metrics.bootstrap(mean, subjects, resamples=500, seed=0)
    by_slice = metrics.bootstrap(mean, np.arange(200), resamples=500, seed=0)
    assert by_subject.low < values.mean() < by_subject.high
    assert by_subject.value == pytest.approx(values.mean())
    assert by_subject.high - by_subject.low > 2 * (by_slice.high - by_slice.low)
    assert metrics.bootstrap(mean, subjects, resamples=500, seed=0) == by_subject


def test_auc_of_known_cases():
    assert metrics.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert metrics.auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert metrics.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert np.isnan(metrics.auc([0.1, 0.2], [1, 1]))


def test_total_variation_of_known_histograms():
    assert metrics.total_variation(np.full(10, 0.05), np.full(7, 0.05), bins=10) == 0.0
    assert metrics.total_variation(np.full(10, 0.05), np.full(10, 0.95), bins=10) == 1.0
    half = np.r_[np.full(5, 0.05), np.full(5, 0.95)]
    assert metrics.total_variation(half, np.full(10, 0.05), bins=10) == 0.5


def test_too_few_images_say_how_many_are_needed(stacks):
    images, _ = stacks
    with pytest.raises(DataError, match="needs at least 50 images per set.*10 generated"):
        metrics.two_sample_test(images, images[:10], min_images=50)


# --- the probe and the C2ST ----------------------------------------------------------------------


def test_probe_learns_slice_level_and_a_visible_attribute(stacks, probe):
    images, conditions = stacks
    held = ~conditions["subject"].isin([f"s{s}" for s in range(6)]).to_numpy()
    assert [h.name for h in probe.heads] == ["slice_level", "group"]  # "unknown": no values
    predicted = probe.predict(images[held])
    assert predicted["features"].shape == (held.sum(), probes.FEATURES)
    level_error = np.abs(predicted["slice_level"] - conditions["slice_level"][held]).mean()
    assert level_error < 0.15  # guessing the mean level scores ~0.25
    truth = (conditions["group"][held] == "b").to_numpy()
    assert metrics.auc(predicted["group"][:, 1], truth) >= 0.9


def test_probe_training_is_deterministic(stacks, probe):
    images, conditions = stacks
    train = conditions["subject"].isin([f"s{s}" for s in range(6)]).to_numpy()
    table = conditions[train].assign(unknown=None)
    again = probes.train_probe(
        images[train], table, SPECS, steps=150, batch_size=16, learning_rate=3e-3, seed=0
    )
    first, second = probe.predict(images), again.predict(images)
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_fidelity_is_high_for_obeyed_labels_and_near_chance_when_shuffled(stacks, probe):
    images, conditions = stacks
    held = ~conditions["subject"].isin([f"s{s}" for s in range(6)]).to_numpy()
    test_images, test_conditions = images[held], conditions[held].reset_index(drop=True)
    # "Samples": the held-out slices again, labelled with what they show.
    labels = pd.DataFrame(
        {"file": [f"sample_{i:04d}.png" for i in range(len(test_images))]}
        | {name: test_conditions[name] for name in ("slice_level", "group")}
    )
    predicted = probe.predict(test_images)
    # "Reconstructions": every test slice replaced by the mean slice, which shows no level.
    flat = np.broadcast_to(test_images.mean(0).astype(np.uint8), test_images.shape)
    rows, notes = fidelity.condition_fidelity(
        probe, predicted, test_conditions, predicted, labels,
        probe.predict(flat), resamples=200, seed=0,
    )  # fmt: skip
    values = fidelity.fidelity_values(rows)
    assert not notes
    assert values["condition_group_auc_samples"] == values["condition_group_auc_real"] >= 0.9
    assert values["slice_level_mae_reconstructions"] > 0.15 > values["slice_level_mae_real"]
    assert values["condition_group_auc_reconstructions"] == 0.5  # one prediction for all
    assert values["condition_group_auc_shuffled"] < 0.75
    assert values["slice_level_mae_samples"] < 0.15 < values["slice_level_mae_shuffled"]
    for key in ("condition_group_accuracy_real", "slice_level_mae_real"):
        assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], key


def test_condition_values_outside_the_spec_name_the_row():
    head = probes.Head("cdr", "categorical", (0.0, 0.5, 1.0, 2.0))
    assert list(probes.encode_targets(head, [0.5, "2", None, 0], "x")) == [1, 3, -1, 0]
    with pytest.raises(DataError, match=r"labels.csv: row 2: cdr 3.0 is not one of"):
        probes.encode_targets(head, [0.0, 3.0], "labels.csv")


def test_c2st_runs_its_steps_and_repeats_exactly_whatever_the_clock(stacks, monkeypatch):
    images, _ = stacks
    noise = np.random.default_rng(2).integers(0, 256, images.shape, dtype=np.uint8)
    options = {"steps": 60, "batch_size": 16, "seed": 0}
    first = metrics.two_sample_test(images, noise, **options)
    assert first.steps == 60 and first.accuracy >= 0.95 and first.ci_low > 0.5
    # A loaded machine: every clock reading 100 s after the last. Same steps, same scores.
    clock = iter(range(0, 10**9, 100))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    assert metrics.two_sample_test(images, noise, **options) == first


def test_c2st_tests_on_unseen_subjects_so_it_cannot_recognise_them():
    # Two sets of real slices from different subjects of one generator: indistinguishable.
    # Trained on some slices of each real subject, a classifier could learn those subjects.
    # The other set is like samples: every slice its own subject, at every level.
    real = np.concatenate([generate_subject_slices(5, s, SLICES, SIZE) for s in range(1, 9)])
    other = np.stack(
        [generate_subject_slices(5, s, SLICES, SIZE)[s % SLICES] for s in range(9, 9 + 8 * SLICES)]
    )
    subjects = np.repeat(np.arange(8), SLICES)
    result = metrics.two_sample_test(
        real, other, real_groups=subjects, steps=100, batch_size=16, seed=0
    )
    assert result.held_out == 2 * 96 and result.trained_on == 2 * 72  # folds of 2 subjects
    assert result.ci_low <= 0.5 <= result.ci_high
