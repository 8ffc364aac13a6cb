"""TFRecord shards and manifest.json: the writer and the tf.data reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from oasis_vqvae.data.shards import (
    MANIFEST,
    BadFile,
    DatasetWriter,
    Record,
    content_hash,
    load_images,
    load_split,
    read_manifest,
)
from oasis_vqvae.errors import DataError
from tests.conftest import mask_pixels, slice_pixels

SIZE = 16
# (split, subject, number of slices)
LAYOUT = [("train", "s1", 3), ("train", "s2", 2), ("validate", "s3", 2), ("test", "s4", 1)]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_records(layout=LAYOUT, segmentation: bool = False, offset: int = 0) -> list[Record]:  # noqa: ANN001
    records = []
    for split, subject, slices in layout:
        for index in range(slices):
            case = int(subject[1:]) + offset
            pixels = slice_pixels(case, index, SIZE)
            mask = png(mask_pixels(case, index, SIZE)) if segmentation else None
            records.append(
                Record(
                    split, subject, index, png(pixels), int(pixels.min()), int(pixels.max()), mask
                )
            )
    return records


def write_dataset(directory: Path, records: list[Record], per_shard: int = 2, **kwargs) -> dict:  # noqa: ANN003
    directory.mkdir(parents=True, exist_ok=True)
    segmentation = kwargs.pop("segmentation", False)
    with DatasetWriter(
        directory, image_size=SIZE, images_per_shard=per_shard, segmentation=segmentation
    ) as writer:
        for record in records:
            writer.add(record)
        return writer.finish(source={"kind": "test", "location": "here"}, skipped=[], **kwargs)


def test_writer_shards_and_manifest(tmp_path: Path) -> None:
    records = make_records()
    manifest = write_dataset(tmp_path / "ds", records)
    assert manifest == read_manifest(tmp_path / "ds")
    assert manifest["counts"] == {"train": 5, "validate": 2, "test": 1}
    assert manifest["shards"] == {
        "train": [f"train-0000{i}-of-00003.tfrecord" for i in range(3)],
        "validate": ["validate-00000-of-00001.tfrecord"],
        "test": ["test-00000-of-00001.tfrecord"],
    }
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == sorted(
        [MANIFEST, *(name for names in manifest["shards"].values() for name in names)]
    )
    assert manifest["subjects"] == {"train": ["s1", "s2"], "validate": ["s3"], "test": ["s4"]}
    assert manifest["image_shape"] == [SIZE, SIZE, 1] and manifest["dtype"] == "uint8"
    low = min(r.low for r in records)
    high = max(r.high for r in records)
    assert manifest["value_range"] == [low, high]
    assert manifest["skipped"] == {"count": 0, "files": []}
    assert manifest["content_hash"] == content_hash(tmp_path / "ds", manifest["shards"])
    assert manifest["format_version"] == 1 and manifest["segmentation"] is False
    counts = [
        sum(1 for _ in tf.data.TFRecordDataset(str(tmp_path / "ds" / name)))
        for name in manifest["shards"]["train"]
    ]
    assert counts == [2, 2, 1]


def test_examples_hold_png_subject_slice_and_masks(tmp_path: Path) -> None:
    records = make_records(segmentation=True)
    manifest = write_dataset(tmp_path / "ds", records, segmentation=True)
    assert manifest["segmentation"] is True
    assert manifest["features"]["segmentation"] == "png"
    path = tmp_path / "ds" / manifest["shards"]["train"][0]
    raw = next(iter(tf.data.TFRecordDataset(str(path)))).numpy()
    feature = tf.train.Example.FromString(raw).features.feature
    assert feature["image"].bytes_list.value[0] == records[0].image  # stored as is
    assert feature["subject"].bytes_list.value[0] == b"s1"
    assert feature["slice"].int64_list.value[0] == 0
    assert feature["segmentation"].bytes_list.value[0] == records[0].segmentation


def test_content_hash_follows_the_content_only(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", make_records())
    again = write_dataset(tmp_path / "b", make_records())
    other = write_dataset(tmp_path / "c", make_records(offset=10))
    assert first["content_hash"] == again["content_hash"] != other["content_hash"]
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()


def test_metadata_and_skipped_files_go_into_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    with DatasetWriter(
        tmp_path / "ds", image_size=SIZE, images_per_shard=8, segmentation=False
    ) as w:
        for record in make_records():
            w.add(record)
        manifest = w.finish(
            source={"kind": "test"},
            skipped=[BadFile("a/b.png", "not a PNG file")],
            subject_metadata={"s1": {"Age": 74, "SES": None}, "elsewhere": {"Age": 1}},
        )
    assert manifest["skipped"] == {
        "count": 1,
        "files": [{"path": "a/b.png", "reason": "not a PNG file"}],
    }
    assert manifest["subject_metadata"] == {"s1": {"Age": 74, "SES": None}}
    assert '"SES": null' in (tmp_path / "ds" / MANIFEST).read_text()


def test_a_split_without_records_is_an_error(tmp_path: Path) -> None:
    records = [r for r in make_records() if r.split != "validate"]
    with pytest.raises(DataError, match="the validate split has no usable slices"):
        write_dataset(tmp_path / "ds", records)


def test_records_must_come_in_split_order(tmp_path: Path) -> None:
    records = make_records()
    with pytest.raises(ValueError, match="split order"):
        write_dataset(tmp_path / "ds", records[-1:] + records[:-1])


def test_load_split_yields_float_batches_in_manifest_order(tmp_path: Path) -> None:
    records = make_records()
    write_dataset(tmp_path / "ds", records)
    batches = list(load_split(tmp_path / "ds", "train", batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, SIZE, SIZE, 1)] * 2 + [(1, SIZE, SIZE, 1)]
    images = np.concatenate([b.numpy() for b in batches])
    assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 1.0
    expected = np.stack([slice_pixels(int(r.subject[1:]), r.slice, SIZE) for r in records[:5]])
    np.testing.assert_allclose(images[..., 0], expected / 255.0, atol=1e-6)


def test_load_split_with_ids_and_seeded_shuffle(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", make_records())

    def ids(seed: int) -> list[tuple[bytes, int]]:
        dataset = load_split(
            tmp_path / "ds", "train", batch_size=5, shuffle=True, seed=seed, with_ids=True
        )
        images, subjects, slices = next(iter(dataset))
        assert images.shape == (5, SIZE, SIZE, 1) and images.dtype == tf.float32
        return list(zip(subjects.numpy().tolist(), slices.numpy().tolist(), strict=True))

    assert ids(3) == ids(3)
    assert sorted(ids(3)) == [(b"s1", 0), (b"s1", 1), (b"s1", 2), (b"s2", 0), (b"s2", 1)]
    assert any(ids(seed) != ids(3) for seed in range(4, 10))


def test_load_split_repeat(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", make_records())
    dataset = load_split(tmp_path / "ds", "test", batch_size=1, repeat=True)
    assert len(list(dataset.take(3))) == 3


def test_load_images_returns_uint8_in_order(tmp_path: Path) -> None:
    records = make_records()
    write_dataset(tmp_path / "ds", records)
    images = load_images(tmp_path / "ds", "validate")
    assert images.dtype == np.uint8 and images.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(images[1], slice_pixels(3, 1, SIZE))


def test_reading_what_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest.json: missing"):
        read_manifest(tmp_path)
    write_dataset(tmp_path / "ds", make_records())
    with pytest.raises(DataError, match="no split 'valid'"):
        load_split(tmp_path / "ds", "valid", batch_size=1)
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DataError, match="format version 99"):
        read_manifest(tmp_path / "ds")
