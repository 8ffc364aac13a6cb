"""Source 2: the raw OASIS-1 cross-sectional release (Marcus et al., 2007), as distributed.

``data.source`` is a folder of disc tarballs (``oasis_cross-sectional_discN.tar.gz``) and/or
their extracted folders (``discN/OAS1_XXXX_MR1/...``), or a single tarball. Of each subject's
first session we read the atlas-registered, gain-field corrected, brain-masked volume::

    OAS1_XXXX_MR1/PROCESSED/MPRAGE/T88_111/OAS1_XXXX_MR1_mpr_n<N>_anon_111_t88_masked_gfc.hdr/.img

(Analyze 7.5, 176 x 208 x 176 x 1 in the real data; the third axis is axial). Slices
``oasis1.slice_range`` / ``slice_step`` of it become 8-bit PNGs: shown the radiological way
(nose up, the subject's right on the image's left), intensities scaled so the
``clip_percentile`` of the brain voxels is white, zero-padded to a square and resized to
``data.image_size``. Subjects are split into train/validate/test by ``data.split`` and
``data.seed``; no subject is in two splits.

Orientation comes from the header through nibabel, which reads Analyze 7.5 the standard way
(x from the subject's right to left, y posterior to anterior, z inferior to superior).

:func:`scan` and :func:`read_demographics` are the cheap checks (parent), :func:`collect`
extracts only the needed tarball members, :func:`slice_volume` is the worker (no TensorFlow).
"""

from __future__ import annotations

import logging
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes, apply_orientation, io_orientation
from PIL import Image
from tqdm.auto import tqdm

from oasis_vqvae.data import labels
from oasis_vqvae.data.png_slices import encode_png
from oasis_vqvae.data.shards import SPLITS, BadFile, Record
from oasis_vqvae.data.synthetic import split_subjects
from oasis_vqvae.errors import DataError

log = logging.getLogger(__name__)

YOUNG_AGE = 60
YOUNG_CDR = 0.0
"""CDR given to subjects under :data:`YOUNG_AGE` whose CDR is missing (never rated: healthy)."""
SESSION = re.compile(r"OAS1_(\d{4})_MR1")
"""First-session folder; OAS1_XXXX_MR2 (the reliability rescans) would duplicate subjects."""
VOLUME_FOLDER = ("PROCESSED", "MPRAGE", "T88_111")
VOLUME = re.compile(r"(OAS1_\d{4}_MR1)_mpr_n(\d+)_anon_111_t88_masked_gfc\.(hdr|img)")
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
DISC_TARBALL = re.compile(r"oasis_cross-sectional_(disc\d+)\.(tar\.gz|tgz)")


class Oasis1Scan(NamedTuple):
    """Where the volumes are: tarballs still to stream through and extracted session folders."""

    root: Path
    tarballs: tuple[Path, ...]
    sessions: tuple[Path, ...]


class Volume(NamedTuple):
    """The chosen volume of one subject."""

    subject: str
    header: Path
    """Local .hdr file (its .img beside it)."""
    path: str
    """The .hdr as named in reports: relative to the source location."""


class VolumeTask(NamedTuple):
    """Everything a worker needs to turn one volume into records."""

    subject: str
    split: str
    header: str
    path: str
    slices: tuple[int, int, int]
    """Axial indices as (start, stop, step)."""
    clip_percentile: float
    image_size: int


def subject_id(number: str) -> str:
    """``"0001"`` -> ``"OAS1_0001"`` (the OASIS-1 subject id, without the session suffix)."""
    return f"OAS1_{number}"


# --- cheap checks (parent) -----------------------------------------------------------------------


def scan(root: Path, *, location: str) -> Oasis1Scan:
    """Find the disc tarballs and extracted ``OAS1_XXXX_MR1`` folders of a source.

    A tarball whose extracted ``discN/`` folder sits beside it is not read again.

    Raises:
        DataError: nothing of OASIS-1 found, or a tarball that is not a readable tar archive.
    """
    if root.is_file():
        if not root.name.endswith(TARBALL_SUFFIXES):
            raise DataError(f"{location}: expected a .tar.gz of OASIS-1, a .zip or a folder")
        tarballs: list[Path] = [root]
        sessions: list[Path] = []
    else:
        tarballs = [p for p in _tarballs(root) if not _extracted_beside(p)]
        sessions = sorted(_session_folders(root), key=lambda p: p.name)
    if not tarballs and not sessions:
        raise DataError(
            f"{location}: no OASIS-1 disc tarballs (*.tar.gz) or OAS1_XXXX_MR1 folders found"
        )
    for tarball in tarballs:
        _check_tarball(tarball, _where(root, tarball, location))
    return Oasis1Scan(root, tuple(tarballs), tuple(sessions))


def has_layout(root: Path) -> bool:
    """True if the folder ``root`` holds tarballs or ``OAS1_XXXX_MR1`` folders (1-2 levels down)."""
    return any(_tarballs(root)) or any(_session_folders(root))


def _tarballs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(TARBALL_SUFFIXES))


def _extracted_beside(tarball: Path) -> bool:
    match = DISC_TARBALL.fullmatch(tarball.name)
    if match is None or not (tarball.parent / match[1]).is_dir():
        return False
    log.info("reading %s/ instead of %s (already extracted)", match[1], tarball.name)
    return True


def _session_folders(root: Path) -> list[Path]:
    """``OAS1_XXXX_MR1`` folders one or two levels down (``discN/OAS1_...`` or ``OAS1_...``)."""
    found = []
    for child in root.iterdir():
        if SESSION.fullmatch(child.name) and child.is_dir():
            found.append(child)
        elif child.is_dir() and not child.name.startswith("."):
            found.extend(p for p in child.iterdir() if SESSION.fullmatch(p.name) and p.is_dir())
    return found


def _check_tarball(tarball: Path, where: str) -> None:
    """Open it and read the first header: catches non-tar files before any long work."""
    try:
        with tarfile.open(tarball, "r|*") as tar:
            tar.next()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{where}: not a readable tar archive ({err})") from None


def read_demographics(csv: Path, *, location: str) -> labels.Labels:
    """Subject id -> its attributes from ``oasis_cross-sectional.csv``, under canonical names.

    The real file's columns ID, M/F, Hand, Age, Educ, SES, MMSE, CDR, eTIV, nWBV, ASF, Delay
    become ``sex`` (F/M), ``hand``, ``age``, ``educ``, ``ses``, ``mmse``, ``cdr``, ``etiv``,
    ``nwbv``, ``asf``, ``delay`` (see `oasis_vqvae.data.labels`; missing values are None).
    Only first sessions (``OAS1_XXXX_MR1``) are used. OASIS-1 rated CDR only from age 60
    (the younger subjects were recruited as nondemented): a missing CDR of a subject under
    60 is read as :data:`YOUNG_CDR` (0); over 60 it stays None.

    Raises:
        DataError: unreadable, no ID column, a first session twice, a bad value.
    """

    def key(cell: str, line: int) -> str | None:
        match = SESSION.fullmatch(cell)
        return subject_id(match[1]) if match else None

    table = labels.read_labels(csv, location=location, key_column="ID", key=key)
    if "cdr" in table.kinds:
        for row in table.rows.values():
            age = row.get("age")
            if row["cdr"] is None and age is not None and age < YOUNG_AGE:
                row["cdr"] = YOUNG_CDR
    return table


def cdr_class(attributes: dict[str, Any] | None) -> str:
    """``"0"``, ``"positive"`` (CDR > 0) or ``"unknown"``: the strata of the subject split."""
    cdr = (attributes or {}).get("cdr")
    return "unknown" if cdr is None else ("0" if cdr == 0 else "positive")


# --- finding the volumes (parent, inside the temporary output) -----------------------------------


def collect(
    found: Oasis1Scan, scratch: Path, *, location: str, workers: int
) -> tuple[list[Volume], list[BadFile]]:
    """The volume of every subject, in subject order, extracting tarball members into ``scratch``.

    Tarballs are streamed once each (in threads: gzip inflation releases the GIL) and only the
    masked T88 volumes are written out; every member is checked with the tarfile ``data``
    filter rules. Subjects without such a volume come back as bad files.

    Raises:
        DataError: an unsafe or damaged tarball member, or a subject found twice.
    """
    sessions = [
        (folder.relative_to(found.root).as_posix(), _pick(_headers_in(folder), found.root))
        for folder in found.sessions
    ]
    if found.tarballs:
        sessions += _extract_all(found, scratch, location=location, workers=workers)
    return _volumes(sessions, location)


Picked = tuple[Path, str] | None
"""A session's chosen volume: (local .hdr, path as reported), or None if it has none."""


def _headers_in(session: Path) -> list[Path]:
    folder = session.joinpath(*VOLUME_FOLDER)
    return sorted(folder.glob(f"{session.name}_mpr_n*_anon_111_t88_masked_gfc.hdr"))


def _pick(headers: list[Path], base: Path, prefix: str = "") -> Picked:
    """The .hdr with its .img present and the most averaged acquisitions (highest ``n``)."""
    complete = [h for h in headers if VOLUME.fullmatch(h.name) and h.with_suffix(".img").is_file()]
    if not complete:
        return None
    best = max(complete, key=lambda h: (int(VOLUME.fullmatch(h.name)[2]), h.name))
    return best, prefix + best.relative_to(base).as_posix()


def _extract_all(
    found: Oasis1Scan, scratch: Path, *, location: str, workers: int
) -> list[tuple[str, Picked]]:
    """(session path as reported, chosen volume) of every session in every tarball."""
    jobs = [
        (tarball, scratch / f"tar{index}", _where(found.root, tarball, location))
        for index, tarball in enumerate(found.tarballs)
    ]
    sessions = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        results = pool.map(lambda job: extract_tarball(*job), jobs)
        progress = tqdm(results, total=len(jobs), desc="extract", unit="tarball")
        for (tarball, dest, _), extracted in zip(jobs, progress, strict=True):
            prefix = "" if tarball == found.root else f"{tarball.name}/"
            for session_path, headers in extracted.items():
                sessions.append((prefix + session_path, _pick(headers, dest, prefix)))
    return sessions


def _volumes(
    sessions: list[tuple[str, Picked]], location: str
) -> tuple[list[Volume], list[BadFile]]:
    """Volumes by subject; sessions without one are bad; a subject may appear only once."""
    volumes: dict[str, Volume] = {}
    bad: list[BadFile] = []
    seen: dict[str, str] = {}
    for session_path, picked in sessions:
        session = PurePosixPath(session_path).name
        subject = subject_id(SESSION.fullmatch(session)[1])
        if subject in seen:
            raise DataError(
                f"{location}: subject {subject} appears twice: {seen[subject]} and {session_path}"
            )
        seen[subject] = session_path
        if picked is None:
            volume_name = f"{session}_mpr_n*_anon_111_t88_masked_gfc.hdr/.img"
            bad.append(BadFile(session_path, f"no {'/'.join(VOLUME_FOLDER)}/{volume_name}"))
        else:
            volumes[subject] = Volume(subject, *picked)
    return [volumes[subject] for subject in sorted(volumes)], sorted(bad)


def extract_tarball(tarball: Path, dest: Path, where: str) -> dict[str, list[Path]]:
    """Stream through one tarball; extract only the masked T88 volumes into ``dest``.

    Returns every ``.../OAS1_XXXX_MR1`` session path seen -> the .hdr files extracted for it
    (empty when the session lacks the volume).

    Raises:
        DataError: a member that is absolute, escapes the folder, is a link to outside, a
            device, a wanted volume that is not a regular file, or a damaged archive.
    """
    sessions: dict[str, list[Path]] = {}
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r|*") as tar:  # streaming: one pass, forward only
            for member in tar:
                _check_member(member, dest, where)
                session_path, wanted = _classify(member.name)
                if session_path is None:
                    continue
                headers = sessions.setdefault(session_path, [])
                if not wanted:
                    continue
                if not member.isfile():
                    raise DataError(f"{where}: member {member.name!r} is not a regular file")
                tar.extract(member, dest, filter="data")
                if member.name.endswith(".hdr"):
                    headers.append(dest / member.name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{where}: damaged tar archive ({type(err).__name__}: {err})") from None
    return sessions


def _check_member(member: tarfile.TarInfo, dest: Path, where: str) -> None:
    """The ``data`` filter's rules for every member: no absolute or escaping paths or links.

    Stricter than the filter on one point: it strips a leading ``/``, we refuse the member.
    """
    if member.name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", member.name):
        raise DataError(f"{where}: unsafe archive member {member.name!r} (absolute path)")
    try:
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as err:
        raise DataError(f"{where}: unsafe archive member {member.name!r} ({err})") from None


def _classify(name: str) -> tuple[str | None, bool]:
    """``(session path, is a wanted volume file)`` of a member name; (None, False) if no session."""
    parts = PurePosixPath(name).parts  # also drops "./" components
    for index, part in enumerate(parts):
        if SESSION.fullmatch(part):
            rest = parts[index + 1 :]
            match = VOLUME.fullmatch(rest[-1]) if len(rest) == len(VOLUME_FOLDER) + 1 else None
            wanted = match is not None and tuple(rest[:-1]) == VOLUME_FOLDER and match[1] == part
            return "/".join(parts[: index + 1]), wanted
    return None, False


def _where(root: Path, tarball: Path, location: str) -> str:
    """How to name a tarball in messages: the source itself, or the source + its file name."""
    return location if tarball == root else f"{location}/{tarball.name}"


def assign_splits(
    subjects: list[str],
    fractions: tuple[float, float, float],
    seed: int,
    *,
    location: str,
    strata: dict[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> split, at random from ``seed`` but deterministic; every split gets a subject.

    With ``strata`` (subject -> class, e.g. :func:`cdr_class`) each class is split on its
    own (see `oasis_vqvae.data.synthetic.split_subjects`).

    Raises:
        DataError: fewer than 3 subjects.
    """
    if len(subjects) < len(SPLITS):
        raise DataError(
            f"{location}: {len(subjects)} OASIS-1 subject(s) with a volume; "
            "need at least 3 (one per split)"
        )
    ordered = sorted(subjects)
    classes = None if strata is None else [strata.get(subject, "") for subject in ordered]
    groups = split_subjects(len(ordered), seed, fractions, classes)
    return {
        ordered[number - 1]: split
        for split, group in zip(SPLITS, groups, strict=True)
        for number in group
    }


# --- slicing (worker processes) ------------------------------------------------------------------


def slice_volume(task: VolumeTask) -> list[Record | BadFile]:
    """One record per kept axial slice of the volume, or a single bad file if it is unusable."""
    try:
        volume, affine = load_volume(task.header)
        start, stop, step = task.slices
        indices = range(start, min(stop, volume.shape[2]), step)
        if not indices:
            raise DataError(
                f"volume has {volume.shape[2]} axial slices, none in "
                f"data.oasis1.slice_range [{start}, {stop})"
            )
        scale = 255.0 / brain_percentile(volume, task.clip_percentile)
        views = radiological_axial(volume[:, :, indices.start : indices.stop : step], affine)
    except DataError as err:
        return [BadFile(task.path, str(err))]
    records: list[Record | BadFile] = []
    for index, view in zip(indices, views, strict=True):
        pixels = square_uint8(np.clip(view * scale, 0.0, 255.0), task.image_size)
        image = encode_png(Image.fromarray(pixels))
        records.append(
            Record(task.split, task.subject, index, image, int(pixels.min()), int(pixels.max()))
        )
    return records


def load_volume(header: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D volume as float32 ``(X, Y, Z)`` and its voxel-to-world affine (4, 4).

    Trailing axes of length 1 are dropped (the real files are 176 x 208 x 176 x 1).

    Raises:
        DataError: unreadable, or not 3-D after dropping those axes.
    """
    try:
        image = nib.load(header)
        shape = image.shape
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3:
            raise DataError(
                f"volume of shape {tuple(image.shape)} is not 3-D "
                "(after dropping trailing axes of length 1)"
            )
        data = image.get_fdata(dtype=np.float32).reshape(shape)
    except DataError:
        raise
    except Exception as err:  # nibabel: ImageFileError, EOFError, OSError, ValueError...
        raise DataError(f"cannot be read as a volume ({type(err).__name__}: {err})") from None
    return data, image.affine


def brain_percentile(volume: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of the brain voxels (above 0: the volume is brain-masked).

    Taken over the whole volume, so all slices of a subject share one intensity scale.

    Raises:
        DataError: no voxel above 0.
    """
    brain = volume[volume > 0]
    if brain.size == 0:
        raise DataError("volume holds no brain voxels (nothing above 0)")
    return float(np.percentile(brain, percentile))


def radiological_axial(stack: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Axial slices ``(X, Y, n)`` -> images ``(n, rows, cols)`` as radiologists view them.

    Rows run from anterior (nose, top) to posterior, columns from the subject's right to left.
    The slice order along the third axis is kept as stored.

    Raises:
        DataError: the third axis is not inferior-superior.
    """
    orientation = io_orientation(affine)
    if orientation[2, 0] != 2:
        codes = "".join(aff2axcodes(affine))
        raise DataError(f"third axis is not axial (voxel axes point {codes})")
    in_plane = orientation.copy()
    in_plane[2] = (2, 1)  # leave the slice axis alone
    ras = apply_orientation(stack, in_plane)  # x toward the right, y toward anterior
    return np.flip(ras.transpose(2, 1, 0), axis=(1, 2))


def square_uint8(view: np.ndarray, size: int) -> np.ndarray:
    """Intensities in [0, 255], ``(rows, cols)`` -> uint8 ``(size, size)``.

    Zero-padded (background) to a centred square, then resized with Lanczos (antialiased
    when shrinking) in floating point, rounded once at the end.
    """
    rows, cols = view.shape
    side = max(rows, cols)
    square = np.zeros((side, side), np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    square[top : top + rows, left : left + cols] = view
    if side != size:
        resized = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
        square = np.asarray(resized)
    return np.clip(np.rint(square), 0, 255).astype(np.uint8)
