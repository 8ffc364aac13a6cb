"""Procedural brain-like axial T1 MRI slices: the built-in data source that needs no download.

Anatomy model
-------------
Every structure is an analytic shape in normalised image coordinates (the image spans
[-1, 1] on both axes, anterior at the top), so a slice renders at any size with the
same geometry. The head is an ellipse, seen in "elliptical polar" coordinates
(``r``, ``theta``) after a per-subject shift, rotation and aspect ratio. From outside in:

* scalp: a bright ring (subcutaneous fat) with a slightly darker skin rim;
* skull: a dark ring (cortical bone) with a faint marrow stripe (diploe);
* CSF: a thin dark layer between skull and brain, wider with atrophy;
* cortex: the brain surface carries sulci, each a slot of CSF with a rounded fundus and
  its own depth (main sulci alternate with shallower, often absent minor ones). Sulcus
  ``k`` lies where the phase ``N theta + sum_j a_j sin(j theta + p_j) + F(u, v, level)``
  equals ``k pi``, ``F`` being a smooth random 3-D field of plane waves that bends the
  sulci, so the folding is irregular, subject-specific and coherent across neighbouring
  slices. With ``e`` the signed distance to the nearest CSF (brain surface, sulcus
  walls, interhemispheric and Sylvian fissures), grey matter is ``0 < e < cortex
  thickness`` and white matter lies deeper, so gyri have white-matter cores;
* the interhemispheric fissure splits the hemispheres except where the corpus callosum
  bridges them (middle levels); the Sylvian fissures reach in from the sides (lower
  middle levels);
* deep grey matter (caudate, lentiform nucleus, thalamus) in the lower middle levels;
* lateral ventricles: a dark tube each side of the midline, wide frontal horns and atria
  with a narrow middle low down (the butterfly), straighter bodies higher up; present
  only in the middle levels and scaled by a per-subject ventricle factor that grows with
  atrophy (as do sulcal and CSF widths);
* posterior fossa (low levels): cerebellar hemispheres with fine folia and the pons.

The cross-section of head and brain shrinks toward the bottom and top of the brain
(``level`` 0 -> 1). Edges are ramps one pixel wide (a partial-volume approximation), so
images are anti-aliased without supersampling; the grey/white boundary is softer. A
smooth multiplicative bias field and Rician noise finish the image, which is quantised
to 8 bits on a black background.

Labels
------
Every subject has an age (18-96 years), a sex and a Clinical Dementia Rating (CDR 0, 0.5,
1 or 2), drawn like OASIS-1's (:func:`sample_labels`): about 62% women; CDR > 0 only from
age 62 up, its grades in OASIS-1's proportions (70 : 28 : 2 for 0.5 : 1 : 2); subjects with
CDR 0 are young (18-59, 57% of them, as OASIS-1's 181 of 316) or old (60-96). The share of
subjects with CDR > 0 is a parameter (OASIS-1: 100 of 416, 0.24); the demo raises it so
that every split has enough of both classes. The anatomy follows the labels as in life: a
per-subject atrophy grows with age (faster after 60) and more with CDR, plus a spread of
its own; it widens the ventricles, the sulci and the CSF around the brain and thins the
cortex, each with some independent spread, so no single pixel tells a label. Men's heads
are about 3.5% wider on average (sd 2%). :func:`write_synthetic_oasis` writes the labels as
a user would supply them: ``labels.csv`` with columns ``case,age,sex,cdr``.

Randomness: the labels of subject ``s`` come from ``default_rng([seed, s, 3])``, its anatomy
from ``default_rng([seed, s])`` (given its labels) and the noise of its slice ``i`` from
``default_rng([seed, s, i, 1])``, so a slice never depends on how many other subjects or
slices are generated.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_DIRS: tuple[str, str, str] = (
    "keras_png_slices_train",
    "keras_png_slices_validate",
    "keras_png_slices_test",
)
"""Folders of the preprocessed OASIS data set, in split order (train, validate, test)."""

LEVEL_RANGE: tuple[float, float] = (0.1, 0.9)
"""Slice levels used by :func:`generate_subject_slices`: the central 80% of the brain."""

MAX_SUBJECTS = 999
"""Case numbers have three digits (case_001 .. case_999), as in the real data set."""

_NOISE_STREAM = 1  # last SeedSequence word of the per-slice noise generators
_SPLIT_STREAM = 2  # SeedSequence word of the subject-to-split shuffle
_LABEL_STREAM = 3  # last SeedSequence word of the per-subject labels

LABELS_FILE = "labels.csv"
"""The labels :func:`write_synthetic_oasis` writes beside the split folders."""
LABEL_COLUMNS = ("case", "age", "sex", "cdr")
FEMALE_SHARE = 0.62
"""OASIS-1: 256 women of 416 subjects."""
CDR_POSITIVE_SHARE = 0.24
"""OASIS-1's share of subjects with CDR > 0 (100 of 416); the default of :func:`sample_labels`."""
CDR_GRADES = ((0.5, 70.0), (1.0, 28.0), (2.0, 2.0))
"""CDR > 0 grades and their OASIS-1 counts."""
YOUNG_SHARE = 181 / 316
"""Of OASIS-1's subjects with CDR 0, the share under 60 (never rated there: taken as 0)."""
_CDR_ATROPHY = {0.0: 0.0, 0.5: 0.16, 1.0: 0.28, 2.0: 0.4}
"""Atrophy added by each CDR grade, on top of the age's (0 young .. about 0.6 at 90)."""


@dataclass(frozen=True)
class SubjectLabels:
    """What the labels CSV says about one subject."""

    age: int
    """Years, 18-96."""
    sex: str
    """``F`` or ``M``."""
    cdr: float
    """0, 0.5, 1 or 2."""


def sample_labels(
    seed: int, subject: int, cdr_positive: float = CDR_POSITIVE_SHARE
) -> SubjectLabels:
    """Draw the age, sex and CDR of ``subject``; the same arguments give the same labels.

    ``cdr_positive`` is the probability of CDR > 0 (OASIS-1: 0.24).
    """
    _check_seed(seed, subject)
    if not 0.0 <= cdr_positive <= 1.0:
        raise ValueError(f"cdr_positive must be in [0, 1], got {cdr_positive}")
    rng = np.random.default_rng([seed, subject, _LABEL_STREAM])
    positive, young, female = rng.random(3) < (cdr_positive, YOUNG_SHARE, FEMALE_SHARE)
    grades, weights = np.array(CDR_GRADES).T
    cdr = float(rng.choice(grades, p=weights / weights.sum())) if positive else 0.0
    if positive:  # OASIS-1's demented subjects: 62-96, mean about 77
        age = 62.0 + 34.0 * rng.beta(2.4, 2.6)
    elif young:  # most of the young are students: 18-30, a tail up to 59
        age = 18.0 + 41.0 * rng.beta(0.8, 1.8)
    else:
        age = 60.0 + 36.0 * rng.beta(2.2, 2.6)
    return SubjectLabels(age=int(round(age)), sex="F" if female else "M", cdr=cdr)


def atrophy_of(labels: SubjectLabels, spread: float) -> float:
    """Atrophy (0 none .. about 1.1) from age and CDR; ``spread`` is the subject's own share."""
    aging = 0.62 * min(max((labels.age - 20.0) / 70.0, 0.0), 1.0) ** 1.6
    return float(np.clip(aging + _CDR_ATROPHY[labels.cdr] + spread, 0.0, 1.15))


@dataclass(frozen=True)
class SubjectAnatomy:
    """Per-subject random anatomy; lengths are in normalised units (image half-width = 1)."""

    center: tuple[float, float]
    """Head centre (x, y); y grows toward the bottom (posterior) of the image."""
    rotation: float
    """In-plane head rotation in radians."""
    head_radius: float
    """Left-right semi-axis of the scalp at the widest level."""
    aspect: float
    """Anterior-posterior over left-right extent of the head (> 1)."""
    outline: tuple[tuple[float, float], ...]
    """(amplitude, phase) of the harmonics 2, 3, 4... of the head and brain outline."""
    scalp: float
    bone: float
    csf_gap: float
    """Width of the CSF layer between the inner skull table and the brain surface."""
    cortex: float
    """Grey-matter thickness."""
    n_sulci: int
    sulcus_warp: tuple[tuple[float, float, float], ...]
    """(amplitude, phase, phase drift per unit level) of the sulcal phase harmonics."""
    sulcus_depths: tuple[float, ...]
    """Depth of the ``2 n_sulci`` sulci: main ones (even) alternate with minor ones (odd),
    many of which are absent (negative depth)."""
    sulcus_width: float
    """Half-width of the CSF in a sulcus at the brain surface."""
    sulcus_field: tuple[tuple[float, float, float, float, float], ...]
    """(amplitude, kx, ky, kz, phase) plane waves of a smooth 3-D field bending the sulci."""
    ventricle_scale: float
    """Size of the lateral ventricles; about 0.75 (young) to 2.5 (strong atrophy)."""
    ventricle_asymmetry: float
    intensities: tuple[float, float, float, float, float, float]
    """Mean 8-bit intensity of CSF, grey matter, white matter, scalp fat, bone, deep grey."""
    noise_sigma: float
    bias: tuple[float, float, float, float, float]
    """Log bias field coefficients of x, y, x*y, x^2, y^2."""
    atrophy: float = 0.0
    """The subject's atrophy (0 none .. about 1.1) that set csf_gap, cortex, sulci, ventricles."""


def sample_subject(seed: int, subject: int, labels: SubjectLabels | None = None) -> SubjectAnatomy:
    """Draw the anatomy of ``subject`` given its ``labels`` (default: :func:`sample_labels`).

    The same (seed, subject, labels) always give the same anatomy.
    """
    _check_seed(seed, subject)
    labels = sample_labels(seed, subject) if labels is None else labels
    rng = np.random.default_rng([seed, subject])
    atrophy = atrophy_of(labels, float(rng.normal(0.0, 0.07)))
    n_sulci = int(rng.integers(34, 46))
    wm = rng.uniform(190.0, 225.0)
    head = rng.normal(0.793 if labels.sex == "M" else 0.766, 0.016)
    return SubjectAnatomy(
        center=(float(rng.normal(0.0, 0.015)), float(rng.normal(0.0, 0.015))),
        rotation=float(np.deg2rad(rng.normal(0.0, 3.0))),
        head_radius=float(np.clip(head, 0.73, 0.82)),  # 0.82 x aspect 1.2 still fits
        aspect=float(rng.uniform(1.10, 1.20)),
        outline=tuple(
            (float(rng.uniform(0.0, 0.025 / k)), float(rng.uniform(0, 2 * np.pi)))
            for k in range(2, 6)
        ),
        scalp=float(rng.uniform(0.045, 0.065)),
        bone=float(rng.uniform(0.03, 0.045)),
        csf_gap=float(0.012 + 0.03 * atrophy + rng.uniform(0.0, 0.008)),
        cortex=float(rng.uniform(0.032, 0.04) - 0.006 * atrophy),
        n_sulci=n_sulci,
        sulcus_warp=tuple(
            (
                float(rng.uniform(0.0, 0.6 * n_sulci / (j * 8))),
                float(rng.uniform(0, 2 * np.pi)),
                float(rng.normal(0.0, 2.0)),
            )
            for j in range(1, 5)
        ),
        sulcus_depths=_sample_sulcus_depths(rng, n_sulci),
        sulcus_width=float(0.003 + 0.009 * atrophy + rng.uniform(0.0, 0.002)),
        sulcus_field=_sample_waves(rng, count=8, amplitude=2.2, wavelength=0.28),
        ventricle_scale=float((0.75 + 1.5 * atrophy) * math.exp(rng.normal(0.0, 0.12))),
        ventricle_asymmetry=float(rng.normal(0.0, 0.06)),
        intensities=(
            float(rng.uniform(25.0, 50.0)),
            float(wm * rng.uniform(0.58, 0.68)),
            float(wm),
            float(rng.uniform(205.0, 245.0)),
            float(rng.uniform(10.0, 25.0)),
            float(wm * rng.uniform(0.68, 0.76)),
        ),
        noise_sigma=float(rng.uniform(1.0, 3.0)),
        bias=tuple(float(b) for b in rng.normal(0.0, [0.08, 0.08, 0.06, 0.05, 0.05])),
        atrophy=atrophy,
    )


def _sample_sulcus_depths(rng: np.random.Generator, n_sulci: int) -> tuple[float, ...]:
    main = rng.uniform(0.07, 0.2, n_sulci)
    minor = np.where(rng.random(n_sulci) < 0.45, rng.uniform(0.02, 0.08, n_sulci), -1.0)
    return tuple(float(d) for d in np.stack([main, minor], axis=1).ravel())


def render_slice(
    subject: SubjectAnatomy, level: float, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Render the axial slice at ``level`` (0 bottom .. 1 top of the brain) as uint8 pixels.

    ``rng`` supplies the noise only; the anatomy is fully given by ``subject`` and ``level``.
    """
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be in [0, 1], got {level}")
    _check_image_size(image_size)
    return _render(subject, level, _Frame.build(subject, image_size), rng)


def _render(
    subject: SubjectAnatomy, level: float, frame: _Frame, rng: np.random.Generator
) -> np.ndarray:
    """Paint the slice from the outside in: scalp, skull, CSF, cortex, deep structures."""
    u, v, r = frame.u, frame.v, frame.r
    edge = 2.0 / r.shape[0]  # one pixel: the width of every soft edge
    csf, gm, wm, _, _, deep = subject.intensities
    rb = _brain_radius(subject, level)
    head = subject.head_radius * _head_scale(level) * _outline_factor(subject, frame)
    inner_skull = head - subject.scalp - subject.bone
    depth = np.maximum(inner_skull * _brain_fill(level) - subject.csf_gap, 0.05) - r
    pial = np.minimum(depth, _sulci_sdf(subject, frame, depth, level))
    pial = np.minimum(pial, _fissure_sdf(subject, u, v, rb, level))
    pial = np.minimum(pial, _sylvian_sdf(subject, u, v, rb, level))
    blur = max(1.5 * edge, 0.014)  # the grey/white boundary is soft in T1 images
    tissue = csf + (gm - csf) * _ramp(pial, edge) + (wm - gm) * _ramp(pial - subject.cortex, blur)
    tissue = _paint(tissue, deep, 0.85 * _ramp(-_deep_grey_sdf(subject, u, v, rb, level), 3 * edge))
    tissue = _paint(tissue, csf, _ramp(-_ventricle_sdf(subject, u, v, rb, level), edge))
    fossa = _posterior_fossa(subject, u, v, rb, level, edge)
    if fossa is not None:
        tissue = _paint(tissue, *fossa)
    img = _paint(_head_layers(subject, r, head, edge), tissue, _ramp(inner_skull - r, edge))
    img = img * _bias_field(subject, frame.x, frame.y)
    noisy = _rician_uint8(img, subject.noise_sigma, rng)
    # Outside the head the slices are exactly black, as in the masked OASIS PNG slices.
    return np.where(_ramp(head - r, edge) > 0, noisy, 0).astype(np.uint8)


def generate_subject_slices(
    seed: int, subject: int, slices: int, image_size: int, labels: SubjectLabels | None = None
) -> np.ndarray:
    """Return ``slices`` axial slices (uint8, shape (slices, H, W)) of one synthetic subject.

    Levels are spread evenly over the central 80% of the brain, bottom to top: from the
    posterior fossa (level 0.1) to near the vertex (0.9); slice ``i`` of ``n`` is at level
    ``0.1 + 0.8 i / (n - 1)``, so its rank-based slice level ``i / (n - 1)`` is exact.
    ``labels`` default to :func:`sample_labels` of (seed, subject).
    """
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    _check_image_size(image_size)
    anatomy = sample_subject(seed, subject, labels)
    frame = _Frame.build(anatomy, image_size)  # shared: it does not depend on the level
    levels = np.linspace(*LEVEL_RANGE, slices) if slices > 1 else np.array([0.5])
    out = np.empty((slices, image_size, image_size), dtype=np.uint8)
    for index, level in enumerate(levels):
        noise_rng = np.random.default_rng([seed, subject, index, _NOISE_STREAM])
        out[index] = _render(anatomy, float(level), frame, noise_rng)
    return out


def split_subjects(
    subjects: int,
    seed: int,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    strata: Sequence[Hashable] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """Assign subject numbers 1..``subjects`` to (train, validate, test), every split non-empty.

    With ``strata`` (one class per subject, ``strata[s - 1]`` for subject ``s``) each class
    is split by the fractions on its own, and every split gets a member of every class
    that should have half a member or more there (rarer classes go where the rounding puts
    them). If that would leave a split empty, the split ignores the classes.
    """
    _check_split(subjects, split_fractions)
    _check_seed(seed, 0)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    if strata is not None:
        if len(strata) != subjects:
            raise ValueError(f"strata has {len(strata)} entries for {subjects} subjects")
        groups: tuple[list[int], list[int], list[int]] = ([], [], [])
        for stratum in sorted(set(strata), key=repr):
            members = np.array([s + 1 for s, k in enumerate(strata) if k == stratum])
            enough = len(members) >= 3 and len(members) * min(split_fractions) >= 0.5
            counts = _split_counts(len(members), split_fractions, at_least_one=enough)
            order = [int(s) for s in rng.permutation(members)]
            for group, start, stop in zip(
                groups, np.cumsum([0, *counts[:-1]]), np.cumsum(counts), strict=True
            ):
                group.extend(order[start:stop])
        if all(groups):
            return tuple(sorted(group) for group in groups)  # type: ignore[return-value]
        rng = np.random.default_rng([seed, _SPLIT_STREAM])
    counts = _split_counts(subjects, split_fractions)
    order = rng.permutation(subjects) + 1
    train, validate = counts[0], counts[0] + counts[1]
    cases = [int(s) for s in order]
    return sorted(cases[:train]), sorted(cases[train:validate]), sorted(cases[validate:])


def write_synthetic_oasis(
    root: Path,
    *,
    subjects: int,
    slices_per_subject: int,
    image_size: int,
    seed: int,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    cdr_positive: float = CDR_POSITIVE_SHARE,
) -> Path:
    """Write a synthetic data set in the layout of the preprocessed OASIS PNG slices.

    ``root/keras_png_slices_{train,validate,test}/case_NNN_slice_M.nii.png``: 8-bit
    grayscale PNGs, subjects (cases 001..) assigned to splits by ``split_fractions``,
    stratified by CDR class (0 or > 0); ``root/labels.csv``: ``case,age,sex,cdr`` of every
    subject, as a user's ``data.labels`` file. ``cdr_positive`` is the share of subjects
    with CDR > 0. Returns ``root``.
    """
    if slices_per_subject < 1:
        raise ValueError(f"slices_per_subject must be at least 1, got {slices_per_subject}")
    _check_image_size(image_size)
    _check_split(subjects, split_fractions)
    labels = {s: sample_labels(seed, s, cdr_positive) for s in range(1, subjects + 1)}
    strata = [labels[s].cdr > 0 for s in range(1, subjects + 1)]
    splits = split_subjects(subjects, seed, split_fractions, strata)
    root = Path(root)
    for folder, cases in zip(SPLIT_DIRS, splits, strict=True):
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for case in cases:
            stack = generate_subject_slices(
                seed, case, slices_per_subject, image_size, labels[case]
            )
            for index, pixels in enumerate(stack):
                Image.fromarray(pixels, mode="L").save(
                    target / f"case_{case:03d}_slice_{index}.nii.png", compress_level=1
                )
    write_labels(root / LABELS_FILE, labels)
    return root


def write_labels(path: Path, labels: dict[int, SubjectLabels]) -> Path:
    """``case,age,sex,cdr`` of each subject, cases in order (CDR as OASIS writes it: 0.5, 1)."""
    lines = [",".join(LABEL_COLUMNS)]
    for case in sorted(labels):
        label = labels[case]
        lines.append(f"{case},{label.age},{label.sex},{label.cdr:g}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- argument checks ---------------------------------------------------------------------


def _check_seed(seed: int, subject: int) -> None:
    if seed < 0 or subject < 0:
        raise ValueError(
            f"seed and subject must be non-negative, got seed={seed}, subject={subject}"
        )


def _check_image_size(image_size: int) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")


def _check_split(subjects: int, fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or min(fractions) <= 0.0:
        raise ValueError(
            f"split_fractions must be three positive fractions (train, validate, "
            f"test), got {fractions}"
        )
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_fractions must sum to 1, got {fractions} (sum {sum(fractions):g})")
    if subjects < 3:
        raise ValueError(f"need at least 3 subjects so every split gets one, got {subjects}")
    if subjects > MAX_SUBJECTS:
        raise ValueError(
            f"at most {MAX_SUBJECTS} subjects fit the 3-digit case numbers, got {subjects}"
        )


def _split_counts(
    subjects: int, fractions: tuple[float, float, float], at_least_one: bool = True
) -> list[int]:
    """Largest-remainder rounding of ``subjects * fractions``.

    With ``at_least_one`` every split gets one or more (``subjects`` must then be 3 or more).
    """
    exact = [subjects * f for f in fractions]
    counts = [max(int(at_least_one), int(e)) for e in exact]
    while sum(counts) < subjects:
        i = max(range(3), key=lambda k: exact[k] - counts[k])
        counts[i] += 1
    while sum(counts) > subjects:
        floor = int(at_least_one)
        i = max((k for k in range(3) if counts[k] > floor), key=lambda k: counts[k] - exact[k])
        counts[i] -= 1
    return counts


# --- geometry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Pixel coordinates shared by the shape functions (float32, one image each).

    ``x`` (a row) and ``y`` (a column) are image coordinates in [-1, 1], y pointing down;
    ``u``, ``v`` the head's own frame (shifted, rotated; v toward posterior); ``r`` and
    ``theta`` its elliptical polar coordinates; ``harmonics[k - 1]`` = (cos k theta,
    sin k theta) for k = 1..5.
    """

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    r: np.ndarray
    theta: np.ndarray
    harmonics: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def build(cls, subject: SubjectAnatomy, n: int) -> _Frame:
        c = ((np.arange(n, dtype=np.float32) + 0.5) * (2.0 / n) - 1.0).astype(np.float32)
        x, y = c[None, :], c[:, None]
        cos, sin = math.cos(subject.rotation), math.sin(subject.rotation)
        dx, dy = x - subject.center[0], y - subject.center[1]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy
        ve = v / subject.aspect
        r = np.hypot(u, ve)
        safe = np.maximum(r, 1e-6)
        harmonics = [(u / safe, ve / safe)]
        c1, s1 = harmonics[0]
        for _ in range(4):  # angle addition: cos/sin of k theta without more trigonometry
            ck, sk = harmonics[-1]
            harmonics.append((ck * c1 - sk * s1, sk * c1 + ck * s1))
        return cls(x, y, u, v, r, np.arctan2(ve, u), tuple(harmonics))


def _head_scale(level: float) -> float:
    """Head cross-section radius relative to the widest one: an off-centre ellipsoid."""
    return math.sqrt(max(1.0 - ((level - 0.42) / 0.75) ** 2, 0.05))


def _brain_fill(level: float) -> float:
    """Brain radius relative to the inner skull: the brain tapers more at the base and top."""
    return 1.0 - 0.25 * max(0.25 - level, 0.0) - 0.35 * max(level - 0.8, 0.0)


def _outline_factor(subject: SubjectAnatomy, frame: _Frame) -> np.ndarray:
    """Smooth deviation of head and brain outline from an ellipse (a wider occiput etc.)."""
    factor = 1.0 + 0.03 * frame.harmonics[0][1]  # sin theta: theta = +pi/2 is posterior
    for (amp, phase), (cos_k, sin_k) in zip(subject.outline, frame.harmonics[1:], strict=True):
        factor = factor + (amp * math.cos(phase)) * cos_k - (amp * math.sin(phase)) * sin_k
    return factor


def _brain_radius(subject: SubjectAnatomy, level: float) -> float:
    """Typical (left-right) brain radius at ``level``, the scale of the inner structures."""
    inner = subject.head_radius * _head_scale(level) - subject.scalp - subject.bone
    return max(inner * _brain_fill(level) - subject.csf_gap, 0.05)


def _sulci_sdf(
    subject: SubjectAnatomy, frame: _Frame, depth: np.ndarray, level: float
) -> np.ndarray:
    """Signed distance to the nearest cortical sulcus (negative inside the CSF of a sulcus).

    Sulci lie where the warped phase crosses a multiple of ``pi`` (main ones at even,
    minor ones at odd multiples); the distance across one is the phase offset over the
    phase gradient, and each sulcus is a slot with a rounded fundus.
    """
    n = subject.n_sulci
    u, ve = frame.u, frame.v / subject.aspect
    r2 = np.maximum(frame.r * frame.r, 0.0025)
    phase = n * frame.theta
    dtheta = np.full_like(phase, n)
    for j, ((amp, phi0, drift), (cos_j, sin_j)) in enumerate(
        zip(subject.sulcus_warp, frame.harmonics[:4], strict=True), start=1
    ):
        ca, sa = amp * math.cos(phi0 + drift * level), amp * math.sin(phi0 + drift * level)
        phase = phase + (ca * sin_j + sa * cos_j)  # amp sin(j theta + phi)
        dtheta = dtheta + j * (ca * cos_j - sa * sin_j)
    field, field_du, field_dv = _waves(subject, frame, level)
    phase = phase + field
    grad_u = dtheta * (-ve / r2) + field_du
    grad_v = dtheta * (u / (subject.aspect * r2)) + field_dv
    nearest = np.floor(phase / np.pi + 0.5)  # main sulci at even, minor ones at odd multiples
    across = np.abs(phase - np.pi * nearest) / np.maximum(np.hypot(grad_u, grad_v), 1.0)
    depths = np.asarray(subject.sulcus_depths, dtype=np.float32)
    sulcus_depth = depths[nearest.astype(np.int64) % (2 * n)]
    taper = np.clip(depth / np.abs(sulcus_depth), 0.0, 1.0)
    half_width = subject.sulcus_width * (1.3 - 0.7 * taper)
    return _box_sdf(across - half_width, depth - sulcus_depth)


def _waves(
    subject: SubjectAnatomy, frame: _Frame, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sulcal bending field at (u, v, level) and its gradient in (u, v).

    A plane wave is separable in image x and y, so the sum of all of them is a product of
    (H, waves) by (waves, W) complex matrices: no per-wave work on full images. (einsum, not
    ``@``: multithreaded BLAS is slower for such thin products, worst on a busy machine.)
    """
    cos, sin = math.cos(subject.rotation), math.sin(subject.rotation)
    amp, kx, ky, kz, phase = np.asarray(subject.sulcus_field, dtype=np.float64).T
    kx_img, ky_img = kx * cos - ky * sin, kx * sin + ky * cos  # wave vector in image x, y
    offset = kz * level + phase - kx_img * subject.center[0] - ky_img * subject.center[1]
    along_x = np.exp(1j * np.outer(kx_img, frame.x[0])).astype(np.complex64)  # (waves, W)
    along_y = np.exp(1j * (np.outer(frame.y[:, 0], ky_img) + offset))  # (H, waves)
    weights = np.stack([amp, amp * kx, amp * ky])[:, None, :]  # field, d/du, d/dv
    total, slope_u, slope_v = np.einsum(
        "khm,mw->khw", (along_y * weights).astype(np.complex64), along_x
    )
    return total.real, -slope_u.imag, -slope_v.imag


def _sample_waves(
    rng: np.random.Generator, count: int, amplitude: float, wavelength: float
) -> tuple[tuple[float, float, float, float, float], ...]:
    """Random plane waves of a smooth 3-D field; one level unit spans about 1.2 space units."""
    waves = []
    for _ in range(count):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / wavelength * rng.uniform(0.7, 1.3)
        kx, ky, kz = (k * direction * (1.0, 1.0, 1.2)).tolist()
        waves.append(
            (
                amplitude / math.sqrt(count) * 2.0 * float(rng.uniform(0.5, 1.0)),
                kx,
                ky,
                kz,
                float(rng.uniform(0, 2 * np.pi)),
            )
        )
    return tuple(waves)


def _fissure_sdf(
    subject: SubjectAnatomy, u: np.ndarray, v: np.ndarray, rb: float, level: float
) -> np.ndarray:
    """Signed distance to the interhemispheric fissure, interrupted by the corpus callosum."""
    callosum = 0.45 * max(1.0 - ((level - 0.5) / 0.28) ** 2, 0.0)  # half-length of the bridge
    along = callosum - np.abs(v) / (subject.aspect * rb)
    width = 0.5 * subject.sulcus_width + 0.003 + 0.006 * np.clip(-along, 0.0, 1.0)
    wavy = u - 0.008 * np.sin(9.0 * v + 5.0 * level + subject.rotation * 40.0)
    return _box_sdf(np.abs(wavy) - width, along)


def _sylvian_sdf(
    subject: SubjectAnatomy, u: np.ndarray, v: np.ndarray, rb: float, level: float
) -> np.ndarray:
    """Signed distance to the two lateral (Sylvian) fissures, which reach in to the insula."""
    presence = 1.0 - ((level - 0.38) / 0.17) ** 2
    if presence <= 0.0:
        return np.full_like(u, np.inf)
    fundus_x = rb * (1.0 - 0.34 * math.sqrt(presence))
    fundus_y = -0.1 * rb * subject.aspect
    angle = math.radians(12.0)
    width = 1.2 * subject.sulcus_width + 0.004
    sdf = np.full_like(u, np.inf)
    for side in (-1.0, 1.0):
        du, dv = side * u - fundus_x, v - fundus_y
        outward = du * math.cos(angle) - dv * math.sin(angle)
        across = np.abs(du * math.sin(angle) + dv * math.cos(angle))
        sdf = np.minimum(sdf, _box_sdf(across - width, -outward))
    return sdf


def _box_sdf(across: np.ndarray, along: np.ndarray) -> np.ndarray:
    """Signed distance of a half-infinite slot given the distances past its two walls."""
    outside = np.hypot(np.maximum(across, 0.0), np.maximum(along, 0.0))
    return np.where((across > 0) | (along > 0), outside, np.maximum(across, along))


def _ellipse_sdf(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float, tilt: float = 0.0
) -> np.ndarray:
    """Approximate signed distance to a tilted ellipse (exact on the axes, fine for edges)."""
    cos, sin = math.cos(tilt), math.sin(tilt)
    du, dv = u - cx, v - cy
    p, q = cos * du + sin * dv, -sin * du + cos * dv
    return (np.hypot(p / ax, q / ay) - 1.0) * min(ax, ay)


def _ventricle_sdf(
    subject: SubjectAnatomy, u: np.ndarray, v: np.ndarray, rb: float, level: float
) -> np.ndarray:
    """Signed distance to the lateral ventricles (and the third ventricle in low middle levels).

    Each lateral ventricle is a tube beside the midline. Low in the range it is wide at
    both ends (frontal horn and atrium: a butterfly) and narrow in the middle, with the
    atria splayed out; higher up it is the straighter, more even body.
    """
    presence = 1.0 - ((level - 0.51) / 0.19) ** 2
    if presence <= 0.0:
        return np.full_like(u, np.inf)
    grow = math.sqrt(presence)
    body = min(max((level - 0.42) / 0.2, 0.0), 1.0)  # 0: horns and atria, 1: bodies
    span = rb * subject.aspect * grow
    v0, v1 = -span * (0.42 - 0.1 * body), span * (0.42 - 0.06 * body)
    centre, half = 0.5 * (v0 + v1), 0.5 * (v1 - v0)
    rel = np.clip((v - centre) / half, -1.0, 1.0)
    inside = 1.0 - ((v - centre) / half) ** 4
    taper = np.sign(inside) * np.sqrt(np.abs(inside))  # negative beyond the ends: no tube
    waist = 0.35 + 0.45 * body
    scale = subject.ventricle_scale
    sdf = np.full_like(u, np.inf)
    for side in (-1.0, 1.0):
        w0 = 0.04 * rb * scale * (1.0 + side * subject.ventricle_asymmetry) * grow / 0.6
        width = w0 * taper * (waist + (1.0 - waist) * np.abs(rel))
        bow = rb * (
            (0.16 - 0.1 * body) * np.maximum(rel, 0.0) ** 2 + 0.1 * np.minimum(rel, 0.0) ** 2
        )  # horns and atria splay out
        mid = 0.006 + 0.002 * scale + width + bow
        sdf = np.minimum(sdf, np.abs(side * u - mid) - width)
    third = 1.0 - ((level - 0.42) / 0.1) ** 2
    if third > 0.0:
        slit = _ellipse_sdf(
            u,
            v,
            0.0,
            0.02 * rb,
            0.004 * scale * math.sqrt(third) + 0.002,
            0.14 * rb * subject.aspect,
        )
        sdf = np.minimum(sdf, slit)
    return sdf


def _deep_grey_sdf(
    subject: SubjectAnatomy, u: np.ndarray, v: np.ndarray, rb: float, level: float
) -> np.ndarray:
    """Signed distance to caudate heads, lentiform nuclei and thalami."""
    presence = 1.0 - ((level - 0.42) / 0.14) ** 2
    if presence <= 0.0:
        return np.full_like(u, np.inf)
    grow = math.sqrt(presence)
    a = subject.aspect
    vent = (0.03 * subject.ventricle_scale + 0.01) * rb / 0.6
    sdf = np.full_like(u, np.inf)
    for side in (-1.0, 1.0):
        for cx, cy, ax, ay, tilt in (
            (vent + 0.08 * rb, -0.22, 0.07, 0.12, 0.35),  # caudate
            (0.36 * rb, -0.02, 0.08, 0.22, 0.2),  # lentiform
            (0.13 * rb, 0.1, 0.11, 0.13, 0.0),  # thalamus
        ):
            sdf = np.minimum(
                sdf,
                _ellipse_sdf(
                    u, v, side * cx, cy * rb * a, ax * rb * grow, ay * rb * a * grow, side * tilt
                ),
            )
    return sdf


def _posterior_fossa(
    subject: SubjectAnatomy, u: np.ndarray, v: np.ndarray, rb: float, level: float, edge: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Intensity and coverage of cerebellum and brainstem, which fill the back of low slices.

    Cerebellar hemispheres carry fine concentric folia (grey with thin CSF fissures, a white
    core); the pons sits in front of them, ringed by CSF. None above the tentorium.
    """
    low = min(max((0.34 - level) / 0.2, 0.0), 1.0)
    if low <= 0.0:
        return None
    csf, gm, wm, _, _, _ = subject.intensities
    a = subject.aspect
    grow = math.sqrt(low)  # the top of the cerebellum is a tent: it shrinks to the back
    ay = rb * a * 0.42 * grow
    yc = rb * a * 0.97 - ay
    ax = rb * 0.45 * grow
    lobes = np.minimum(
        _ellipse_sdf(u, v, -0.42 * ax, yc, ax, ay), _ellipse_sdf(u, v, 0.42 * ax, yc, ax, ay)
    )
    hub = np.hypot(np.abs(u) - 0.5 * ax, v - (yc - 1.1 * ay))  # folia curve round each half
    period = 0.04 * rb / 0.6
    folia = np.cos(2 * np.pi * hub / period + 0.6 * np.sin(9.0 * u / rb) + 3.0 * low)
    fissures = np.clip((folia - 0.6) / 0.4, 0.0, 1.0)
    resolved = min(max(period / edge - 2.0, 0.0) / 2.0, 1.0)  # fade folia finer than 4 px
    fissures = resolved * fissures + (1.0 - resolved) * 0.12  # ... to their mean: no moire
    core = np.minimum(
        _ellipse_sdf(u, v, -0.4 * ax, yc - 0.25 * ay, 0.3 * ax, 0.2 * ay, -0.5),
        _ellipse_sdf(u, v, 0.4 * ax, yc - 0.25 * ay, 0.3 * ax, 0.2 * ay, 0.5),
    )
    tissue = gm * 1.05 + (csf - gm) * 0.6 * fissures
    tissue = _paint(tissue, 0.8 * wm, 0.8 * _ramp(-core, max(4 * edge, 0.04)))
    vermis_gap = np.abs(u) - 0.004 - 0.01 * np.clip((v - yc) / ay, 0.0, 1.0)
    tissue = _paint(tissue, csf, _ramp(-vermis_gap, edge) * (v > yc + 0.3 * ay))
    pons = _ellipse_sdf(
        u, v, 0.0, yc - ay - 0.04 * rb * low, 0.2 * rb * grow, 0.15 * rb * low + 0.02
    )  # joined to the cerebellum by the peduncles
    fourth = _ellipse_sdf(u, v, 0.0, yc - ay + 0.08 * rb * low, 0.06 * rb * grow, 0.025 * rb * grow)
    tissue = _paint(tissue, 0.8 * wm, _ramp(-pons, edge))
    tissue = _paint(tissue, csf, _ramp(-fourth, edge))
    cistern = np.minimum(lobes, pons) - 0.02 * low
    alpha = _ramp(-cistern, edge)
    inside = np.minimum(lobes, pons)
    return _paint(np.full_like(u, csf), tissue, _ramp(-inside, edge)), alpha


# --- intensities -------------------------------------------------------------------------


def _ramp(sdf: np.ndarray | float, edge: float) -> np.ndarray:
    """Partial-volume coverage: 0 outside, 1 inside, linear over one ``edge`` at the border."""
    return np.clip(0.5 + np.asarray(sdf) / edge, 0.0, 1.0)


def _paint(img: np.ndarray, value: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    return img + (value - img) * alpha


def _head_layers(
    subject: SubjectAnatomy, r: np.ndarray, head: np.ndarray, edge: float
) -> np.ndarray:
    """Scalp (skin rim, bright fat) and skull (dark bone with a faint marrow stripe)."""
    _, _, _, fat, bone, _ = subject.intensities
    below = head - r  # depth below the skin
    img = 0.7 * fat * _ramp(below, edge)
    img = _paint(img, fat, _ramp(below - 0.3 * subject.scalp, edge))
    img = _paint(img, bone, _ramp(below - subject.scalp, edge))
    marrow = np.abs(below - subject.scalp - 0.5 * subject.bone) - 0.15 * subject.bone
    return _paint(img, 0.45 * fat, 0.6 * _ramp(-marrow, edge))


def _bias_field(subject: SubjectAnatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    bx, by, bxy, bxx, byy = subject.bias
    return np.exp(bx * x + by * y + bxy * x * y + bxx * (x * x - 0.33) + byy * (y * y - 0.33))


def _rician_uint8(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, rounded to 8 bits."""
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(real, imag)), 0, 255).astype(np.uint8)
