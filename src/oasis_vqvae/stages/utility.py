"""Stage utility: does synthetic data help a classifier of a subject label (e.g. CDR > 0).

The same small CNN (:mod:`oasis_vqvae.classifier`), with the same steps and seeds, is trained
in four arms and always scored on the real test split:

* ``real``: the real training slices;
* ``tstr``: synthetic slices only (train on synthetic, test on real), as many as the real ones;
* ``real_synthetic``: the real slices plus ``synthetic_ratio`` synthetic slices per real one;
* ``real_augmented``: the real slices with classic augmentation (flips, affine, intensity).

The low-data curve repeats ``real``, ``real_synthetic`` and ``real_augmented`` on seeded,
class-stratified subsets of the training *subjects* (``utility.real_fractions``). Scores:
slice- and subject-level AUC (a subject's score is the mean of its slices') and balanced
accuracy, averaged over the seeds, with 95% intervals from a bootstrap over test subjects
(:mod:`oasis_vqvae.scoring`); paired differences between arms share the replicates.

Before any training, the leakage guards check from the files (not from assumptions) that no
subject is in two splits, that the codes the PixelCNN learned from were extracted from this
very dataset (``codes.json`` ``dataset_hash``), and that every subject the PixelCNN trained
on (``train_conditions.csv`` of the codes and of the PixelCNN) is a training subject, so the
samples come from models that never saw a test subject.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oasis_vqvae import report, scoring, tracking
from oasis_vqvae.config import Params, UtilityConfig
from oasis_vqvae.data.conditions import condition_specs, load_conditions
from oasis_vqvae.data.shards import SPLITS, load_images, read_manifest
from oasis_vqvae.errors import ConfigError, DataError
from oasis_vqvae.stages.common import SAMPLES_DATASET_DIR, TRAIN_CONDITIONS_FILE, write_metrics
from oasis_vqvae.stages.extract_codes import conditions_file, read_codes_manifest
from oasis_vqvae.storage import atomic_directory

log = logging.getLogger(__name__)

ARMS = ("real", "tstr", "real_synthetic", "real_augmented")
CURVE_ARMS = ("real", "real_synthetic", "real_augmented")
ARM_NAMES = {
    "real": "real only",
    "tstr": "synthetic only (TSTR)",
    "real_synthetic": "real + synthetic",
    "real_augmented": "real + classic augmentation",
}
FIGURE = "utility_curve.png"
CURVE = "curve.csv"
REPORT = "report.html"
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Task:
    """What the classifier predicts: class index of a target value."""

    target: str
    threshold: float | None
    values: tuple[Any, ...]
    """Multi-class: the target's categorical values, one class each; binary: empty."""
    names: tuple[str, ...]
    """Class names, for the report."""

    def label(self, value: Any) -> int | None:
        """Class index of one value; None if the value is missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.threshold is not None:
            return int(float(value) > self.threshold)
        if value not in self.values:
            raise DataError(f"utility.target: value {value!r} is not among {list(self.values)}")
        return self.values.index(value)


@dataclass(frozen=True)
class Slices:
    """Labelled slices of one split: images ``(N, s, s)`` uint8, labels and subjects ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray

    def take(self, mask: np.ndarray) -> Slices:
        """The slices where ``mask`` ``(N,)`` is true."""
        return Slices(self.images[mask], self.labels[mask], self.subjects[mask])


def utility(
    params: Params,
    data: str | Path,
    codes: str | Path,
    pixelcnn: str | Path,
    samples: str | Path,
    out: str | Path,
) -> Path:
    """Train and score the four arms and the low-data curve; write ``out``.

    Reads the real dataset ``data``, the labelled samples ``samples/dataset`` (generate's
    dataset in ingest's format), and for the leakage guards ``codes/codes.json``,
    ``codes/train_conditions.csv`` and ``pixelcnn/train_conditions.csv``. ``out`` gets
    ``metrics.json``, ``curve.csv`` (AUC per real fraction and arm), ``utility_curve.png``
    and ``report.html``. Metric names are listed in the README (section Utility).
    """
    cfg, data, out = params.utility, Path(data), Path(out)
    synthetic_dir = Path(samples) / SAMPLES_DATASET_DIR
    manifest, synthetic_manifest = read_manifest(data), read_manifest(synthetic_dir)
    task = make_task(cfg, condition_specs(manifest), condition_specs(synthetic_manifest))
    checks = check_leakage(data, manifest, Path(codes), Path(pixelcnn), synthetic_dir)
    train = load_labelled(data, "train", task, cfg.image_size)
    test = load_labelled(data, "test", task, cfg.image_size)
    synthetic = load_labelled(synthetic_dir, "train", task, cfg.image_size)
    check_classes(task, train, test, synthetic, data, synthetic_dir)
    subsets = subject_subsets(cfg, task, train)
    with tracking.stage_run("utility", params, blocks=("utility",), join_finished=True) as run:
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        scores, used = train_arms(cfg, task, train, synthetic, test, subsets)
        values, curve = summarise(cfg, task, scores, test)
        values |= counts(train, test, synthetic, used, task)
        with atomic_directory(out) as tmp:
            write_metrics(tmp, values)
            curve.to_csv(tmp / CURVE, index=False)
            plot_curve(curve, values, task, tmp / FIGURE)
            write_report(tmp, values, curve, task, checks, cfg)
        run.log_metrics(values)
        run.log_artifacts(out / FIGURE, out / CURVE, out / REPORT)
        if run.started_pipeline:  # only utility ran: nothing else will end the parent run
            run.finish_pipeline(values)
        else:
            run.log_pipeline_metrics(values)
    log.info(
        "utility: AUC real %.3f, TSTR %.3f (%.2f of real), real+synthetic %.3f -> %s",
        values["auc_real"], values["auc_tstr"], values["tstr_over_real"],
        values["auc_real_synthetic"], out,
    )  # fmt: skip
    return out


# --- the task and the data -----------------------------------------------------------------------


def make_task(cfg: UtilityConfig, real: dict[str, Any], synthetic: dict[str, Any]) -> Task:
    """The classification task of ``utility.target`` / ``threshold`` given both datasets' specs."""
    name = cfg.target
    if name not in real:
        raise ConfigError(
            f"utility.target: {name!r} is not a condition of the real dataset; "
            f"it has {sorted(real)}"
        )
    if name not in synthetic:
        raise ConfigError(
            f"utility.target: {name!r} is not a condition of the samples (they have "
            f"{sorted(synthetic)}); condition the PixelCNN on it (pixelcnn.conditions)"
        )
    spec = real[name]
    if cfg.threshold is not None:
        values = spec.get("values", [])
        if spec["kind"] == "categorical" and not all(_is_number(v) for v in values):
            raise ConfigError(
                f"utility.threshold: {name} has non-numeric values {values}; set it to null "
                "(one class per value)"
            )
        edge = f"{cfg.threshold:g}"
        return Task(name, cfg.threshold, (), (f"{name} <= {edge}", f"{name} > {edge}"))
    if spec["kind"] != "categorical":
        raise ConfigError(
            f"utility.threshold: the continuous target {name} needs a threshold, got null"
        )
    values = tuple(spec["values"])
    if len(values) < 2:
        raise ConfigError(f"utility.target: {name} has {len(values)} value(s), need 2 or more")
    return Task(name, None, values, tuple(f"{name} = {v}" for v in values))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_labelled(dataset: Path, split: str, task: Task, image_size: int) -> Slices:
    """The slices of ``split`` whose subject has a ``task.target`` value, pooled to ``image_size``.

    Slices without a value are left out (logged); ``image_size`` 0 keeps the stored side.
    """
    conditions = load_conditions(dataset, split)
    images = load_images(dataset, split)
    if len(images) != len(conditions):
        raise DataError(f"{dataset}: {split} has {len(images)} images, {len(conditions)} records")
    labels = [task.label(value) for value in conditions[task.target].tolist()]
    known = np.array([label is not None for label in labels], bool)
    if not known.all():
        log.info("utility: %s %s: %d slices without %s left out", dataset, split,
                 int((~known).sum()), task.target)  # fmt: skip
    slices = Slices(
        pool(images, image_size),
        np.array([label if label is not None else -1 for label in labels], np.int64),
        conditions["subject"].to_numpy(dtype=str),
    )
    return slices.take(known)


def pool(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, S, S)`` uint8 -> ``(N, size, size)`` uint8 by block averaging (``S`` a multiple)."""
    side = images.shape[1]
    if size == 0 or size == side:
        return images
    if size > side or side % size:
        raise ConfigError(f"utility.image_size: {size} must divide the slices' side {side}")
    factor = side // size
    blocks = images.reshape(len(images), size, factor, size, factor).astype(np.float32)
    return np.clip(np.rint(blocks.mean(axis=(2, 4))), 0, 255).astype(np.uint8)


def class_counts(task: Task, slices: Slices) -> str:
    """``name: S subjects, N slices`` per class, for error messages."""
    parts = []
    for k, name in enumerate(task.names):
        members = slices.labels == k
        subjects = len(np.unique(slices.subjects[members]))
        parts.append(f"{name}: {subjects} subjects, {int(members.sum())} slices")
    return "; ".join(parts)


def check_classes(
    task: Task, train: Slices, test: Slices, synthetic: Slices, data: Path, samples: Path
) -> None:
    """Every class must be present in the real training and test splits and in the samples."""
    for slices, where in (
        (test, f"the test split of {data}"),
        (train, f"the train split of {data}"),
        (synthetic, f"the samples {samples}"),
    ):
        present = np.unique(slices.labels)
        if len(present) < len(task.names):
            raise DataError(
                f"utility.target: {where} has {len(present)} of {len(task.names)} classes of "
                f"{task.target} ({class_counts(task, slices)}); AUC needs every class"
            )


def subject_subsets(
    cfg: UtilityConfig, task: Task, train: Slices
) -> dict[tuple[float, int], np.ndarray]:
    """Training subjects kept at each (fraction, seed): per class, round(fraction x count).

    A class left without subjects is an error naming the fraction and the counts.
    """
    subjects, first = np.unique(train.subjects, return_index=True)
    labels = train.labels[first]  # a subject's class: its attribute (same on all its slices)
    by_class = [subjects[labels == k] for k in range(len(task.names))]
    subsets = {}
    for fraction in cfg.real_fractions:
        kept = [math.floor(fraction * len(members) + 0.5) for members in by_class]
        if min(kept) == 0:
            counts = ", ".join(
                f"{name}: {len(m)} -> {k}"
                for name, m, k in zip(task.names, by_class, kept, strict=True)
            )
            raise ConfigError(
                f"utility.real_fractions: {fraction:g} of the training subjects leaves a class "
                f"without subjects ({counts})"
            )
        for seed in cfg.seeds:
            rng = np.random.default_rng([seed, round(fraction * 1_000_000)])
            chosen = [rng.permutation(m)[:k] for m, k in zip(by_class, kept, strict=True)]
            subsets[fraction, seed] = np.sort(np.concatenate(chosen))
    return subsets


# --- training ------------------------------------------------------------------------------------


Scores = dict[tuple[str, float, int], np.ndarray]
"""(arm, real fraction, seed) -> class probabilities ``(test slices, classes)``."""


def train_arms(
    cfg: UtilityConfig,
    task: Task,
    train: Slices,
    synthetic: Slices,
    test: Slices,
    subsets: dict[tuple[float, int], np.ndarray],
) -> tuple[Scores, dict[str, int]]:
    """Train every arm at every fraction and seed.

    Returns the test probabilities and how many synthetic slices the TSTR and the real +
    synthetic arms got at the full real set.
    """
    from oasis_vqvae.classifier import Augmentation, Classifier
    from oasis_vqvae.progress import tqdm

    classifier = Classifier(
        train.images.shape[1], len(task.names), filters=cfg.filters, learning_rate=cfg.learning_rate
    )
    augment = Augmentation(**cfg.augment.model_dump())
    scores: Scores = {}
    used = {"tstr": 0, "real_synthetic": 0}
    runs = [(f, s) for f in cfg.real_fractions for s in cfg.seeds]
    with tqdm(total=len(runs) * 3 + len(cfg.seeds), desc="utility", unit="model") as bar:
        for fraction, seed in runs:
            real = train.take(np.isin(train.subjects, subsets[fraction, seed]))
            arms: dict[str, tuple[Slices, Callable | None]] = {
                "real": (real, None),
                "real_synthetic": (
                    concat(real, draw(synthetic, cfg.synthetic_ratio * len(real.labels), seed)),
                    None,
                ),
                "real_augmented": (real, augment),
            }
            if fraction == 1.0:
                arms["tstr"] = (draw(synthetic, len(real.labels), seed), None)
                used["tstr"] = len(arms["tstr"][0].labels)
                used["real_synthetic"] = len(arms["real_synthetic"][0].labels) - len(real.labels)
            for arm, (slices, transform) in arms.items():
                classifier.fit(
                    slices.images, slices.labels, steps=cfg.steps, batch_size=cfg.batch_size,
                    seed=seed, augment=transform,
                )  # fmt: skip
                scores[arm, fraction, seed] = classifier.predict_proba(test.images)
                bar.update()
    return scores, used


def draw(slices: Slices, count: float, seed: int) -> Slices:
    """A seeded subset of ``round(count)`` slices (all of them, with a warning, if fewer)."""
    wanted = round(count)
    if wanted > len(slices.labels):
        log.warning("utility: %d synthetic slices wanted, %d generated: all used; raise "
                    "generate.count", wanted, len(slices.labels))  # fmt: skip
    count = min(wanted, len(slices.labels))
    chosen = np.random.default_rng([seed, 2]).permutation(len(slices.labels))[:count]
    return slices.take(np.sort(chosen))


def concat(first: Slices, second: Slices) -> Slices:
    """Both sets of slices, ``first`` first."""
    return Slices(
        np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        np.concatenate([first.subjects, second.subjects]),
    )


# --- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrapped:
    """One measure of one arm: the seed-mean estimate, its replicates and the seeds' spread."""

    value: float
    replicates: np.ndarray
    seed_std: float

    def named(self, key: str) -> dict[str, float]:
        """``{key: value, key_low: ..., key_high: ...}`` (95% percentile interval)."""
        low, high = scoring.interval(self.replicates)
        return {key: self.value, f"{key}_low": low, f"{key}_high": high}


def summarise(
    cfg: UtilityConfig, task: Task, scores: Scores, test: Slices
) -> tuple[dict[str, float], Any]:
    """Flat metrics and the curve table (one row per real fraction) from the test scores."""
    import pandas as pd

    subject_names, subject_index = np.unique(test.subjects, return_inverse=True)
    weights = scoring.subject_bootstrap(len(subject_names), cfg.bootstrap, BOOTSTRAP_SEED)
    slice_weights = weights[:, subject_index]
    subject_labels = np.zeros(len(subject_names), np.int64)
    subject_labels[subject_index] = test.labels

    def measure(arm: str, fraction: float) -> dict[str, Bootstrapped]:
        per_seed: dict[str, list[np.ndarray]] = {}
        for seed in cfg.seeds:
            probs = scores[arm, fraction, seed]
            by_subject = np.zeros((len(subject_names), probs.shape[1]))
            np.add.at(by_subject, subject_index, probs)
            by_subject /= np.bincount(subject_index)[:, None]
            for key, values in (
                ("auc", scoring.multiclass_auc(probs, test.labels, slice_weights)),
                ("subject_auc", scoring.multiclass_auc(by_subject, subject_labels, weights)),
                ("balanced_accuracy", scoring.balanced_accuracy(probs, test.labels, slice_weights)),
                (
                    "subject_balanced_accuracy",
                    scoring.balanced_accuracy(by_subject, subject_labels, weights),
                ),
            ):
                per_seed.setdefault(key, []).append(values)
        return {
            key: Bootstrapped(
                float(np.mean([v[0] for v in runs])),
                np.mean([v[1:] for v in runs], axis=0),
                float(np.std([v[0] for v in runs])),
            )
            for key, runs in per_seed.items()
        }

    values: dict[str, float] = {}
    full = {arm: measure(arm, 1.0) for arm in ARMS}
    for arm, measures in full.items():
        for key, result in measures.items():
            values |= result.named(f"{key}_{arm}")
        values[f"auc_{arm}_seed_std"] = measures["auc"].seed_std
    for level in ("auc", "subject_auc"):
        real, tstr = full["real"][level], full["tstr"][level]
        suffix = "" if level == "auc" else "_subject"
        with np.errstate(divide="ignore", invalid="ignore"):  # AUC 0: inf, left out
            replicates = tstr.replicates / real.replicates
        point = tstr.value / real.value if real.value else float("nan")
        ratio = Bootstrapped(point, replicates, 0.0)
        values |= ratio.named(f"tstr_over_real{suffix}")
    rows = []
    for fraction in cfg.real_fractions:
        at = {arm: full[arm] if fraction == 1.0 else measure(arm, fraction) for arm in CURVE_ARMS}
        tag = fraction_tag(fraction)
        row: dict[str, float] = {"real_fraction": fraction}
        for arm in CURVE_ARMS:
            named = at[arm]["auc"].named(f"auc_{arm}")
            row |= named | at[arm]["subject_auc"].named(f"subject_auc_{arm}")
            values |= at[arm]["auc"].named(f"auc_{arm}_at_{tag}")
        for key, better, worse in (
            ("gain_synthetic", "real_synthetic", "real"),
            ("gain_augmented", "real_augmented", "real"),
            ("gain_synthetic_vs_augmented", "real_synthetic", "real_augmented"),
        ):
            a, b = at[better]["auc"], at[worse]["auc"]
            gain = Bootstrapped(a.value - b.value, a.replicates - b.replicates, 0.0)
            values |= gain.named(f"{key}_at_{tag}")
            row |= gain.named(key)
        rows.append(row)
    return values, pd.DataFrame(rows)


def fraction_tag(fraction: float) -> str:
    """``0.25`` -> ``"25pct"``, ``0.125`` -> ``"12_5pct"`` (metric-name safe)."""
    return f"{fraction * 100:g}".replace(".", "_") + "pct"


def counts(
    train: Slices, test: Slices, synthetic: Slices, used: dict[str, int], task: Task
) -> dict[str, float]:
    """Sizes behind the scores."""
    return {
        "classes": len(task.names),
        "train_subjects": len(np.unique(train.subjects)),
        "train_slices": len(train.labels),
        "test_subjects": len(np.unique(test.subjects)),
        "test_slices": len(test.labels),
        "synthetic_slices": len(synthetic.labels),
        "synthetic_slices_tstr": used["tstr"],
        "synthetic_slices_real_synthetic": used["real_synthetic"],
    }


# --- leakage guards ------------------------------------------------------------------------------


def check_leakage(
    data: Path, manifest: dict[str, Any], codes: Path, pixelcnn: Path, synthetic: Path
) -> list[str]:
    """Raise DataError at the first sign that test subjects reached the generative models.

    Returns the checks that passed, in words (for the report).
    """
    splits = {split: set(manifest["subjects"][split]) for split in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            shared = sorted(splits[first] & splits[second])
            if shared:
                raise DataError(
                    f"{data}/manifest.json: subject {shared[0]} is in both the {first} and "
                    f"{second} splits ({len(shared)} shared)"
                )
    for split in SPLITS:
        recorded = set(load_conditions(data, split)["subject"])
        if not recorded <= splits[split]:
            stray = sorted(recorded - splits[split])[0]
            raise DataError(f"{data}: a {split} record's subject {stray} is not a {split} subject")
    checks = ["no subject is in two splits (manifest and records)"]
    codes_manifest = read_codes_manifest(codes)
    if codes_manifest.get("dataset_hash") != manifest["content_hash"]:
        raise DataError(
            f"{codes}/codes.json: dataset_hash {codes_manifest.get('dataset_hash')} is not "
            f"{data}'s {manifest['content_hash']}: the generative models learned from another "
            "dataset; rerun the pipeline on this one"
        )
    checks.append("the codes (the PixelCNN's training data) were extracted from this dataset")
    for table in (codes / conditions_file("train"), pixelcnn / TRAIN_CONDITIONS_FILE):
        check_training_subjects(table, splits, data)
        checks.append(f"every subject in {table.parent.name}/{table.name} is a training subject")
    synthetic_manifest = read_manifest(synthetic)
    kind = synthetic_manifest.get("source", {}).get("kind")
    if kind != "generated":
        raise DataError(f"{synthetic}: source kind {kind!r}, expected 'generated' samples")
    real_subjects = set().union(*splits.values())
    for split in SPLITS:
        for subject in synthetic_manifest["subjects"][split]:
            if subject in real_subjects:
                raise DataError(
                    f"{synthetic}/manifest.json: sample subject {subject} is a real subject of "
                    f"{data}; the samples must be generated"
                )
    checks.append("the samples are generated (no real subject among them)")
    return checks


def check_training_subjects(table: Path, splits: dict[str, set[str]], data: Path) -> None:
    """Every subject of a training-conditions table must be a training subject of ``data``."""
    import pandas as pd

    if not table.exists():
        raise DataError(f"{table}: missing; rerun the stage that writes it (interface item 2/3)")
    try:
        subjects = pd.read_csv(table, usecols=["subject"], dtype={"subject": str})["subject"]
    except ValueError:  # pandas: usecols names a missing column
        raise DataError(f"{table}: no 'subject' column; rerun the stage that writes it") from None
    for row, subject in enumerate(subjects, start=2):  # row 1 is the header
        if subject not in splits["train"]:
            where = next((s for s in SPLITS if subject in splits[s]), None)
            found = f"a {where} subject" if where else "not a subject"
            raise DataError(
                f"{table} row {row}: subject {subject} is {found} of {data}; the generative "
                "models must learn from the training split only"
            )


# --- figure and report ---------------------------------------------------------------------------


def plot_curve(curve: Any, values: dict[str, float], task: Task, path: Path) -> Path:
    """AUC against the share of real training subjects: a line and 95% band per arm.

    TSTR is one point, at the full set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = curve["real_fraction"] * 100
    for arm in CURVE_ARMS:
        line = ax.plot(x, curve[f"auc_{arm}"], marker="o", label=ARM_NAMES[arm])[0]
        ax.fill_between(
            x, curve[f"auc_{arm}_low"], curve[f"auc_{arm}_high"], color=line.get_color(), alpha=0.15
        )
    low, high = values["auc_tstr_low"], values["auc_tstr_high"]
    tstr = values["auc_tstr"]
    ax.errorbar([100], [tstr], yerr=[[tstr - low], [high - tstr]], fmt="s", color="black",
                capsize=4, label=ARM_NAMES["tstr"])  # fmt: skip
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("real training subjects kept (%)")
    ax.set_ylabel("test AUC (slices)")
    ax.set_title(f"Classifying {' vs '.join(task.names)}: mean of seeds, 95% bootstrap bands")
    ax.title.set_fontsize(9)
    lows = [float(curve[f"auc_{arm}_low"].min()) for arm in CURVE_ARMS] + [low]
    ax.set_ylim(min(0.4, min(lows) - 0.02), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    out: Path,
    values: dict[str, float],
    curve: Any,
    task: Task,
    checks: Sequence[str],
    cfg: UtilityConfig,
) -> Path:
    """``out/report.html``: verdicts, the arms with intervals, the curve, the leakage checks."""
    sections = [
        ("Verdict", "".join(report.paragraph(line) for line in verdicts(values, cfg))),
        ("Arms at the full real training set", arms_table(values)),
        ("Low-data curve", report.figure(out / FIGURE, curve_note(cfg))),
        ("Leakage guards (all passed)", report.paragraph("; ".join(checks) + ".")),
        ("All metrics", report.metrics_table(values)),
    ]
    setup = (
        f"Task: {' vs '.join(task.names)}. One small CNN (stride-2 convolutions {list(cfg.filters)}"
        f", {cfg.image_size or 'stored'} px), {cfg.steps} steps of {cfg.batch_size}, seeds "
        f"{list(cfg.seeds)}; scored on the real test split only ({int(values['test_subjects'])} "
        f"subjects, {int(values['test_slices'])} slices)."
    )
    return report.write_report(out / REPORT, "Downstream utility of the synthetic slices", sections,
                               notes=setup)  # fmt: skip


def verdicts(values: dict[str, float], cfg: UtilityConfig) -> list[str]:
    """Plain sentences: TSTR against real, and what synthetic data adds at each real fraction."""
    lines = [
        f"Synthetic only (TSTR) reaches {values['tstr_over_real']:.2f} of the real-only AUC "
        f"(95% interval {values['tstr_over_real_low']:.2f} to {values['tstr_over_real_high']:.2f}"
        f"; AUC {values['auc_tstr']:.3f} against {values['auc_real']:.3f})."
    ]
    for fraction in cfg.real_fractions:
        tag = fraction_tag(fraction)
        lines.append(
            f"With {fraction:.0%} of the real training subjects: "
            f"{describe_gain(values, f'gain_synthetic_at_{tag}', 'real-only')}; "
            + describe_gain(values, f"gain_synthetic_vs_augmented_at_{tag}", "classic augmentation")
            + "."
        )
    return lines


def describe_gain(values: dict[str, float], key: str, baseline: str) -> str:
    """``real + synthetic adds +0.031 AUC over X [-0.01, 0.07]: not a clear difference``."""
    gain, low, high = values[key], values[f"{key}_low"], values[f"{key}_high"]
    verdict = "a clear gain" if low > 0 else "a clear loss" if high < 0 else "no clear difference"
    return (
        f"real + synthetic {gain:+.3f} AUC against {baseline} "
        f"(95% interval {low:+.3f} to {high:+.3f}: {verdict})"
    )


def arms_table(values: dict[str, float]) -> str:
    """HTML table: one row per arm, AUC and balanced accuracy with intervals."""
    import html

    columns = ("auc", "subject_auc", "balanced_accuracy", "subject_balanced_accuracy")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in ("arm", *columns))
    rows = []
    for arm in ARMS:
        cells = "".join(
            f"<td class=value>{values[f'{c}_{arm}']:.3f} "
            f"[{values[f'{c}_{arm}_low']:.3f}, {values[f'{c}_{arm}_high']:.3f}]</td>"
            for c in columns
        )
        rows.append(f"<tr><th>{html.escape(ARM_NAMES[arm])}</th>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def curve_note(cfg: UtilityConfig) -> str:
    """Caption of the curve figure."""
    return (
        "Test AUC (slice level) against the share of real training subjects kept (seeded, per "
        "class), mean of the seeds; bands: 95% bootstrap intervals over test subjects. "
        f"Real + synthetic adds {cfg.synthetic_ratio:g} synthetic slice(s) per real slice."
    )
