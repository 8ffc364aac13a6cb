"""The ingested dataset on disk: TFRecord shards plus ``manifest.json``; writer and tf.data reader.

Layout of a dataset directory (local, or gs:// for reading)::

    manifest.json
    train-00000-of-00003.tfrecord      at most data.images_per_shard examples per shard
    validate-00000-of-00001.tfrecord
    test-00000-of-00001.tfrecord

Every record is a ``tf.train.Example`` with the features

* ``image``: PNG bytes of one slice, 8-bit grayscale, H x W (the manifest's ``image_shape``);
* ``subject``: subject id as UTF-8 bytes (``OAS-case-001``, ``OAS1_0001``);
* ``slice``: int64 slice index within the subject;
* ``segmentation``: PNG bytes of the slice's mask, H x W (only when ingested with masks);
* ``slice_level``: float, the slice's position in its subject's stack in [0, 1] (only in
  datasets written with explicit levels, e.g. generated samples; otherwise
  `oasis_vqvae.data.conditions` derives it from the slice's rank).

Records are ordered by split, subject and slice, so the same input gives byte-identical shards.

``manifest.json`` holds ``format_version``; ``source`` (kind, location, parameters);
``image_shape`` [H, W, 1] and ``dtype`` uint8; ``value_range`` [min, max] over all stored
pixels; ``segmentation``; per split ``counts``, ``shards`` and ``subjects``;
``subject_metadata`` (each subject's attributes under canonical names, missing as null:
`oasis_vqvae.data.labels`); ``conditions`` (each attribute's kind, values or range and
counts per split: `oasis_vqvae.data.conditions`); ``skipped`` (count and
path + reason of each skipped file); ``features``; and ``content_hash``: ``sha256:`` over the
shards in split then index order, each preceded by ``SPLIT-IIIII`` and a NUL byte
(:func:`content_hash` recomputes it). No timestamps: it is as deterministic as the shards.

TensorFlow, NumPy and the storage helpers are imported inside the functions that need them:
the decoding worker processes import this module (for :class:`Record` and :class:`BadFile`)
and start faster without them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from oasis_vqvae.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

SPLITS: tuple[str, str, str] = ("train", "validate", "test")
"""Split names, in the order they are written and listed."""
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SHUFFLE_BUFFER = 2048
"""Serialized records held by the shuffle buffer (PNG bytes, so small even at 256 x 256)."""


class Record(NamedTuple):
    """One slice ready to store, as returned by the decoding workers."""

    split: str
    subject: str
    slice: int
    image: bytes
    """PNG bytes, 8-bit grayscale, image_size x image_size."""
    low: int
    """Smallest pixel value of the stored image."""
    high: int
    """Largest pixel value of the stored image."""
    segmentation: bytes | None = None
    """PNG bytes of the mask, same size as the image; None unless masks are ingested."""
    slice_level: float | None = None
    """Position in the subject's stack, [0, 1]; None unless the dataset stores levels."""


class BadFile(NamedTuple):
    """An input file that cannot be used; ``path`` is relative to the source location."""

    path: str
    reason: str


class _ShardHasher:
    """The content hash, computed in a background thread as shards are closed.

    sha256 over every shard in order (splits in SPLITS order, shards by index), each
    preceded by its label ``SPLIT-IIIII`` and a NUL byte. One thread keeps the order;
    hashlib releases the GIL, so hashing overlaps the writing of later shards.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-hash")
        self._pending: list[Future[None]] = []

    def add(self, label: str, path: Path) -> None:
        self._pending.append(self._thread.submit(_hash_file, self._digest, label, path))

    def hexdigest(self) -> str:
        for pending in self._pending:
            pending.result()
        self._thread.shutdown()
        return f"sha256:{self._digest.hexdigest()}"

    def cancel(self) -> None:
        self._thread.shutdown(cancel_futures=True)


def _hash_file(digest: Any, label: str, path: Path) -> None:
    digest.update(label.encode() + b"\0")
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


class _SplitState:
    """What has been written of one split so far."""

    def __init__(self) -> None:
        self.count = 0
        self.shards: list[str] = []
        self.subjects: list[str] = []


class DatasetWriter:
    """Write :class:`Record` s, given in (split, subject, slice) order, into TFRecord shards.

    Shards are written under provisional names and renamed to ``SPLIT-IIIII-of-NNNNN.tfrecord``
    by :meth:`finish`, which also writes ``manifest.json``: the number of good records is only
    known at the end (bad files may be skipped).
    """

    def __init__(
        self,
        directory: Path,
        *,
        image_size: int,
        images_per_shard: int,
        segmentation: bool,
        slice_levels: bool = False,
        allow_empty_splits: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.allow_empty_splits = allow_empty_splits  # e.g. generated samples: train only
        self.image_size = image_size
        self.images_per_shard = images_per_shard
        self.segmentation = segmentation
        self.slice_levels = slice_levels
        self._splits = {split: _SplitState() for split in SPLITS}
        self._split_index = 0
        self._in_shard = 0
        self._writer: Any = None
        self._writing: tuple[str, Path] | None = None
        self._hasher = _ShardHasher()
        self._low, self._high = 255, 0

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_shard()
        self._hasher.cancel()

    @property
    def subjects(self) -> dict[str, list[str]]:
        """Split -> subject ids written so far, in order."""
        return {split: list(state.subjects) for split, state in self._splits.items()}

    def add(self, record: Record) -> None:
        """Append one record; starts a new shard when the split changes or the shard is full."""
        index = SPLITS.index(record.split)
        if index < self._split_index:
            raise ValueError(
                f"records must come in split order {SPLITS}, got {record.split!r} late"
            )
        if self.segmentation and record.segmentation is None:
            raise ValueError(f"record {record.subject}/{record.slice} lacks its segmentation")
        if self.slice_levels and record.slice_level is None:
            raise ValueError(f"record {record.subject}/{record.slice} lacks its slice level")
        state = self._splits[record.split]
        full = self._in_shard == self.images_per_shard
        if index != self._split_index or self._writer is None or full:
            self._split_index = index
            self._open_shard(record.split, state)
        self._writer.write(
            encode_example(record, segmentation=self.segmentation, slice_level=self.slice_levels)
        )
        self._in_shard += 1
        state.count += 1
        if not state.subjects or state.subjects[-1] != record.subject:
            state.subjects.append(record.subject)
        self._low, self._high = min(self._low, record.low), max(self._high, record.high)

    def finish(
        self,
        *,
        source: dict[str, Any],
        skipped: list[BadFile],
        subject_metadata: dict[str, dict[str, Any]] | None = None,
        conditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Close the shards, give them their final names, write and return ``manifest.json``.

        ``conditions`` describes the slice level and subject attributes (see
        `oasis_vqvae.data.conditions`); None: the slice level only.

        Raises:
            DataError: a split ended up without any image (e.g. all its files were skipped),
                unless the writer allows empty splits.
        """
        self._close_shard()
        for split, state in self._splits.items():
            if state.count == 0 and not self.allow_empty_splits:
                raise DataError(f"the {split} split has no usable slices ({len(skipped)} skipped)")
        digest = self._hasher.hexdigest()  # before renaming: the hasher reads the partial files
        for split, state in self._splits.items():
            state.shards = self._rename(split, state.shards)
        shards = {split: state.shards for split, state in self._splits.items()}
        subjects = {split: state.subjects for split, state in self._splits.items()}
        metadata = subject_metadata or {}
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "image_shape": [self.image_size, self.image_size, 1],
            "dtype": "uint8",
            "value_range": [self._low, self._high],
            "segmentation": self.segmentation,
            "counts": {split: state.count for split, state in self._splits.items()},
            "shards": shards,
            "subjects": subjects,
            "subject_metadata": {
                subject: metadata[subject]
                for split in SPLITS
                for subject in subjects[split]
                if subject in metadata
            },
            "conditions": conditions
            or {"slice_level": {"kind": "continuous", "range": [0.0, 1.0]}},
            "skipped": {"count": len(skipped), "files": [bad._asdict() for bad in skipped]},
            "features": _feature_doc(self.segmentation, self.slice_levels),
            "content_hash": digest,
        }
        text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        (self.directory / MANIFEST).write_text(text, encoding="utf-8")
        return manifest

    def _open_shard(self, split: str, state: _SplitState) -> None:
        self._close_shard()
        label = f"{split}-{len(state.shards):05d}"
        path = self.directory / f"{label}.tfrecord.partial"
        state.shards.append(path.name)
        self._writer = _tf().io.TFRecordWriter(str(path))
        self._writing = (label, path)
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._hasher.add(*self._writing)

    def _rename(self, split: str, partial: list[str]) -> list[str]:
        final = [f"{split}-{i:05d}-of-{len(partial):05d}.tfrecord" for i in range(len(partial))]
        for old, new in zip(partial, final, strict=True):
            os.replace(self.directory / old, self.directory / new)
        return final


def encode_example(record: Record, *, segmentation: bool, slice_level: bool = False) -> bytes:
    """Serialize one record as a ``tf.train.Example`` (deterministic byte order)."""
    example = _example_class()()  # tf.train.Example, without TensorFlow's per-call overhead
    feature = example.features.feature
    feature["image"].bytes_list.value.append(record.image)
    feature["subject"].bytes_list.value.append(record.subject.encode("utf-8"))
    feature["slice"].int64_list.value.append(record.slice)
    if segmentation:
        feature["segmentation"].bytes_list.value.append(record.segmentation)
    if slice_level:
        feature["slice_level"].float_list.value.append(record.slice_level)
    return example.SerializeToString(deterministic=True)  # map order fixed: same bytes each run


@functools.cache
def _example_class() -> Any:
    from tensorflow.core.example.example_pb2 import Example

    return Example


def content_hash(dataset_dir: str | Path, shards: dict[str, list[str]]) -> str:
    """Recompute the manifest's ``content_hash`` of a local dataset (see :class:`_ShardHasher`)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for name in shards[split]:
            _hash_file(digest, name.partition("-of-")[0], Path(dataset_dir) / name)
    return f"sha256:{digest.hexdigest()}"


def _feature_doc(segmentation: bool, slice_level: bool = False) -> dict[str, str]:
    features = {"image": "png", "subject": "bytes", "slice": "int64"}
    if segmentation:
        features["segmentation"] = "png"
    if slice_level:
        features["slice_level"] = "float"
    return features


# --- reading -------------------------------------------------------------------------------------


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a dataset directory (local or gs://).

    Raises:
        DataError: the directory holds no manifest, or one of another format version.
    """
    path = _join(dataset_dir, MANIFEST)
    try:
        manifest = json.loads(_read_text(path))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `oasis-vqvae ingest` first") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: dataset format version {version}, this code reads {FORMAT_VERSION}; "
            "rerun `oasis-vqvae ingest`"
        )
    return manifest


def load_split(
    dataset_dir: str | Path,
    split: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Batches of one split as float32 images ``(B, H, W, 1)`` scaled to [0, 1].

    Without ``shuffle`` the order is the manifest's (subject, then slice), so code grids or
    reconstructions line up with ``subjects``. With it, shard order and records are shuffled
    (buffer of :data:`SHUFFLE_BUFFER`) from ``seed``, differently each epoch, reproducibly.
    With ``with_ids`` each element is ``(images, subjects, slices)``: ``(B,)`` string and
    ``(B,)`` int64 beside the images. The last batch may be smaller than ``batch_size``.
    """
    tf = _tf()
    manifest = read_manifest(dataset_dir)
    height, width, _ = manifest["image_shape"]
    records = _records(dataset_dir, manifest, split, shuffle=shuffle, seed=seed)
    if shuffle:
        records = records.shuffle(min(manifest["counts"][split], SHUFFLE_BUFFER), seed=seed)
    if repeat:
        records = records.repeat()
    else:
        # Reading TFRecord shards hides the size; Keras needs it, or its per-epoch metrics
        # count one phantom step at the end of every pass.
        records = records.apply(tf.data.experimental.assert_cardinality(manifest["counts"][split]))

    def decode(serialized: tf.Tensor) -> Any:
        example = _parse(serialized)
        image = tf.io.decode_png(example["image"], channels=1)
        image = tf.cast(tf.ensure_shape(image, (height, width, 1)), tf.float32) / 255.0
        return (image, example["subject"], example["slice"]) if with_ids else image

    images = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_images(dataset_dir: str | Path, split: str) -> np.ndarray:
    """All images of one split as uint8 ``(N, H, W)``, in manifest order (for evaluation)."""
    import numpy as np

    tf = _tf()
    manifest = read_manifest(dataset_dir)
    height, width, _ = manifest["image_shape"]

    def decode(serialized: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_png(_parse(serialized)["image"], channels=1)
        return tf.ensure_shape(image, (height, width, 1))[..., 0]

    records = _records(dataset_dir, manifest, split, shuffle=False, seed=0)
    batches = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(512)
    arrays = list(batches.as_numpy_iterator())
    if not arrays:
        return np.zeros((0, height, width), np.uint8)
    return np.concatenate(arrays)


def load_ids(
    dataset_dir: str | Path, split: str
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Subject ids, slice indices and stored slice levels of one split, in manifest order.

    Slice indices are ``(N,)`` int64, levels ``(N,)`` float32 or None when the dataset stores
    none. Reads only these small features of each record (no image is decoded).
    """
    import numpy as np

    tf = _tf()
    manifest = read_manifest(dataset_dir)
    has_levels = "slice_level" in manifest.get("features", {})
    spec = {
        "subject": tf.io.FixedLenFeature([], tf.string),
        "slice": tf.io.FixedLenFeature([], tf.int64),
    }
    if has_levels:
        spec["slice_level"] = tf.io.FixedLenFeature([], tf.float32)
    records = _records(dataset_dir, manifest, split, shuffle=False, seed=0)
    parsed = records.map(lambda serialized: tf.io.parse_single_example(serialized, spec))
    subjects: list[str] = []
    slices: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    for batch in parsed.batch(4096).as_numpy_iterator():
        subjects.extend(name.decode("utf-8") for name in batch["subject"])
        slices.append(batch["slice"])
        if has_levels:
            levels.append(batch["slice_level"])
    empty = np.zeros(0, np.int64)
    return (
        subjects,
        np.concatenate(slices) if slices else empty,
        (np.concatenate(levels) if levels else empty.astype(np.float32)) if has_levels else None,
    )


def _records(
    dataset_dir: str | Path, manifest: dict[str, Any], split: str, *, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """Serialized examples of one split; shards read interleaved when shuffling, else in order."""
    tf = _tf()
    if split not in manifest["shards"]:
        raise DataError(f"{dataset_dir}: no split {split!r}; the dataset has {list(SPLITS)}")
    files = [_join(dataset_dir, name) for name in manifest["shards"][split]]
    shards = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))  # may be empty
    if shuffle:
        shards = shards.shuffle(max(len(files), 1), seed=seed)
    return shards.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=1 << 22),
        cycle_length=max(1, min(len(files), 4)) if shuffle else 1,  # in order when not shuffling
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    tf = _tf()
    return tf.io.parse_single_example(
        serialized,
        {
            "image": tf.io.FixedLenFeature([], tf.string),
            "subject": tf.io.FixedLenFeature([], tf.string),
            "slice": tf.io.FixedLenFeature([], tf.int64),
        },
    )


def _join(directory: str | Path, name: str) -> str:
    """Join without Path(): it would turn ``gs://b`` into ``gs:/b``."""
    return f"{str(directory).rstrip('/')}/{name}"


def _read_text(path: str) -> str:
    from oasis_vqvae.storage import is_gcs

    if is_gcs(path):
        gfile = _tf().io.gfile
        if not gfile.exists(path):
            raise FileNotFoundError(path)
        with gfile.GFile(path, "r") as handle:
            return handle.read()
    return Path(path).read_text(encoding="utf-8")


def _tf() -> Any:
    """TensorFlow, imported on first use (heavy; not needed by the decoding workers)."""
    import tensorflow as tf

    return tf
