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
from oasis_vqvae.data.shards import load_images, load_split, read_manifest
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
    assert manifest["source"] == {"kind": "png_slices", "location": str(source), "png_size": 32}
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
    assert manifest["subject_metadata"]["OAS1_0001"]["Age"] == 74
    assert manifest["subject_metadata"]["OAS1_0001"]["Delay"] is None
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
