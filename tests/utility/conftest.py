"""Fabricated inputs of the utility stage: a real dataset, labelled samples, codes, a PixelCNN dir.

Images are the synthetic source's brain-like slices with a label-driven feature painted in:
subjects with CDR > 0 get a large dark central region (like enlarged ventricles), the others
a small one, with per-subject jitter, so a classifier has something real to learn. The
files follow the conditions interface (CONDITIONS_INTERFACE.md): manifest ``conditions`` and
``subject_metadata``; the samples as a dataset of one-slice subjects ``sample-NNNN``, all in
the train split; ``train_conditions.csv`` beside the codes and beside the PixelCNN.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oasis_vqvae.data.shards import (
    MANIFEST,
    SPLITS,
    DatasetWriter,
    Record,
    content_hash,
    encode_example,
)
from oasis_vqvae.data.synthetic import generate_subject_slices

SIZE = 16
CDR_VALUES = [0.0, 0.5, 1.0]
CONDITIONS = {
    "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
    "age": {"kind": "continuous", "range": [60.0, 90.0], "counts": {}},
    "cdr": {"kind": "categorical", "values": CDR_VALUES, "counts": {}},
    "sex": {"kind": "categorical", "values": ["F", "M"], "counts": {}},
}


def labelled_slices(seed: int, number: int, cdr: float, slices: int, size: int) -> np.ndarray:
    """``(slices, size, size)`` uint8 brain-like slices with a CDR-driven dark centre."""
    images = generate_subject_slices(seed, number, slices, size).astype(np.float32)
    rng = np.random.default_rng([seed, number, 7])
    radius = (0.32 if cdr > 0 else 0.14) + rng.uniform(-0.05, 0.05)
    axis = np.linspace(-1, 1, size)
    inside = np.hypot(*np.meshgrid(axis, axis)) < radius
    images[:, inside] = 25.0
    return images.astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def record(split: str, subject: str, index: int, image: np.ndarray, level=None) -> Record:
    return Record(split, subject, index, png(image), int(image.min()), int(image.max()),
                  slice_level=level)  # fmt: skip


def metadata(number: int, cdr: float) -> dict:
    return {"age": 60.0 + number % 30, "cdr": cdr, "sex": "FM"[number % 2]}


@dataclass
class Fabricated:
    """Paths of the fabricated inputs and the subjects behind them."""

    data: Path
    codes: Path
    pixelcnn: Path
    samples: Path
    splits: dict[str, list[str]] = field(default_factory=dict)

    def args(self) -> dict[str, Path]:
        return {"data": self.data, "codes": self.codes, "pixelcnn": self.pixelcnn,
                "samples": self.samples}  # fmt: skip


def cdr_of(number: int) -> float:
    """Subject ``number``'s CDR: alternating healthy and demented, some very mild."""
    return 0.0 if number % 2 == 0 else (0.5 if number % 4 == 1 else 1.0)


def write_real(directory: Path, counts: dict[str, int], slices: int, size: int) -> dict:
    """A real dataset of ``counts[split]`` subjects per split; returns the subject lists."""
    directory.mkdir(parents=True)
    splits, meta, number = {}, {}, 0
    with DatasetWriter(directory, image_size=size, images_per_shard=64, segmentation=False) as w:
        for split in SPLITS:
            splits[split] = []
            for _ in range(counts[split]):
                number += 1
                subject = f"OAS1_{number:04d}"
                splits[split].append(subject)
                meta[subject] = metadata(number, cdr_of(number))
                for i, image in enumerate(labelled_slices(1, number, cdr_of(number), slices, size)):
                    w.add(record(split, subject, i, image))
        w.finish(
            source={"kind": "fabricated"}, skipped=[], subject_metadata=meta, conditions=CONDITIONS
        )
    return splits


def write_samples(directory: Path, count: int, size: int, labels: list[dict] | None = None) -> None:
    """Generate's labelled samples: one-slice subjects ``sample-NNNN``, all in ``train``.

    Written by hand: today's DatasetWriter refuses empty validate / test splits.
    """
    dataset = directory / "dataset"
    dataset.mkdir(parents=True)
    import tensorflow as tf

    meta, subjects, rows = {}, [], []
    name = "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(dataset / name)) as writer:
        for index in range(count):
            subject = f"sample-{index:04d}"
            values = labels[index] if labels else metadata(500 + index, cdr_of(index))
            image = labelled_slices(2, 500 + index, values["cdr"], 1, size)[0]
            writer.write(encode_example(record("train", subject, 0, image, 0.5),
                                        segmentation=False, slice_level=True))  # fmt: skip
            Image.fromarray(image).save(directory / f"sample_{index:04d}.png")
            meta[subject] = values
            subjects.append(subject)
            rows.append({"file": f"sample_{index:04d}.png", **values})
    shards = {"train": [name], "validate": [], "test": []}
    manifest = {
        "format_version": 1,
        "source": {"kind": "generated", "vqvae": "models/vqvae", "pixelcnn": "models/pixelcnn"},
        "image_shape": [size, size, 1], "dtype": "uint8", "value_range": [0, 255],
        "segmentation": False,
        "counts": {"train": count, "validate": 0, "test": 0},
        "shards": shards,
        "subjects": {"train": subjects, "validate": [], "test": []},
        "subject_metadata": meta,
        "conditions": {k: v for k, v in CONDITIONS.items() if k in ("slice_level", "cdr", "age")},
        "skipped": {"count": 0, "files": []},
        "features": {"image": "png", "subject": "bytes", "slice": "int64", "slice_level": "float"},
        "content_hash": content_hash(dataset, shards),
    }  # fmt: skip
    (dataset / MANIFEST).write_text(json.dumps(manifest, indent=2))
    pd.DataFrame(rows).to_csv(directory / "labels.csv", index=False)


def write_generative(codes: Path, pixelcnn: Path, data: Path, train: list[str]) -> None:
    """What the leakage guards read of extract-codes' and train-pixelcnn's outputs."""
    manifest = json.loads((data / MANIFEST).read_text())
    codes.mkdir(parents=True)
    pixelcnn.mkdir(parents=True)
    (codes / "codes.json").write_text(json.dumps({"dataset_hash": manifest["content_hash"]}))
    table = pd.DataFrame({"subject": train, "cdr": [manifest["subject_metadata"][s]["cdr"]
                                                    for s in train]})  # fmt: skip
    table.to_csv(codes / "train_conditions.csv", index=False)
    table.to_csv(pixelcnn / "train_conditions.csv", index=False)


def fabricate(root: Path, counts=None, slices=4, samples=64, size=SIZE) -> Fabricated:
    """All four inputs under ``root``."""
    counts = counts or {"train": 12, "validate": 2, "test": 6}
    made = Fabricated(root / "dataset", root / "codes", root / "pixelcnn", root / "samples")
    made.splits = write_real(made.data, counts, slices, size)
    write_samples(made.samples, samples, size)
    write_generative(made.codes, made.pixelcnn, made.data, made.splits["train"])
    return made


@pytest.fixture(scope="session")
def fabricated(tmp_path_factory) -> Fabricated:
    """Shared read-only inputs (tests that change files make their own)."""
    return fabricate(tmp_path_factory.mktemp("utility-inputs"))


TINY = [
    "utility.steps=30",
    "utility.batch_size=16",
    "utility.filters=[8, 8]",
    "utility.image_size=0",
    "utility.bootstrap=200",
    "utility.real_fractions=[0.5, 1.0]",
    "tracking.enabled=false",
]


@pytest.fixture(scope="session")
def utility_params():
    """Factory of validated tiny params for the utility stage."""
    from oasis_vqvae.config import load_params

    repo = Path(__file__).resolve().parents[2]
    return lambda *extra: load_params(repo / "params.yaml", [*TINY, *extra])
