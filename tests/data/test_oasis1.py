"""Source 2: raw OASIS-1 discs (tarballs and extracted folders), volumes, splits, demographics."""

from __future__ import annotations

import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.conftest import (
    VOLUME_SHAPE,
    tar_disc,
    volume_data,
    volume_header,
    write_oasis1_disc,
    write_volume,
)

from oasis_vqvae.data import oasis1
from oasis_vqvae.data.oasis1 import VolumeTask, collect, scan, slice_volume
from oasis_vqvae.data.png_slices import decode_png
from oasis_vqvae.data.shards import BadFile, Record
from oasis_vqvae.errors import DataError

MASKED = "PROCESSED/MPRAGE/T88_111/OAS1_{0:04d}_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr"


def task(
    header: Path, image_size: int = 20, slices=(4, 12, 2), percentile: float = 99.5
) -> VolumeTask:  # noqa: ANN001
    return VolumeTask("OAS1_0001", "train", str(header), "x.hdr", slices, percentile, image_size)


def collected(source: Path, scratch: Path) -> tuple[list[oasis1.Volume], list[BadFile]]:
    return collect(scan(source, location="src"), scratch, location="src", workers=2)


# --- finding volumes -----------------------------------------------------------------------------


def test_extracted_disc_gives_the_masked_t88_volume_of_each_subject(tmp_path: Path) -> None:
    write_oasis1_disc(tmp_path / "src", subjects=(3, 1, 2))
    volumes, bad = collected(tmp_path / "src", tmp_path / "scratch")
    assert bad == []
    assert [v.subject for v in volumes] == ["OAS1_0001", "OAS1_0002", "OAS1_0003"]
    assert volumes[0].path == "disc1/OAS1_0001_MR1/" + MASKED.format(1)
    assert volumes[0].header == tmp_path / "src" / volumes[0].path
    assert not (tmp_path / "scratch").exists()  # nothing to extract


def test_tarball_extracts_only_the_volumes(tmp_path: Path) -> None:
    disc = write_oasis1_disc(tmp_path / "tree", subjects=(1, 2, 3))
    tar_disc(disc, tmp_path / "src" / "oasis_cross-sectional_disc1.tar.gz")
    volumes, bad = collected(tmp_path / "src", tmp_path / "scratch")
    assert bad == []
    assert volumes[1].path == (
        "oasis_cross-sectional_disc1.tar.gz/disc1/OAS1_0002_MR1/" + MASKED.format(2)
    )
    extracted = sorted(p.name for p in (tmp_path / "scratch").rglob("*") if p.is_file())
    assert len(extracted) == 6 and all("masked_gfc" in name for name in extracted)


def test_a_single_tarball_as_source(tmp_path: Path) -> None:
    disc = write_oasis1_disc(tmp_path / "tree", subjects=(1, 2, 3))
    tarball = tar_disc(disc, tmp_path / "oasis_cross-sectional_disc1.tar.gz")
    volumes, _ = collected(tarball, tmp_path / "scratch")
    assert volumes[0].path == "disc1/OAS1_0001_MR1/" + MASKED.format(1)


def test_extracted_folder_wins_over_its_tarball(tmp_path: Path) -> None:
    disc = write_oasis1_disc(tmp_path / "src", subjects=(1, 2, 3))
    tar_disc(disc, tmp_path / "src" / "oasis_cross-sectional_disc1.tar.gz")
    found = scan(tmp_path / "src", location="src")
    assert found.tarballs == () and len(found.sessions) == 3


def test_the_same_subject_twice_is_an_error(tmp_path: Path) -> None:
    write_oasis1_disc(tmp_path / "src", subjects=(1, 2))
    write_oasis1_disc(tmp_path / "src", subjects=(2, 3), disc="disc2")
    with pytest.raises(DataError, match="subject OAS1_0002 appears twice"):
        collected(tmp_path / "src", tmp_path / "scratch")


def test_of_several_mpr_variants_the_most_averaged_is_taken(tmp_path: Path) -> None:
    disc = write_oasis1_disc(tmp_path / "src", subjects=(1,))
    write_volume(volume_header(disc, 1, n=3), volume_data(1))
    write_volume(volume_header(disc, 1, n=6).with_suffix(".hdr"), volume_data(1))
    volume_header(disc, 1, n=6).with_suffix(".img").unlink()  # incomplete: not usable
    volumes, _ = collected(tmp_path / "src", tmp_path / "scratch")
    assert volumes[0].header.name == "OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.hdr"


def test_a_subject_without_volume_is_bad(tmp_path: Path) -> None:
    disc = write_oasis1_disc(tmp_path / "tree", subjects=(1, 2, 3), without_volume=(2,))
    tar_disc(disc, tmp_path / "src" / "oasis_cross-sectional_disc1.tar.gz")
    volumes, bad = collected(tmp_path / "src", tmp_path / "scratch")
    assert [v.subject for v in volumes] == ["OAS1_0001", "OAS1_0003"]
    assert len(bad) == 1
    assert bad[0].path == "oasis_cross-sectional_disc1.tar.gz/disc1/OAS1_0002_MR1"
    assert "no PROCESSED/MPRAGE/T88_111/OAS1_0002_MR1_mpr_n*" in bad[0].reason


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (member("../evil.txt"), "outside the destination"),
        (member("/etc/evil.txt"), "absolute path"),
        (member("disc1/link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (member("disc1/link", tarfile.SYMTYPE, "../../../etc"), "outside the destination"),
        (member("disc1/OAS1_0009_MR1/" + MASKED.format(9), tarfile.SYMTYPE, "x"), "regular file"),
    ],
)
def test_unsafe_tar_members_are_refused(
    tmp_path: Path, extra: tarfile.TarInfo, message: str
) -> None:
    disc = write_oasis1_disc(tmp_path / "tree", subjects=(1, 2, 3))
    tar_disc(disc, tmp_path / "src" / "oasis_cross-sectional_disc1.tar.gz", [extra])
    with pytest.raises(DataError, match=message) as caught:
        collected(tmp_path / "src", tmp_path / "scratch")
    assert "src/oasis_cross-sectional_disc1.tar.gz" in str(caught.value)
    assert repr(extra.name) in str(caught.value)
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil.txt").exists()


def test_nothing_of_oasis1_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "src" / "misc").mkdir(parents=True)
    with pytest.raises(DataError, match="no OASIS-1 disc tarballs"):
        scan(tmp_path / "src", location="src")


def test_a_tarball_that_is_no_tar_is_refused_early(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "oasis_cross-sectional_disc1.tar.gz").write_bytes(b"nope")
    with pytest.raises(DataError, match="disc1.tar.gz: not a readable tar archive"):
        scan(tmp_path / "src", location="src")


# --- slicing -------------------------------------------------------------------------------------


def test_slices_are_radiological_nose_up(tmp_path: Path) -> None:
    header = write_volume(tmp_path / "v.hdr", volume_data(1))
    records = slice_volume(task(header))
    assert [r.slice for r in records] == [4, 6, 8, 10]
    pixels = decode_png(records[0].image, 20)
    # The marker at the subject's anterior right: top rows, left columns. The 20 x 16 slice is
    # padded by 2 columns on each side to 20 x 20.
    assert np.unravel_index(np.argmax(pixels), pixels.shape) == (1, 3)
    assert pixels[:, :2].max() == 0 and pixels[:, -2:].max() == 0


def test_orientation_follows_the_header(tmp_path: Path) -> None:
    data = volume_data(1)
    las = write_volume(tmp_path / "las.hdr", data)  # Analyze 7.5: x runs right to left
    ras = tmp_path / "ras.hdr"
    nib.Nifti1Pair(data[::-1], np.eye(4)).to_filename(ras)  # stored left to right, and says so
    assert [r.image for r in slice_volume(task(ras))] == [r.image for r in slice_volume(task(las))]


def test_a_third_axis_that_is_not_axial_is_bad(tmp_path: Path) -> None:
    coronal = tmp_path / "coronal.hdr"
    nib.Nifti1Pair(volume_data(1), np.eye(4)[[0, 2, 1, 3]]).to_filename(coronal)
    [bad] = slice_volume(task(coronal))
    assert bad.reason == "third axis is not axial (voxel axes point RSA)"


def test_intensities_scale_the_brain_percentile_to_white(tmp_path: Path) -> None:
    data = volume_data(1)
    header = write_volume(tmp_path / "v.hdr", data)
    records = slice_volume(task(header, slices=(0, 16, 1), percentile=60.0))
    pixels = np.stack([decode_png(r.image, 20) for r in records])
    brain = data[data > 0]
    expected_white = np.mean(brain >= np.percentile(brain, 60.0))
    inside = pixels[pixels > 0]
    assert abs(np.mean(inside == 255) - expected_white) < 0.05
    assert all(isinstance(r, Record) and 0 <= r.low <= r.high <= 255 for r in records)


def test_slices_are_padded_square_and_resized(tmp_path: Path) -> None:
    header = write_volume(tmp_path / "v.hdr", volume_data(1))
    records = slice_volume(task(header, image_size=8))
    pixels = decode_png(records[1].image, 8)
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
    assert (records[1].low, records[1].high) == (pixels.min(), pixels.max())


def test_trailing_singleton_axes_are_dropped(tmp_path: Path) -> None:
    three_d = write_volume(tmp_path / "a.hdr", volume_data(1)[..., 0])
    four_d = write_volume(tmp_path / "b.hdr", volume_data(1))
    assert nib.load(four_d).shape == VOLUME_SHAPE  # like the real 176 x 208 x 176 x 1
    assert [r.image for r in slice_volume(task(three_d))] == [
        r.image for r in slice_volume(task(four_d))
    ]


@pytest.mark.parametrize("shape", [(16, 20, 16, 2), (16, 20)])
def test_a_volume_that_is_not_3d_is_bad(tmp_path: Path, shape: tuple[int, ...]) -> None:
    header = write_volume(tmp_path / "v.hdr", np.ones(shape, np.int16))
    [bad] = slice_volume(task(header))
    assert bad == BadFile(
        "x.hdr", f"volume of shape {shape} is not 3-D (after dropping trailing axes of length 1)"
    )


def test_unreadable_empty_or_too_short_volumes_are_bad(tmp_path: Path) -> None:
    header = write_volume(tmp_path / "v.hdr", volume_data(1))
    cut = header.with_suffix(".img")
    (tmp_path / "zero.hdr").write_bytes(header.read_bytes())
    (tmp_path / "zero.img").write_bytes(bytes(len(cut.read_bytes())))
    assert "no brain voxels" in slice_volume(task(tmp_path / "zero.hdr"))[0].reason
    assert "none in data.oasis1.slice_range [48, 128)" in (
        slice_volume(task(header, slices=(48, 128, 1)))[0].reason
    )
    cut.write_bytes(cut.read_bytes()[:100])
    assert "cannot be read as a volume" in slice_volume(task(header))[0].reason


# --- splits and demographics ---------------------------------------------------------------------


def test_splits_are_by_subject_and_deterministic() -> None:
    subjects = [f"OAS1_{n:04d}" for n in range(1, 41)]
    splits = oasis1.assign_splits(subjects, (0.8, 0.1, 0.1), 7, location="src")
    assert sorted(splits) == subjects
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "validate", "test")}
    assert counts == {"train": 32, "validate": 4, "test": 4}
    assert splits == oasis1.assign_splits(subjects[::-1], (0.8, 0.1, 0.1), 7, location="src")
    assert splits != oasis1.assign_splits(subjects, (0.8, 0.1, 0.1), 8, location="src")


def test_splits_need_three_subjects() -> None:
    with pytest.raises(DataError, match="2 OASIS-1 subject"):
        oasis1.assign_splits(["OAS1_0001", "OAS1_0002"], (0.8, 0.1, 0.1), 0, location="src")


def test_demographics_are_read_under_canonical_names(demographics: Path) -> None:
    table = oasis1.read_demographics(demographics, location="csv")
    rows = table.rows
    assert sorted(rows) == [f"OAS1_000{n}" for n in range(1, 6)]
    assert rows["OAS1_0001"] == {
        "sex": "F",
        "hand": "R",
        "age": 74.0,
        "educ": 2.0,
        "ses": 3.0,
        "mmse": 29.0,
        "cdr": 0.0,
        "etiv": 1344.0,
        "nwbv": 0.743,
        "asf": 1.306,
        "delay": None,
    }
    assert rows["OAS1_0003"]["cdr"] == 0.5
    assert rows["OAS1_0004"]["mmse"] is None and rows["OAS1_0004"]["ses"] is None
    assert table.kinds == {
        "sex": "categorical",
        "hand": "categorical",
        "age": "continuous",
        "educ": "continuous",
        "ses": "continuous",
        "mmse": "continuous",
        "cdr": "categorical",
        "etiv": "continuous",
        "nwbv": "continuous",
        "asf": "continuous",
        "delay": "continuous",
    }


def test_missing_cdr_is_0_under_60_only(tmp_path: Path) -> None:
    path = tmp_path / "oasis.csv"
    path.write_text(
        "ID,M/F,Age,CDR\n"
        "OAS1_0001_MR1,F,28,\n"  # young, never rated: 0
        "OAS1_0002_MR1,M,59,\n"
        "OAS1_0003_MR1,F,60,\n"  # 60 and over: unknown stays unknown
        "OAS1_0004_MR1,M,,\n"
        "OAS1_0005_MR1,M,80,1\n"
        "OAS1_0005_MR2,M,80,1\n"  # the reliability rescan is not a second subject
    )
    rows = oasis1.read_demographics(path, location="csv").rows
    assert {s: r["cdr"] for s, r in rows.items()} == {
        "OAS1_0001": 0.0,
        "OAS1_0002": 0.0,
        "OAS1_0003": None,
        "OAS1_0004": None,
        "OAS1_0005": 1.0,
    }
    assert oasis1.cdr_class(rows["OAS1_0001"]) == "0"
    assert oasis1.cdr_class(rows["OAS1_0003"]) == "unknown"
    assert oasis1.cdr_class(rows["OAS1_0005"]) == "positive"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", r"csv: no 'ID' column"),
        ("ID,CDR\nOAS1_0001_MR1,0\nOAS1_0001_MR1,1\n", r"csv: line 3, column ID: .* again"),
        ("ID,CDR\nOAS1_0001_MR1,4\n", r"csv: line 2, column CDR: unknown CDR '4'"),
        ("ID,M/F\nOAS1_0001_MR1,W\n", r"csv: line 2, column M/F: unknown sex 'W'"),
        ("ID,Age\nOAS1_0001_MR1,old\n", r"csv: line 2, column Age: 'old' is not a number"),
    ],
)
def test_bad_demographics_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        oasis1.read_demographics(tmp_path / "bad.csv", location="csv")


def test_splits_stratified_by_cdr_class() -> None:
    subjects = [f"OAS1_{n:04d}" for n in range(1, 41)]
    strata = {s: ("positive" if i % 4 == 0 else "0") for i, s in enumerate(subjects)}
    splits = oasis1.assign_splits(subjects, (0.8, 0.1, 0.1), 3, location="src", strata=strata)
    for split in ("train", "validate", "test"):
        classes = {strata[s] for s, where in splits.items() if where == split}
        assert classes == {"0", "positive"}, split
    assert splits == oasis1.assign_splits(
        subjects, (0.8, 0.1, 0.1), 3, location="src", strata=strata
    )
