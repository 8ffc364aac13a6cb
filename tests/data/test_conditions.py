"""Slice levels and the per-record conditions table."""

from __future__ import annotations

import numpy as np
import pytest

from oasis_vqvae.data.conditions import (
    SLICE_LEVEL,
    check_names,
    condition_specs,
    load_conditions,
    slice_levels,
)
from oasis_vqvae.errors import DataError
from oasis_vqvae.stages.ingest import ingest


def test_slice_level_is_the_rank_within_the_subject():
    levels = slice_levels(["a", "a", "a", "b", "c", "c"], [4, 2, 9, 0, 7, 3])
    np.testing.assert_allclose(levels, [0.5, 0.0, 1.0, 0.5, 1.0, 0.0])
    assert levels.dtype == np.float32


def test_slice_levels_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="must be"):
        slice_levels(["a", "b"], [1])


def test_specs_always_start_with_slice_level():
    specs = condition_specs({"conditions": {"sex": {"kind": "categorical", "values": ["F", "M"]}}})
    assert list(specs) == [SLICE_LEVEL, "sex"]
    assert list(condition_specs({})) == [SLICE_LEVEL]


def test_unknown_condition_names_the_key_and_the_known_ones():
    with pytest.raises(
        DataError, match=r"pixelcnn.conditions: unknown condition 'cdr'.*slice_level"
    ):
        check_names(["cdr"], condition_specs({}), "pixelcnn.conditions")


def test_conditions_follow_the_records(png_folder, config, tmp_path):
    from oasis_vqvae.config import Params

    source = png_folder(slices=4)
    params = Params(data=config(source=str(source)))
    dataset = ingest(params, tmp_path / "dataset")
    frame = load_conditions(dataset, "train")
    # Cases 1-3 with 4 slices each, in (case, slice) order.
    assert frame["subject"].tolist() == [f"OAS-case-00{c}" for c in (1, 2, 3) for _ in range(4)]
    np.testing.assert_allclose(frame[SLICE_LEVEL], np.tile([0, 1 / 3, 2 / 3, 1], 3), atol=1e-6)


def test_stored_slice_levels_win_over_ranks(tmp_path):
    from oasis_vqvae.data.shards import DatasetWriter, Record
    from oasis_vqvae.stages.generate import to_uint8

    png = _png(to_uint8(np.full((8, 8), 0.5)))
    with DatasetWriter(tmp_path, image_size=8, images_per_shard=8, segmentation=False,
                       slice_levels=True) as writer:  # fmt: skip
        for split, level in (("train", 0.25), ("validate", 0.75), ("test", 0.0)):
            writer.add(Record(split, f"sample-{split}", 0, png, 128, 128, slice_level=level))
        manifest = writer.finish(source={"kind": "test"}, skipped=[])
    assert manifest["features"]["slice_level"] == "float"
    assert load_conditions(tmp_path, "validate")[SLICE_LEVEL].tolist() == [0.75]


def test_a_record_without_its_level_is_refused(tmp_path):
    from oasis_vqvae.data.shards import DatasetWriter, Record

    writer = DatasetWriter(
        tmp_path, image_size=8, images_per_shard=8, segmentation=False, slice_levels=True
    )
    with writer, pytest.raises(ValueError, match="lacks its slice level"):
        writer.add(Record("train", "s", 0, b"", 0, 0))


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
