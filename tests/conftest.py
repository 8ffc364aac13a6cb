"""Shared fixtures: small inputs in the real OASIS layouts, written by the tests themselves.

* PNG slices: ``keras_png_slices_{split}/case_NNN_slice_M.nii.png`` (+ ``_seg_`` masks),
  optionally under a top folder and zipped like the real ``keras_png_slices_data.zip``;
* raw OASIS-1: tiny Analyze 7.5 volumes in ``discN/OAS1_XXXX_MR1/PROCESSED/MPRAGE/T88_111/``,
  extracted or packed as ``oasis_cross-sectional_discN.tar.gz``, and a demographics CSV.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from oasis_vqvae.config import DataConfig

CASES: dict[str, tuple[int, ...]] = {"train": (1, 2, 3), "validate": (4,), "test": (5,)}
"""Default cases per split of the PNG fixtures."""
MASK_LABELS = (0, 85, 170, 255)
VOLUME_SHAPE = (16, 20, 16, 1)
"""Tiny stand-in for the real 176 x 208 x 176 x 1 T88 volumes (X, Y, Z, 1)."""
T88 = ("PROCESSED", "MPRAGE", "T88_111")


# --- parallel runs ------------------------------------------------------------------------------


def pytest_configure(config):
    """Under ``pytest -n N``, TensorFlow in every process gets its share of the cores.

    Set here, in the controller, so the xdist workers and every stage process they start
    inherit it. Each TensorFlow process otherwise sizes its thread pools to all cores, and two
    workers on two cores spin against each other (on the same tree: 12.9 instead of 14.0 min,
    22.2 instead of 24.7 CPU-minutes).
    """
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1 and "PYTEST_XDIST_WORKER" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(name, threads)


# --- order -------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Files with a ``slow`` test first, in collection order otherwise.

    ``make test`` hands whole files to xdist workers (``--dist loadfile``); the few long
    files (a whole ``dvc repro``, a kfp.local DAG run) then start while the many short ones
    fill the other worker, instead of running last on one worker while the other idles.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: False (slow) sorts first


# --- configs -------------------------------------------------------------------------------------


def make_config(**fields: Any) -> DataConfig:
    """A validated DataConfig with small, fast defaults (tiny images, one worker)."""
    values: dict[str, Any] = {"image_size": 32, "png_size": 32, "workers": 1}
    values.update(fields)
    return DataConfig.model_validate_json(json.dumps(values, default=str))


@pytest.fixture
def config() -> Callable[..., DataConfig]:
    return make_config


# --- PNG slices ----------------------------------------------------------------------------------


def slice_pixels(case: int, index: int, size: int) -> np.ndarray:
    """Brain-ish test content, uint8 (size, size): a noisy bright disc on a dark background."""
    rng = np.random.default_rng([case, index])
    y, x = np.mgrid[:size, :size]
    inside = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (0.4 * size) ** 2
    pixels = np.where(
        inside, rng.integers(60, 256, (size, size)), rng.integers(0, 12, (size, size))
    )
    return pixels.astype(np.uint8)


def mask_pixels(case: int, index: int, size: int) -> np.ndarray:
    """A label mask with the real set's values 0, 85, 170, 255, uint8 (size, size)."""
    rng = np.random.default_rng([case, index, 9])
    return np.asarray(MASK_LABELS, np.uint8)[rng.integers(0, 4, (size, size))]


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)


def write_png_slices(
    root: Path,
    *,
    cases: Mapping[str, Iterable[int]] = CASES,
    slices: int = 3,
    size: int = 32,
    segmentation: bool = False,
    top: str | None = None,
) -> Path:
    """Write slices (and masks) in the OASIS PNG layout under ``root[/top]``; return ``root``."""
    base = root / top if top else root
    for split, split_cases in cases.items():
        folder = base / f"keras_png_slices_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for case in split_cases:
            for index in range(slices):
                name = f"case_{case:03d}_slice_{index}.nii.png"
                save_png(folder / name, slice_pixels(case, index, size))
                if segmentation:
                    mask = base / f"keras_png_slices_seg_{split}" / f"seg_{name[5:]}"
                    save_png(mask, mask_pixels(case, index, size))
    return root


def zip_tree(folder: Path, archive: Path, extra: Mapping[str, bytes] | None = None) -> Path:
    """Zip every file under ``folder`` (paths relative to it), plus ``extra`` raw members."""
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return archive


@pytest.fixture
def png_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``png_folder(name="slices", **write_png_slices options) -> folder``."""

    def make(name: str = "slices", **options: Any) -> Path:
        return write_png_slices(tmp_path / name, **options)

    return make


@pytest.fixture
def png_zip(tmp_path: Path) -> Callable[..., Path]:
    """Factory: the PNG layout nested in ``keras_png_slices_data/`` inside a .zip."""

    def make(
        name: str = "keras_png_slices_data.zip",
        extra: Mapping[str, bytes] | None = None,
        **options: Any,
    ) -> Path:
        tree = write_png_slices(tmp_path / f"{name}.tree", top="keras_png_slices_data", **options)
        return zip_tree(tree, tmp_path / name, extra)

    return make


# --- raw OASIS-1 ---------------------------------------------------------------------------------


def volume_data(subject: int, shape: tuple[int, ...] = VOLUME_SHAPE) -> np.ndarray:
    """A brain-masked int16 volume: an ellipsoid of tissue, zero outside.

    A bright marker column sits at the subject's anterior right (x index 1 and y index
    Y - 2 in Analyze's LAS storage order) on every axial slice, to check orientation.
    """
    rng = np.random.default_rng(subject)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape[:3]), indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.8
    data = np.where(inside, rng.integers(100, 1000, shape[:3]), 0).astype(np.int16)
    data[1, shape[1] - 2, :] = 2000
    return data.reshape(shape)


def write_volume(header: Path, data: np.ndarray) -> Path:
    """Write an Analyze 7.5 pair ``header`` (.hdr) + .img."""
    header.parent.mkdir(parents=True, exist_ok=True)
    nib.AnalyzeImage(data, None).to_filename(header)
    return header


def session_dir(base: Path, subject: int) -> Path:
    return base / f"OAS1_{subject:04d}_MR1"


def volume_header(base: Path, subject: int, n: int = 4) -> Path:
    session = f"OAS1_{subject:04d}_MR1"
    return session_dir(base, subject).joinpath(
        *T88, f"{session}_mpr_n{n}_anon_111_t88_masked_gfc.hdr"
    )


def write_oasis1_disc(
    root: Path,
    *,
    subjects: Iterable[int] = (1, 2, 3, 4, 5),
    disc: str = "disc1",
    shape: tuple[int, ...] = VOLUME_SHAPE,
    without_volume: Iterable[int] = (),
) -> Path:
    """An extracted disc ``root/discN/OAS1_XXXX_MR1/...``; returns the disc folder.

    Each session also gets decoys the reader must ignore: the unmasked T88 volume and a
    RAW acquisition.
    """
    base = root / disc
    for subject in subjects:
        session = session_dir(base, subject)
        (session / "RAW").mkdir(parents=True, exist_ok=True)
        if subject in set(without_volume):
            continue
        data = volume_data(subject, shape)
        write_volume(volume_header(base, subject), data)
        name = f"{session.name}_mpr_n4_anon_111_t88_gfc.hdr"
        write_volume(session.joinpath(*T88, name), data + 50)
        write_volume(session / "RAW" / f"{session.name}_mpr-1_anon.hdr", data + 7)
    return base


def tar_disc(disc: Path, tarball: Path, extra: Iterable[tarfile.TarInfo] = ()) -> Path:
    """Pack ``disc`` as the real tarballs do (``discN/...`` inside), plus ``extra`` members."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(disc, arcname=disc.name)
        for member in extra:
            tar.addfile(member)
    return tarball


@pytest.fixture
def oasis1_disc(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an extracted OASIS-1 disc in ``tmp_path/name``; returns that folder."""

    def make(name: str = "oasis1", **options: Any) -> Path:
        root = tmp_path / name
        write_oasis1_disc(root, **options)
        return root

    return make


@pytest.fixture
def oasis1_tarball(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``oasis_cross-sectional_disc1.tar.gz`` alone in ``tmp_path/name``."""

    def make(
        name: str = "oasis1-tar", extra: Iterable[tarfile.TarInfo] = (), **options: Any
    ) -> Path:
        disc = write_oasis1_disc(tmp_path / f"{name}.src", **options)
        folder = tmp_path / name
        folder.mkdir()
        return tar_disc(disc, folder / f"oasis_cross-sectional_{disc.name}.tar.gz", extra)

    return make


DEMOGRAPHICS = """ID,M/F,Hand,Age,Educ,SES,MMSE,CDR,eTIV,nWBV,ASF,Delay
OAS1_0001_MR1,F,R,74,2,3,29,0,1344,0.743,1.306,N/A
OAS1_0002_MR1,F,R,55,4,1,29,0,1147,0.81,1.531,N/A
OAS1_0003_MR1,F,R,73,4,3,27,0.5,1454,0.708,1.207,
OAS1_0004_MR1,M,R,28,,,,,1588,0.803,1.105,
OAS1_0005_MR1,M,R,18,,,,,1737,0.848,1.01,
"""


@pytest.fixture
def demographics(tmp_path: Path) -> Path:
    path = tmp_path / "oasis_cross-sectional.csv"
    path.write_text(DEMOGRAPHICS)
    return path


@pytest.fixture(autouse=True, scope="session")
def isolated_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Track every test run (and its subprocesses) in a throwaway store, never the repo's."""
    store = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


# --- a training stage killed right after a checkpoint ---------------------------------------------

KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
import keras
from oasis_vqvae import cli, training

kill_after = int(sys.argv.pop(1))
fit_resumable = training.fit_resumable

class Kill(keras.callbacks.Callback):  # a check: runs after the epoch's checkpoint is written
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

def killed_fit(*args, checks=(), **kwargs):
    return fit_resumable(*args, checks=[*checks, Kill()], **kwargs)

training.fit_resumable = killed_fit
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="session")
def killed_after_epoch() -> Callable[[int, list[str]], list[str]]:
    """Factory: the command running ``oasis-vqvae ARGS`` SIGKILLed after epoch N's checkpoint.

    A real kill of the real stage at a known point (no waiting for a file to appear): the
    training SIGKILLs its own process once epoch N's checkpoint is on disk.
    """

    def command(epochs_done: int, args: list[str]) -> list[str]:
        return [sys.executable, "-c", KILLED_AFTER_CHECKPOINT, str(epochs_done), *args]

    return command
