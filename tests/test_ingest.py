"""The ingest stage end to end: every source, bad input, atomic output, determinism, the CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from oasis_vqvae.cli import main
from oasis_vqvae.data.conditions import load_conditions
from oasis_vqvae.data.shards import load_images, load_split, read_manifest
from oasis_vqvae.data.synthetic import sample_labels
from oasis_vqvae.errors import DataError
from oasis_vqvae.stages.ingest import write_dataset as ingest
from tests.conftest import make_config, save_png, slice_pixels, write_png_slices

SPLITS = ("train", "validate", "test")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of a directory tree with its bytes."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def first_example(dataset: Path, split: str = "train") -> dict[str, tf.train.Feature]:
    shard = dataset / read_manifest(dataset)["shards"][split][0]
    raw = next(iter(tf.data.TFRecordDataset(str(shard)))).numpy()
    return dict(tf.train.Example.FromString(raw).features.feature)


def assert_subjects_disjoint(manifest: dict) -> None:
    subjects = [set(manifest["subjects"][split]) for split in SPLITS]
    assert all(subjects)
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])


# --- sources -------------------------------------------------------------------------------------


def test_png_folder(png_folder: Callable[..., Path], tmp_path: Path) -> None:
    source = png_folder(slices=2)
    out = ingest(make_config(source=str(source)), tmp_path / "ds")
    manifest = read_manifest(out)
    assert manifest["source"] == {
        "kind": "png_slices",
        "location": str(source),
        "png_size": 32,
        "labels": None,
    }
    assert manifest["conditions"] == {"slice_level": {"kind": "continuous", "range": [0.0, 1.0]}}
    assert manifest["subject_metadata"] == {}
    assert manifest["counts"] == {"train": 6, "validate": 2, "test": 2}
    assert manifest["subjects"]["validate"] == ["OAS-case-004"]
    assert manifest["image_shape"] == [32, 32, 1]
    images = load_images(out, "train")
    np.testing.assert_array_equal(images[1], slice_pixels(1, 1, 32))  # stored unchanged
    every = np.concatenate([load_images(out, split) for split in SPLITS])
    assert manifest["value_range"] == [int(every.min()), int(every.max())]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(name for split in SPLITS for name in manifest["shards"][split])]
    )


def test_zip_with_top_folder_gives_the_same_dataset_as_the_folder(
    png_folder: Callable[..., Path], png_zip: Callable[..., Path], tmp_path: Path
) -> None:
    folder = ingest(make_config(source=str(png_folder(slices=2))), tmp_path / "a")
    zipped = ingest(make_config(source=str(png_zip(slices=2))), tmp_path / "b")
    assert read_manifest(folder)["content_hash"] == read_manifest(zipped)["content_hash"]


def test_resize_from_png_size_to_image_size(
    png_folder: Callable[..., Path], tmp_path: Path
) -> None:
    out = ingest(make_config(source=str(png_folder(slices=1)), image_size=16), tmp_path / "ds")
    assert read_manifest(out)["image_shape"] == [16, 16, 1]
    batch = next(iter(load_split(out, "train", batch_size=4)))
    assert batch.shape == (3, 16, 16, 1) and batch.dtype == tf.float32
    assert float(tf.reduce_min(batch)) >= 0.0 and float(tf.reduce_max(batch)) <= 1.0


def test_synthetic_goes_through_the_png_reader(tmp_path: Path) -> None:
    cfg = make_config(image_size=16, synthetic={"subjects": 5, "slices_per_subject": 2}, seed=3)
    out = ingest(cfg, tmp_path / "ds")
    manifest = read_manifest(out)
    assert manifest["source"]["kind"] == "synthetic"
    assert sum(manifest["counts"].values()) == 10
    assert manifest["image_shape"] == [16, 16, 1]
    assert_subjects_disjoint(manifest)
    assert not any(p.name.startswith(".") for p in out.iterdir())  # scratch removed
    assert ingest(cfg, tmp_path / "again") and (
        read_manifest(tmp_path / "again")["content_hash"] == manifest["content_hash"]
    )


# --- labels --------------------------------------------------------------------------------------

LABELS = "case,Age,M/F,CDR,MMSE\n1,74,F,0,29\n2,81,M,1,20\n3,22,F,,\n4,77,M,0.5,26\n5,68,F,0,30\n"
"""Labels of the five cases of the PNG fixtures (case 3 young: CDR and MMSE missing)."""


def test_png_slices_with_a_labels_csv(png_folder: Callable[..., Path], tmp_path: Path) -> None:
    source = png_folder(slices=2)
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS + "9,50,M,0,30\n")  # a row without slices is fine
    out = ingest(make_config(source=str(source), labels=str(labels)), tmp_path / "ds")
    manifest = read_manifest(out)
    assert manifest["source"]["labels"] == str(labels)
    assert manifest["subject_metadata"]["OAS-case-002"] == {
        "age": 81.0, "sex": "M", "cdr": 1.0, "mmse": 20.0,
    }  # fmt: skip
    assert manifest["subject_metadata"]["OAS-case-003"]["cdr"] is None
    assert "OAS-case-009" not in manifest["subject_metadata"]
    conditions = manifest["conditions"]
    assert list(conditions) == ["slice_level", "age", "sex", "cdr", "mmse"]
    assert conditions["cdr"] == {
        "kind": "categorical",
        "values": [0.0, 0.5, 1.0],
        "counts": {
            "train": {"0.0": 1, "0.5": 0, "1.0": 1},  # cases 1, 2 (3 has none)
            "validate": {"0.0": 0, "0.5": 1, "1.0": 0},
            "test": {"0.0": 1, "0.5": 0, "1.0": 0},
        },
    }
    assert conditions["age"]["range"] == [22.0, 81.0]
    assert conditions["mmse"]["counts"] == {"train": 2, "validate": 1, "test": 1}
    frame = load_conditions(out, "train")
    assert frame["sex"].tolist() == ["F", "F", "M", "M", "F", "F"]
    assert frame["cdr"].tolist()[:4] == [0.0, 0.0, 1.0, 1.0] and frame["cdr"].isna().sum() == 2
    unlabelled = ingest(make_config(source=str(source)), tmp_path / "plain")
    assert read_manifest(unlabelled)["content_hash"] == manifest["content_hash"]  # same shards


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (LABELS.replace("4,77", "2,77"), r"line 5, column case: '2' again \(first on line 3\)"),
        (LABELS.replace("81", "eighty"), r"line 3, column Age: 'eighty' is not a number"),
        (LABELS.replace("M,1,20", "M,1.5,20"), r"line 3, column CDR: unknown CDR '1.5'"),
        (LABELS.replace("77,M", "77,?"), r"line 5, column M/F: unknown sex '\?'"),
        ("Age,M/F\n74,F\n", r"no 'case' column"),
    ],
)
def test_bad_labels_stop_before_any_work(
    png_folder: Callable[..., Path], tmp_path: Path, text: str, message: str
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    config = make_config(source=str(png_folder(slices=1)), labels=str(labels), on_bad_file="skip")
    with pytest.raises(DataError, match=f"^{labels}: {message}"):
        ingest(config, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_case_without_labels_is_an_error_or_skipped(
    png_folder: Callable[..., Path], tmp_path: Path
) -> None:
    source = png_folder(slices=2)
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS.replace("2,81,M,1,20\n", ""))
    config = {"source": str(source), "labels": str(labels)}
    with pytest.raises(
        DataError,
        match=rf"^{labels}: column case: no row for case 2 \(slices such as "
        r"keras_png_slices_train/case_002_slice_0.nii.png\); .*on_bad_file: skip",
    ):
        ingest(make_config(**config), tmp_path / "ds")
    out = ingest(make_config(**config, on_bad_file="skip"), tmp_path / "ds")
    manifest = read_manifest(out)
    assert manifest["subjects"]["train"] == ["OAS-case-001", "OAS-case-003"]
    assert manifest["counts"]["train"] == 4
    assert manifest["skipped"] == {
        "count": 2,
        "files": [
            {"path": f"keras_png_slices_train/case_002_slice_{i}.nii.png",
             "reason": f"case 2 has no row in {labels}"}
            for i in (0, 1)
        ],
    }  # fmt: skip


def test_labels_are_refused_for_raw_oasis1(
    oasis1_disc: Callable[..., Path], tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS)
    with pytest.raises(DataError, match="data.labels: .* set data.oasis1.demographics"):
        ingest(make_config(source=str(oasis1_disc()), labels=str(labels)), tmp_path / "ds")


def test_synthetic_labels_go_through_the_labels_reader(tmp_path: Path) -> None:
    synthetic = {"subjects": 12, "slices_per_subject": 2, "cdr_positive": 0.5}
    split = {"train": 0.5, "validate": 0.25, "test": 0.25}
    cfg = make_config(image_size=16, synthetic=synthetic, seed=3, split=split)
    manifest = read_manifest(ingest(cfg, tmp_path / "ds"))
    assert manifest["source"]["labels"] == "synthetic/labels.csv"
    assert manifest["source"]["cdr_positive"] == 0.5
    for subject, row in manifest["subject_metadata"].items():
        label = sample_labels(3, int(subject.removeprefix("OAS-case-")), 0.5)
        assert row == {"age": float(label.age), "sex": label.sex, "cdr": label.cdr}
    assert len(manifest["subject_metadata"]) == 12
    conditions = manifest["conditions"]
    assert [conditions[name]["kind"] for name in ("slice_level", "age", "sex", "cdr")] == [
        "continuous", "continuous", "categorical", "categorical",
    ]  # fmt: skip
    for split in SPLITS:
        cdr = conditions["cdr"]["counts"][split]
        assert sum(cdr.values()) == len(manifest["subjects"][split])
        assert cdr["0.0"] > 0 and sum(cdr.values()) > cdr["0.0"]  # both classes in every split
    # A labels CSV of the user's wins over the generator's.
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "case,age,group\n" + "".join(f"{c},{20 + c},g{c % 2}\n" for c in range(1, 13))
    )
    mine = make_config(image_size=16, synthetic=synthetic, seed=3, labels=str(labels))
    manifest = read_manifest(ingest(mine, tmp_path / "mine"))
    assert manifest["subject_metadata"]["OAS-case-007"] == {"age": 27.0, "group": "g1"}
    assert list(manifest["conditions"]) == ["slice_level", "age", "group"]


def test_segmentation_on_and_off(png_folder: Callable[..., Path], tmp_path: Path) -> None:
    source = str(png_folder(slices=1, segmentation=True))
    without = ingest(make_config(source=source), tmp_path / "off")
    masked = ingest(make_config(source=source, segmentation=True, image_size=16), tmp_path / "on")
    assert read_manifest(without)["segmentation"] is False
    assert "segmentation" not in first_example(without)
    assert read_manifest(masked)["segmentation"] is True
    mask = first_example(masked)["segmentation"].bytes_list.value[0]
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(mask))))) <= {0, 85, 170, 255}
    with pytest.raises(DataError, match="synthetic source has no segmentation"):
        ingest(make_config(segmentation=True), tmp_path / "synthetic")


def test_oasis1_tarball_and_extracted_disc(
    oasis1_disc: Callable[..., Path],
    oasis1_tarball: Callable[..., Path],
    demographics: Path,
    tmp_path: Path,
) -> None:
    options = {
        "image_size": 16,
        "oasis1": {"slice_range": [4, 12], "slice_step": 2, "demographics": str(demographics)},
    }
    extracted = ingest(make_config(source=str(oasis1_disc()), **options), tmp_path / "a")
    pooled = {"workers": 2, **options}  # 5 volumes: enough for the process pool
    packed = ingest(make_config(source=str(oasis1_tarball().parent), **pooled), tmp_path / "b")
    manifest = read_manifest(extracted)
    assert manifest["content_hash"] == read_manifest(packed)["content_hash"]
    assert manifest["source"]["kind"] == "oasis1"
    assert manifest["counts"] == {"train": 12, "validate": 4, "test": 4}  # 3/1/1 subjects x 4
    assert_subjects_disjoint(manifest)
    assert sorted(s for split in SPLITS for s in manifest["subjects"][split]) == [
        f"OAS1_000{n}" for n in range(1, 6)
    ]
    metadata = manifest["subject_metadata"]
    assert metadata["OAS1_0001"] == {
        "sex": "F", "hand": "R", "age": 74.0, "educ": 2.0, "ses": 3.0, "mmse": 29.0,
        "cdr": 0.0, "etiv": 1344.0, "nwbv": 0.743, "asf": 1.306, "delay": None,
    }  # fmt: skip
    assert metadata["OAS1_0004"]["cdr"] == 0.0  # 28 years old, not rated: taken as 0
    assert manifest["source"]["missing_cdr_under_60"] == 0.0
    conditions = manifest["conditions"]
    assert list(conditions) == [
        "slice_level",
        "sex",
        "hand",
        "age",
        "educ",
        "ses",
        "mmse",
        "cdr",
        "etiv",
        "nwbv",
        "asf",
    ]  # fmt: skip  (delay: null for every subject, so no condition)
    assert conditions["cdr"]["values"] == [0.0, 0.5]
    assert conditions["age"] == {
        "kind": "continuous",
        "range": [18.0, 74.0],
        "counts": {split: len(manifest["subjects"][split]) for split in SPLITS},
    }
    assert sum(conditions["sex"]["counts"][split]["M"] for split in SPLITS) == 2
    frame = load_conditions(extracted, "train")
    assert list(frame.columns[:3]) == ["subject", "slice", "slice_level"]
    for row in frame.itertuples():
        assert row.age == metadata[row.subject]["age"] and row.cdr == metadata[row.subject]["cdr"]
    example = first_example(extracted)
    assert example["slice"].int64_list.value[0] == 4
    assert example["subject"].bytes_list.value[0].startswith(b"OAS1_")


def test_oasis1_split_depends_on_the_seed_only(
    oasis1_disc: Callable[..., Path], tmp_path: Path
) -> None:
    source = str(oasis1_disc(subjects=range(1, 11)))

    def splits(seed: int, out: str) -> dict:
        cfg = make_config(source=source, image_size=8, seed=seed, oasis1={"slice_range": [7, 9]})
        return read_manifest(ingest(cfg, tmp_path / out))["subjects"]

    assert splits(1, "a") == splits(1, "b")
    assert any(splits(seed, f"s{seed}") != splits(1, "a") for seed in (2, 3, 4))


# --- bad input -----------------------------------------------------------------------------------


def damage(source: Path, kind: str) -> str:
    """Spoil one slice of a PNG folder the way ``kind`` says; return its relative path."""
    relative = "keras_png_slices_validate/case_004_slice_1.nii.png"
    path = source / relative
    gray = Image.open(path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif kind == "not a png":
        path.write_text("hello")
    elif kind == "wrong size":
        save_png(path, np.zeros((32, 31)))
    elif kind == "rgb":
        gray.convert("RGB").save(path)
    elif kind == "16-bit":
        Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(path)
    elif kind == "palette":
        gray.convert("P").save(path)
    return relative


BAD_KINDS = {
    "truncated": "truncated PNG",
    "not a png": "not a PNG file",
    "wrong size": "31x32 pixels, expected 32x32",
    "rgb": "8-bit RGB PNG",
    "16-bit": "16-bit grayscale PNG",
    "palette": "palette PNG",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_png_is_an_error_naming_the_file(
    kind: str, png_folder: Callable[..., Path], tmp_path: Path
) -> None:
    source = png_folder(slices=2)
    relative = damage(source, kind)
    with pytest.raises(DataError) as caught:
        ingest(make_config(source=str(source)), tmp_path / "ds")
    assert str(caught.value).startswith(f"{source}/{relative}: ")
    assert BAD_KINDS[kind] in str(caught.value)
    assert not (tmp_path / "ds").exists()


def test_bad_pngs_are_skipped_counted_and_logged(
    png_folder: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = png_folder(slices=2)
    damage(source, "rgb")
    (source / "keras_png_slices_train" / "case_002_slice_0.nii.png").write_bytes(b"")
    (source / "keras_png_slices_test" / "notes.txt").write_text("hi")
    with caplog.at_level(logging.WARNING, logger="oasis_vqvae"):
        out = ingest(make_config(source=str(source), on_bad_file="skip"), tmp_path / "ds")
    manifest = read_manifest(out)
    assert manifest["counts"] == {"train": 5, "validate": 1, "test": 2}
    assert manifest["skipped"]["count"] == 3
    paths = [item["path"] for item in manifest["skipped"]["files"]]
    assert paths == [
        "keras_png_slices_test/notes.txt",
        "keras_png_slices_train/case_002_slice_0.nii.png",
        "keras_png_slices_validate/case_004_slice_1.nii.png",
    ]
    assert manifest["skipped"]["files"][1]["reason"] == "not a PNG file"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(w.startswith(f"skipping {source}/") for w in warnings)


def test_structural_problems_are_errors_even_when_skipping(
    png_folder: Callable[..., Path], png_zip: Callable[..., Path], tmp_path: Path
) -> None:
    source = png_folder(slices=1)
    for path in (source / "keras_png_slices_test").iterdir():
        path.unlink()
    skip = {"on_bad_file": "skip"}
    with pytest.raises(DataError, match="keras_png_slices_test: split folder is empty"):
        ingest(make_config(source=str(source), **skip), tmp_path / "ds")
    (source / "keras_png_slices_test").rmdir()
    with pytest.raises(DataError, match="no keras_png_slices_test/ folder"):
        ingest(make_config(source=str(source), **skip), tmp_path / "ds")
    archive = png_zip(extra={"keras_png_slices_data/../../evil.png": b"x"})
    with pytest.raises(DataError, match=r"member 'keras_png_slices_data/../../evil.png' escapes"):
        ingest(make_config(source=str(archive), **skip), tmp_path / "ds")


def test_all_slices_of_a_split_skipped_is_an_error(
    png_folder: Callable[..., Path], tmp_path: Path
) -> None:
    source = png_folder(slices=1)
    (source / "keras_png_slices_test" / "case_005_slice_0.nii.png").write_text("x")
    with pytest.raises(DataError, match="the test split has no usable slices"):
        ingest(make_config(source=str(source), on_bad_file="skip"), tmp_path / "ds")


def test_a_source_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        ingest(make_config(source=str(tmp_path / "nowhere")), tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found neither keras_png_slices_"):
        ingest(make_config(source=str(tmp_path / "empty")), tmp_path / "ds")


def test_oasis1_bad_volumes(oasis1_disc: Callable[..., Path], tmp_path: Path) -> None:
    source = oasis1_disc(subjects=range(1, 9), without_volume=(5,))
    header = next(source.rglob("OAS1_0002_MR1_*_masked_gfc.hdr"))
    import nibabel as nib

    nib.AnalyzeImage(np.ones((16, 20, 16, 2), np.int16), None).to_filename(header)
    options = {
        "source": str(source),
        "image_size": 8,
        "oasis1": {"slice_range": [6, 10]},
        "split": {"train": 0.4, "validate": 0.3, "test": 0.3},
    }
    with pytest.raises(DataError) as caught:
        ingest(make_config(**options), tmp_path / "ds")
    assert str(caught.value) == (
        f"{source}/disc1/OAS1_0005_MR1: no PROCESSED/MPRAGE/T88_111/"
        "OAS1_0005_MR1_mpr_n*_anon_111_t88_masked_gfc.hdr/.img"
    )
    out = ingest(make_config(on_bad_file="skip", **options), tmp_path / "ds")
    skipped = read_manifest(out)["skipped"]
    assert [f["path"] for f in skipped["files"]] == [
        "disc1/OAS1_0005_MR1",
        header.relative_to(source).as_posix(),
    ]
    assert "is not 3-D" in skipped["files"][1]["reason"]
    assert "OAS1_0002" not in sum(read_manifest(out)["subjects"].values(), [])


def test_an_unsafe_tar_member_stops_ingest(
    oasis1_tarball: Callable[..., Path], tmp_path: Path
) -> None:
    import tarfile

    evil = tarfile.TarInfo("../../escaped.txt")
    tarball = oasis1_tarball(extra=[evil])
    with pytest.raises(DataError, match=r"unsafe archive member '../../escaped.txt'"):
        ingest(make_config(source=str(tarball), on_bad_file="skip"), tmp_path / "ds")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "ds").exists()


# --- speed path, determinism ---------------------------------------------------------------------


def test_process_pool_gives_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    cases = {"train": range(1, 33), "validate": range(33, 37), "test": range(37, 41)}
    source = str(write_png_slices(tmp_path / "src", cases=cases, slices=8, size=16))
    options = {"source": source, "image_size": 16, "png_size": 16, "images_per_shard": 100}
    pooled = ingest(make_config(workers=2, **options), tmp_path / "pooled")
    serial = ingest(make_config(workers=1, **options), tmp_path / "serial")
    assert snapshot(pooled) == snapshot(serial)
    manifest = read_manifest(pooled)
    assert manifest["shards"]["train"] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert manifest["counts"]["train"] == 256


def test_same_input_and_params_give_identical_files(
    png_zip: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = make_config(source=str(png_zip(slices=2)), image_size=16, images_per_shard=4)
    first = snapshot(ingest(cfg, tmp_path / "one"))
    assert first == snapshot(ingest(cfg, tmp_path / "two"))
    manifest = json.loads(first["manifest.json"])
    assert manifest["shards"]["train"][0] == "train-00000-of-00002.tfrecord"


# --- atomic output -------------------------------------------------------------------------------


def test_a_failing_ingest_leaves_the_previous_dataset(
    png_folder: Callable[..., Path], tmp_path: Path
) -> None:
    source = png_folder(slices=2)
    out = ingest(make_config(source=str(source)), tmp_path / "ds")
    before = snapshot(out)
    damage(source, "truncated")
    with pytest.raises(DataError, match="truncated PNG"):
        ingest(make_config(source=str(source)), out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "slices"]  # no temporary left


def test_a_killed_ingest_leaves_the_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ingest(make_config(image_size=16, synthetic={"subjects": 3, "slices_per_subject": 1}), out)
    before = snapshot(out)
    params = tmp_path / "params.yaml"
    params.write_text(
        "data:\n  image_size: 64\n  synthetic:\n    subjects: 200\n    slices_per_subject: 50\n"
    )
    command = [
        sys.executable,
        "-m",
        "oasis_vqvae",
        "ingest",
        "--params",
        str(params),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".ds.tmp-*")):
            assert process.poll() is None, "ingest ended before it could be killed"
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.01)
        time.sleep(0.5)  # let it write into the temporary output
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert snapshot(out) == before
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["ds", "params.yaml"]  # no partial dataset anywhere
    # The next run clears the stale temporary output.
    ingest(make_config(image_size=16, synthetic={"subjects": 3, "slices_per_subject": 1}), out)
    assert not list(tmp_path.glob(".ds.tmp-*"))


# --- command line --------------------------------------------------------------------------------


def test_cli_ingests(png_folder: Callable[..., Path], tmp_path: Path) -> None:
    source = png_folder(slices=1)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {source}\n  image_size: 16\n  png_size: 32\n")
    command = [
        sys.executable,
        "-m",
        "oasis_vqvae",
        "ingest",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "ds"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ingest: train 3, validate 1, test 1 slices of 5 subjects, 0 skipped" in done.stderr
    assert read_manifest(tmp_path / "ds")["counts"] == {"train": 3, "validate": 1, "test": 1}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.image_size=100", "data.image_size: must be a power of two, got 100"),
        ("data.on_bad_file=ignore", "data.on_bad_file"),
        ("data.split.train=0.5", "data.split"),
        ("data.sorce=x", "data.sorce: unknown key"),
        ("data.oasis1.slice_range=[9, 3]", "data.oasis1"),
    ],
)
def test_cli_config_errors_are_one_line_naming_the_key(
    override: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  image_size: 32\n")
    status = main(
        ["ingest", "--params", str(params), "--out", str(tmp_path / "ds"), "--set", override]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and key in lines[0]
    assert not (tmp_path / "ds").exists()


def test_cli_errors_in_a_real_process(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {tmp_path / 'missing.zip'}\n  image_size: 32\n")
    base = [
        sys.executable,
        "-m",
        "oasis_vqvae",
        "ingest",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "ds"),
    ]
    bad_key = subprocess.run(
        [*base, "--set", "data.image_size=100"], capture_output=True, text=True
    )
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().splitlines() == [
        f"oasis-vqvae ingest: error: {params}: data.image_size: must be a power of two, got 100"
    ]
    missing = subprocess.run(base, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"oasis-vqvae ingest: error: {tmp_path / 'missing.zip'}: no such file or directory"
    ]
