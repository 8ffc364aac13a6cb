"""Tests of the procedural brain-slice generator (oasis_vqvae.data.synthetic)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from oasis_vqvae.data.labels import read_case_labels
from oasis_vqvae.data.synthetic import (
    LABELS_FILE,
    SPLIT_DIRS,
    SubjectAnatomy,
    SubjectLabels,
    generate_subject_slices,
    render_slice,
    sample_labels,
    sample_subject,
    split_subjects,
    write_synthetic_oasis,
)

NAME = re.compile(r"case_(\d{3})_slice_(\d+)\.nii\.png")
REPO = Path(__file__).resolve().parents[2]


def _slice(subject: int, level: float, size: int = 128, seed: int = 0) -> np.ndarray:
    return render_slice(sample_subject(seed, subject), level, size, np.random.default_rng(0))


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) * 2.0 / size - 1.0
    return np.meshgrid(c, c)


def _brain_area(img: np.ndarray) -> int:
    """Pixels of tissue connected to the image centre (4-neighbour flood fill, numpy only).

    The dark skull and CSF ring separates the brain from the bright scalp, so this counts
    the brain cross-section only.
    """
    x, y = _coords(img.shape[0])
    tissue = img > 60
    filled = tissue & (np.hypot(x, y) < 0.2)
    while True:
        grown = filled.copy()
        grown[1:] |= filled[:-1]
        grown[:-1] |= filled[1:]
        grown[:, 1:] |= filled[:, :-1]
        grown[:, :-1] |= filled[:, 1:]
        grown &= tissue
        if (grown == filled).all():
            return int(filled.sum())
        filled = grown


def _read_cases(root: Path) -> dict[str, dict[int, list[Path]]]:
    cases: dict[str, dict[int, list[Path]]] = {}
    for folder in SPLIT_DIRS:
        for path in sorted((root / folder).iterdir()):
            match = NAME.fullmatch(path.name)
            assert match, path.name
            cases.setdefault(folder, {}).setdefault(int(match.group(1)), []).append(path)
    return cases


def test_same_seed_same_pixels_and_other_seed_differs() -> None:
    first = generate_subject_slices(7, 2, 4, 32)
    assert np.array_equal(first, generate_subject_slices(7, 2, 4, 32))
    assert not np.array_equal(first, generate_subject_slices(8, 2, 4, 32))
    assert not np.array_equal(first, generate_subject_slices(7, 3, 4, 32))
    assert sample_subject(7, 2) == sample_subject(7, 2)
    assert sample_subject(7, 2) != sample_subject(8, 2)


def test_subject_does_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    small = _read_cases(
        write_synthetic_oasis(
            tmp_path / "small", subjects=3, slices_per_subject=2, image_size=32, seed=5
        )
    )
    large = _read_cases(
        write_synthetic_oasis(
            tmp_path / "large", subjects=10, slices_per_subject=2, image_size=32, seed=5
        )
    )

    def case_pixels(cases: dict[str, dict[int, list[Path]]], case: int) -> list[np.ndarray]:
        paths = next(split[case] for split in cases.values() if case in split)
        return [np.asarray(Image.open(path)) for path in paths]

    for case in (1, 2, 3):
        for a, b in zip(case_pixels(small, case), case_pixels(large, case), strict=True):
            assert np.array_equal(a, b)
        expected = generate_subject_slices(5, case, 2, 32)
        assert np.array_equal(np.stack(case_pixels(small, case)), expected)


def test_shape_and_dtype() -> None:
    stack = generate_subject_slices(0, 1, 5, 48)
    assert stack.shape == (5, 48, 48) and stack.dtype == np.uint8
    one = generate_subject_slices(0, 1, 1, 16)
    assert one.shape == (1, 16, 16)
    single = _slice(1, 0.5, size=40)
    assert single.shape == (40, 40) and single.dtype == np.uint8


@pytest.mark.parametrize("subject", [1, 2, 3, 4])
def test_black_background_and_tissue_classes(subject: int) -> None:
    img = _slice(subject, 0.5).astype(int)
    corners = np.concatenate([img[:8, :8], img[:8, -8:], img[-8:, :8], img[-8:, -8:]])
    assert corners.mean() < 15 and corners.max() < 60
    x, y = _coords(img.shape[0])
    brain = img[np.hypot(x, y / 1.15) < 0.55]  # well inside the skull of every subject
    fractions = {
        "dark CSF and ventricles": (brain < 75).mean(),
        "grey matter": ((brain >= 95) & (brain < 165)).mean(),
        "white matter": (brain >= 175).mean(),
    }
    assert fractions["dark CSF and ventricles"] > 0.02, fractions
    assert fractions["grey matter"] > 0.03, fractions
    assert fractions["white matter"] > 0.3, fractions
    assert (img < 25).mean() > 0.2  # black background around the head


def test_scalp_is_bright_outside_a_dark_skull() -> None:
    img = _slice(1, 0.5).astype(float)
    row = img[img.shape[0] // 2]  # a line through the head from left to right
    first = int(np.argmax(row > 100))  # the scalp, coming in from the left
    assert row[first : first + 4].max() > 180  # bright fat
    assert row[first + 4 : first + 16].min() < 60  # dark bone and CSF just inside it


def test_brain_is_smaller_near_bottom_and_top() -> None:
    for subject in (1, 2, 3):
        middle = _brain_area(_slice(subject, 0.5))
        assert _brain_area(_slice(subject, 0.1)) < 0.9 * middle
        assert _brain_area(_slice(subject, 0.95)) < 0.75 * middle
        assert middle > 0.25 * 128 * 128  # the fill found the brain, not noise


def test_ventricles_vary_between_subjects_and_levels() -> None:
    x, y = _coords(128)
    centre = (np.abs(x) < 0.25) & (np.abs(y) < 0.35)

    def dark_centre(subject: int, level: float = 0.5) -> int:
        return int((_slice(subject, level)[centre] < 70).sum())

    subjects = range(1, 13)
    dark = np.array([dark_centre(s) for s in subjects])
    scale = np.array([sample_subject(0, s).ventricle_scale for s in subjects])
    assert dark.max() > 1.6 * dark.min()
    assert dark[np.argmax(scale)] > dark[np.argmin(scale)]
    assert np.corrcoef(scale, dark)[0, 1] > 0.7
    # no ventricles near the top of the brain: larger ones darken the middle level only
    anatomy = sample_subject(0, 1)
    wider = dataclasses.replace(anatomy, ventricle_scale=2 * anatomy.ventricle_scale)

    def dark(subject: SubjectAnatomy, level: float) -> int:
        return int((render_slice(subject, level, 128, np.random.default_rng(0))[centre] < 70).sum())

    assert dark(wider, 0.5) > 1.3 * dark(anatomy, 0.5)
    assert dark(wider, 0.9) == dark(anatomy, 0.9)


def test_write_synthetic_oasis_layout(tmp_path: Path) -> None:
    root = write_synthetic_oasis(tmp_path, subjects=5, slices_per_subject=3, image_size=32, seed=0)
    assert root == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*SPLIT_DIRS, LABELS_FILE])
    assert SPLIT_DIRS == (
        "keras_png_slices_train",
        "keras_png_slices_validate",
        "keras_png_slices_test",
    )
    cases = _read_cases(tmp_path)
    assert set(cases) == set(SPLIT_DIRS)  # every split non-empty
    seen = [case for split in cases.values() for case in split]
    assert sorted(seen) == [1, 2, 3, 4, 5]  # each subject in exactly one split
    for split in cases.values():
        for paths in split.values():
            assert sorted(NAME.fullmatch(p.name).group(2) for p in paths) == ["0", "1", "2"]
            for path in paths:
                with Image.open(path) as image:
                    assert image.mode == "L" and image.size == (32, 32)
                    assert image.format == "PNG"


def test_split_subjects_fractions() -> None:
    train, validate, test = split_subjects(10, 0)
    assert (len(train), len(validate), len(test)) == (8, 1, 1)
    assert sorted(train + validate + test) == list(range(1, 11))
    assert split_subjects(10, 0) == (train, validate, test)
    assert [len(s) for s in split_subjects(3, 1)] == [1, 1, 1]
    assert [len(s) for s in split_subjects(40, 1, (0.5, 0.25, 0.25))] == [20, 10, 10]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subjects": 2},
        {"subjects": 0},
        {"subjects": 1000},
        {"split_fractions": (0.8, 0.1, 0.2)},
        {"split_fractions": (1.0, 0.0, 0.0)},
        {"split_fractions": (0.9, -0.1, 0.2)},
        {"slices_per_subject": 0},
        {"image_size": 4},
        {"seed": -1},
    ],
)
def test_write_synthetic_oasis_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    arguments = {"subjects": 5, "slices_per_subject": 1, "image_size": 16, "seed": 0} | kwargs
    with pytest.raises(ValueError):
        write_synthetic_oasis(tmp_path, **arguments)
    assert not any(tmp_path.iterdir())  # nothing written before the check failed


def test_render_and_generate_reject_bad_arguments() -> None:
    anatomy = sample_subject(0, 1)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        render_slice(anatomy, 1.5, 32, rng)
    with pytest.raises(ValueError):
        render_slice(anatomy, -0.1, 32, rng)
    with pytest.raises(ValueError):
        render_slice(anatomy, 0.5, 2, rng)
    with pytest.raises(ValueError):
        generate_subject_slices(0, 1, 0, 32)
    with pytest.raises(ValueError):
        sample_subject(-3, 1)


# --- labels and the anatomy that follows them ----------------------------------------------------


def _labels(count: int, seed: int = 0, share: float = 0.24) -> list[SubjectLabels]:
    return [sample_labels(seed, s, share) for s in range(1, count + 1)]


def _auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half: the ROC AUC of a single feature."""
    diff = positives[:, None] - negatives[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def test_labels_have_oasis1_frequencies() -> None:
    labels = _labels(4000)
    age = np.array([label.age for label in labels])
    cdr = np.array([label.cdr for label in labels])
    female = np.mean([label.sex == "F" for label in labels])
    assert age.min() >= 18 and age.max() <= 96
    assert abs(female - 0.62) < 0.03
    assert abs((cdr > 0).mean() - 100 / 416) < 0.03
    graded = cdr[cdr > 0]
    assert set(np.unique(cdr)) <= {0.0, 0.5, 1.0, 2.0}
    assert abs((graded == 0.5).mean() - 0.7) < 0.05 and abs((graded == 1.0).mean() - 0.28) < 0.05
    assert age[cdr > 0].min() >= 62  # dementia only in the old, as in OASIS-1
    assert abs((age[cdr == 0] < 60).mean() - 181 / 316) < 0.04  # the young are all CDR 0
    assert 70 < age[cdr > 0].mean() < 85


def test_cdr_positive_share_and_determinism() -> None:
    labels = _labels(2000, share=0.5)
    assert abs(np.mean([label.cdr > 0 for label in labels]) - 0.5) < 0.04
    assert sample_labels(3, 7, 0.5) == sample_labels(3, 7, 0.5)
    assert _labels(50, seed=1) != _labels(50, seed=2)
    with pytest.raises(ValueError, match="cdr_positive"):
        sample_labels(0, 1, 1.5)


def test_anatomy_follows_age_cdr_and_sex() -> None:
    labels = _labels(2000, share=0.4)
    anatomy = [sample_subject(0, s, label) for s, label in enumerate(labels, start=1)]
    age = np.array([label.age for label in labels])
    cdr = np.array([label.cdr for label in labels])
    male = np.array([label.sex == "M" for label in labels])

    def field(name: str) -> np.ndarray:
        return np.array([getattr(a, name) for a in anatomy])

    ventricles, csf, sulci, cortex = (
        field(n) for n in ("ventricle_scale", "csf_gap", "sulcus_width", "cortex")
    )
    healthy = cdr == 0
    by_age = [(age >= lo) & (age < hi) & healthy for lo, hi in ((18, 35), (35, 65), (65, 97))]
    for feature, sign in ((ventricles, 1), (csf, 1), (sulci, 1), (cortex, -1)):
        means = [sign * feature[group].mean() for group in by_age]
        assert means[0] < means[1] < means[2]  # atrophy with age
        old = age >= 65
        grades = [sign * feature[old & (cdr == grade)].mean() for grade in (0.0, 0.5, 1.0)]
        assert grades[0] < grades[1] < grades[2]  # and more with CDR
    head = field("head_radius")
    assert head[male].mean() > 1.02 * head[~male].mean()
    # No label is read off one measure: the classes overlap.
    old = age >= 65
    assert 0.65 < _auc(ventricles[old & healthy], ventricles[old & (cdr > 0)]) < 0.95
    assert 0.75 < _auc(head[~male], head[male]) < 0.95


def test_rendered_slices_show_the_atrophy_and_head_size() -> None:
    labels = _labels(60, seed=4, share=0.5)
    x, y = _coords(64)
    inner = np.hypot(x, y / 1.15) < 0.5
    csf, head, age, cdr, male = [], [], [], [], []
    for subject, label in enumerate(labels, start=1):
        stack = generate_subject_slices(4, subject, 8, 64, label)
        middle = stack[3:6]  # around the ventricles
        csf.append(((middle < 80) & inner).mean())
        head.append((stack[3] > 0).sum())  # the background outside the head is exactly 0
        age.append(label.age)
        cdr.append(label.cdr)
        male.append(label.sex == "M")
    csf, head, age, cdr, male = map(np.array, (csf, head, age, cdr, male))
    assert np.corrcoef(age, csf)[0, 1] > 0.5
    old = age >= 60
    assert csf[old & (cdr > 0)].mean() > csf[old & (cdr == 0)].mean() > csf[~old].mean()
    assert head[male].mean() > head[~male].mean()


def test_labels_csv_is_written_as_a_user_would(tmp_path: Path) -> None:
    write_synthetic_oasis(
        tmp_path, subjects=6, slices_per_subject=1, image_size=16, seed=2, cdr_positive=0.5
    )
    text = (tmp_path / LABELS_FILE).read_text()
    assert text.splitlines()[0] == "case,age,sex,cdr"
    table = read_case_labels(tmp_path / LABELS_FILE, location=LABELS_FILE)
    assert sorted(table.rows, key=int) == [str(s) for s in range(1, 7)]
    for case, row in table.rows.items():
        label = sample_labels(2, int(case), 0.5)
        assert row == {"age": float(label.age), "sex": label.sex, "cdr": label.cdr}


def test_stratified_split_keeps_subjects_apart_and_classes_everywhere() -> None:
    strata = [s % 3 == 0 for s in range(1, 41)]  # 13 of one class, 27 of the other
    groups = split_subjects(40, 5, (0.8, 0.1, 0.1), strata)
    assert sorted(s for group in groups for s in group) == list(range(1, 41))
    for group in groups:
        assert {strata[s - 1] for s in group} == {True, False}
    assert groups == split_subjects(40, 5, (0.8, 0.1, 0.1), strata)
    # Classes too small to reach every split: the split ignores them rather than leave one empty.
    tiny = split_subjects(6, 0, (0.8, 0.1, 0.1), [True, True, True, False, False, False])
    assert tiny == split_subjects(6, 0, (0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="strata"):
        split_subjects(6, 0, (0.8, 0.1, 0.1), [True])


def test_demo_params_give_every_split_both_cdr_classes() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    synthetic, split = data["synthetic"], data["split"]
    count, seed = synthetic["subjects"], data["seed"]
    labels = [sample_labels(seed, s, synthetic["cdr_positive"]) for s in range(1, count + 1)]
    fractions = (split["train"], split["validate"], split["test"])
    groups = split_subjects(count, seed, fractions, [label.cdr > 0 for label in labels])
    for group in groups:
        positive = sum(labels[s - 1].cdr > 0 for s in group)
        assert 0.3 * len(group) <= positive <= 0.7 * len(group)
    assert len(groups[2]) >= 10  # the downstream classifiers score test subjects
    levels = np.linspace(0.1, 0.9, synthetic["slices_per_subject"])
    assert levels[0] <= 0.15 and levels[-1] >= 0.85  # posterior fossa to near the vertex
    assert count * synthetic["slices_per_subject"] <= 1000  # the demo's time budget
