"""Tests of the procedural brain-slice generator (oasis_vqvae.data.synthetic)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oasis_vqvae.data.synthetic import (
    SPLIT_DIRS,
    SubjectAnatomy,
    generate_subject_slices,
    render_slice,
    sample_subject,
    split_subjects,
    write_synthetic_oasis,
)

NAME = re.compile(r"case_(\d{3})_slice_(\d+)\.nii\.png")


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
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SPLIT_DIRS)
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
