"""Source 1: listing the OASIS PNG layout (folder and zip) and checking/decoding slices."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oasis_vqvae.data import png_slices
from oasis_vqvae.data.png_slices import DecodeTask, decode_batch, decode_png, scan, stored_png
from oasis_vqvae.data.shards import BadFile, Record
from oasis_vqvae.errors import DataError
from tests.conftest import (
    MASK_LABELS,
    mask_pixels,
    save_png,
    slice_pixels,
    write_png_slices,
    zip_tree,
)


def png_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


def good_png(size: int = 32) -> bytes:
    return png_bytes(Image.fromarray(slice_pixels(1, 0, size)))


# --- listing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [None, "keras_png_slices_data", "downloads/keras_png_slices_data"])
def test_scan_finds_split_folders_up_to_two_levels_down(tmp_path: Path, top: str | None) -> None:
    root = write_png_slices(tmp_path / "src", top=top, slices=2)
    listing = scan(root, segmentation=False, location="src")
    assert listing.bad == []
    assert [(r.split, r.subject, r.slice) for r in listing.refs][:4] == [
        ("train", "OAS-case-001", 0),
        ("train", "OAS-case-001", 1),
        ("train", "OAS-case-002", 0),
        ("train", "OAS-case-002", 1),
    ]
    assert {r.split for r in listing.refs} == {"train", "validate", "test"}
    assert len(listing.refs) == 5 * 2
    prefix = f"{top}/" if top else ""
    assert listing.refs[0].path == f"{prefix}keras_png_slices_train/case_001_slice_0.nii.png"


def test_scan_does_not_look_three_levels_down(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", top="a/b/c", slices=1)
    with pytest.raises(DataError, match="no keras_png_slices_"):
        scan(root, segmentation=False, location="src")


def test_scan_orders_subjects_by_case_number(tmp_path: Path) -> None:
    cases = {"train": (10, 9, 100), "validate": (4,), "test": (5,)}
    root = write_png_slices(tmp_path / "src", cases=cases, slices=1)
    refs = scan(root, segmentation=False, location="src").refs
    assert [r.subject for r in refs if r.split == "train"] == [
        "OAS-case-009",
        "OAS-case-010",
        "OAS-case-100",
    ]


def test_zip_with_nested_top_folder_lists_like_the_folder(tmp_path: Path) -> None:
    tree = write_png_slices(tmp_path / "tree", top="keras_png_slices_data", slices=2)
    archive = zip_tree(tree, tmp_path / "data.zip")
    from_zip = scan(archive, segmentation=False, location="data.zip")
    from_folder = scan(tree, segmentation=False, location="tree")
    assert from_zip == from_folder
    assert from_zip.refs[0].path.startswith("keras_png_slices_data/keras_png_slices_train/")


@pytest.mark.parametrize(
    "member",
    ["../evil.png", "/etc/evil.png", "keras_png_slices_data/../../evil.png", "..\\evil.png"],
)
def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path, member: str) -> None:
    tree = write_png_slices(tmp_path / "tree", top="keras_png_slices_data", slices=1)
    archive = zip_tree(tree, tmp_path / "data.zip", {member: good_png()})
    with pytest.raises(DataError, match="escapes the archive") as caught:
        scan(archive, segmentation=False, location="data.zip")
    assert repr(member) in str(caught.value)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "data.zip"
    fake.write_bytes(b"PK but not really")
    with pytest.raises(DataError, match="data.zip: not a readable .zip"):
        scan(fake, segmentation=False, location="data.zip")


@pytest.mark.parametrize("split", ["train", "validate", "test"])
def test_missing_split_folder_is_an_error(tmp_path: Path, split: str) -> None:
    cases = {s: c for s, c in {"train": (1,), "validate": (2,), "test": (3,)}.items() if s != split}
    root = write_png_slices(tmp_path / "src", cases=cases, slices=1)
    with pytest.raises(DataError, match=f"no keras_png_slices_{split}/ folder"):
        scan(root, segmentation=False, location="src")


def test_empty_split_folder_is_an_error(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", cases={"train": (1,), "validate": (2,)}, slices=1)
    (root / "keras_png_slices_test").mkdir()
    with pytest.raises(DataError, match="src/keras_png_slices_test: split folder is empty"):
        scan(root, segmentation=False, location="src")


def test_misnamed_files_are_bad_and_hidden_files_ignored(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", slices=1)
    save_png(root / "keras_png_slices_train" / "slice_7.png", slice_pixels(1, 0, 32))
    (root / "keras_png_slices_train" / ".DS_Store").write_bytes(b"junk")
    listing = scan(root, segmentation=False, location="src")
    assert listing.bad == [
        BadFile("keras_png_slices_train/slice_7.png", "name is not case_NNN_slice_M.nii.png")
    ]
    assert len(listing.refs) == 5


def test_segmentation_folders_are_ignored_unless_asked_for(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", slices=2, segmentation=True)
    without = scan(root, segmentation=False, location="src")
    assert all(ref.mask is None for ref in without.refs)
    masked = scan(root, segmentation=True, location="src")
    assert masked.refs[0].mask == "keras_png_slices_seg_train/seg_001_slice_0.nii.png"
    assert [r[:4] for r in masked.refs] == [r[:4] for r in without.refs]


def test_segmentation_needs_the_mask_folders(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", slices=1)
    with pytest.raises(DataError, match="no keras_png_slices_seg_train/ folder"):
        scan(root, segmentation=True, location="src")


def test_a_missing_mask_makes_its_slice_bad(tmp_path: Path) -> None:
    root = write_png_slices(tmp_path / "src", slices=2, segmentation=True)
    (root / "keras_png_slices_seg_validate" / "seg_004_slice_1.nii.png").unlink()
    listing = scan(root, segmentation=True, location="src")
    assert listing.bad == [
        BadFile(
            "keras_png_slices_validate/case_004_slice_1.nii.png",
            "its mask keras_png_slices_seg_validate/seg_004_slice_1.nii.png is missing",
        )
    ]
    assert len(listing.refs) == 9


# --- checking and decoding -----------------------------------------------------------------------


def bad_pngs() -> dict[str, tuple[bytes, str]]:
    gray = Image.fromarray(slice_pixels(1, 0, 32))
    good = png_bytes(gray)
    return {
        "truncated": (good[: len(good) // 2], "truncated PNG"),
        "no end chunk": (good[:-12], "truncated PNG"),
        "damaged data": (good[:60] + bytes(len(good) - 72) + good[-12:], "corrupt PNG"),
        "text": (b"this is not an image at all", "not a PNG file"),
        "jpeg": (png_bytes(gray, format="JPEG"), "not a PNG file"),
        "wrong size": (png_bytes(gray.crop((0, 0, 32, 30))), "32x30 pixels, expected 32x32"),
        "rgb": (png_bytes(gray.convert("RGB")), "8-bit RGB PNG; only 8-bit grayscale"),
        "16-bit": (
            png_bytes(Image.fromarray(slice_pixels(1, 0, 32).astype(np.uint16) * 200)),
            "16-bit grayscale PNG",
        ),
        "palette": (png_bytes(gray.convert("P")), "palette PNG"),
        "gray+alpha": (png_bytes(gray.convert("LA")), "grayscale+alpha PNG"),
        "1-bit": (png_bytes(gray.convert("1")), "1-bit grayscale PNG"),
    }


@pytest.mark.parametrize("kind", list(bad_pngs()))
def test_decode_png_refuses_bad_input(kind: str) -> None:
    data, message = bad_pngs()[kind]
    with pytest.raises(DataError, match=re.escape(message)):
        decode_png(data, 32)


def test_decode_png_returns_the_pixels() -> None:
    pixels = decode_png(good_png(), 32)
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32)
    np.testing.assert_array_equal(pixels, slice_pixels(1, 0, 32))


def test_stored_png_keeps_the_bytes_when_no_resize_is_needed() -> None:
    data = good_png()
    stored, extrema = stored_png(data, 32, 32, Image.Resampling.LANCZOS)
    assert stored is data
    pixels = slice_pixels(1, 0, 32)
    assert extrema == (pixels.min(), pixels.max())


def test_stored_png_resizes_with_antialiasing() -> None:
    stored, extrema = stored_png(good_png(), 32, 16, Image.Resampling.LANCZOS)
    pixels = decode_png(stored, 16)
    assert extrema == (pixels.min(), pixels.max())
    original = slice_pixels(1, 0, 32).astype(float)
    block_means = original.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    assert np.abs(pixels - block_means).mean() < 25  # smooth, not every other pixel


def test_masks_are_resized_without_inventing_labels() -> None:
    mask = png_bytes(Image.fromarray(mask_pixels(1, 0, 32)))
    stored, _ = stored_png(mask, 32, 16, Image.Resampling.NEAREST)
    assert set(np.unique(decode_png(stored, 16))) <= set(MASK_LABELS)


def test_decode_batch_reads_folders_and_zips_alike(tmp_path: Path) -> None:
    tree = write_png_slices(tmp_path / "tree", slices=2, segmentation=True)
    (tree / "keras_png_slices_test" / "case_005_slice_1.nii.png").write_bytes(b"broken")
    archive = zip_tree(tree, tmp_path / "data.zip")
    results = {}
    for root in (tree, archive):
        refs = scan(root, segmentation=True, location=root.name).refs
        results[root.name] = decode_batch(DecodeTask(str(root), tuple(refs), 32, 16))
    assert results["tree"] == results["data.zip"]
    records = [r for r in results["tree"] if isinstance(r, Record)]
    assert len(records) == 9
    assert results["tree"][-1] == BadFile(
        "keras_png_slices_test/case_005_slice_1.nii.png", "not a PNG file"
    )
    first = records[0]
    assert (first.split, first.subject, first.slice) == ("train", "OAS-case-001", 0)
    assert decode_png(first.segmentation, 16).shape == (16, 16)
    pixels = decode_png(first.image, 16)
    assert (first.low, first.high) == (pixels.min(), pixels.max())


def test_a_bad_mask_is_reported_under_its_own_name(tmp_path: Path) -> None:
    tree = write_png_slices(tmp_path / "tree", slices=1, segmentation=True)
    mask = tree / "keras_png_slices_seg_train" / "seg_002_slice_0.nii.png"
    save_png(mask, np.zeros((32, 16)))
    refs = scan(tree, segmentation=True, location="tree").refs
    results = decode_batch(DecodeTask(str(tree), tuple(refs), 32, 32))
    assert (
        BadFile(
            "keras_png_slices_seg_train/seg_002_slice_0.nii.png", "16x32 pixels, expected 32x32"
        )
        in results
    )


def test_duplicate_zip_members_are_listed_once(tmp_path: Path) -> None:
    tree = write_png_slices(tmp_path / "tree", slices=1)
    archive = zip_tree(tree, tmp_path / "data.zip")
    with zipfile.ZipFile(archive, "a") as out, pytest.warns(UserWarning, match="Duplicate"):
        out.writestr("keras_png_slices_test/case_005_slice_0.nii.png", good_png())
    assert len(scan(archive, segmentation=False, location="data.zip").refs) == 5


def test_zip_is_opened_once_per_process(tmp_path: Path) -> None:
    tree = write_png_slices(tmp_path / "tree", slices=1)
    archive = str(zip_tree(tree, tmp_path / "data.zip"))
    assert png_slices._open_zip(archive) is png_slices._open_zip(archive)
