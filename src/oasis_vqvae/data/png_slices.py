"""Source 1: the preprocessed OASIS slices, 8-bit grayscale PNGs in a folder or a ``.zip``.

Layout (the real zip nests it in a top folder such as ``keras_png_slices_data/``; the split
folders are looked for up to 2 levels below the folder or the zip's root)::

    keras_png_slices_{train,validate,test}/case_NNN_slice_M.nii.png        slices
    keras_png_slices_seg_{train,validate,test}/seg_NNN_slice_M.nii.png     masks (optional)

Case ``NNN`` becomes the subject id ``OAS-case-NNN``, ``M`` the slice index. The built-in
synthetic source writes the same layout and is read by the same code.

Two halves: :func:`scan` lists and checks the layout and every archive member name (cheap,
in the parent, before any decoding); :func:`decode_batch` reads, validates, optionally
resizes and re-encodes a batch of slices (in worker processes, so no TensorFlow here).
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from oasis_vqvae.data.shards import SPLITS, BadFile, Record
from oasis_vqvae.errors import DataError

if TYPE_CHECKING:
    import numpy as np

SPLIT_FOLDERS = {split: f"keras_png_slices_{split}" for split in SPLITS}
SEG_FOLDERS = {split: f"keras_png_slices_seg_{split}" for split in SPLITS}
SLICE_NAME = re.compile(r"case_(\d+)_slice_(\d+)\.nii\.png")
MAX_DEPTH = 2
"""How many folder levels above the split folders are searched (the real zip has one)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
"""The IEND chunk (length, type, CRC): a PNG cut short lacks it, yet Pillow may still decode."""
COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


class SliceRef(NamedTuple):
    """One slice to read; paths are POSIX paths relative to the folder or the zip's root."""

    split: str
    subject: str
    slice: int
    path: str
    mask: str | None = None
    """The slice's segmentation mask (only when masks are ingested)."""


class PngListing(NamedTuple):
    """What :func:`scan` found: the slices in (split, subject, slice) order and bad names."""

    refs: list[SliceRef]
    bad: list[BadFile]


class DecodeTask(NamedTuple):
    """A batch of slices for one worker call (a batch keeps the per-image IPC small)."""

    root: str
    """Folder or .zip holding the files."""
    refs: tuple[SliceRef, ...]
    png_size: int
    """Side every input PNG must have."""
    image_size: int
    """Side of the stored images; inputs of another size are resized."""


def subject_id(case: str) -> str:
    """``"001"`` -> ``"OAS-case-001"`` (the case number as written in the file name)."""
    return f"OAS-case-{case}"


def case_number(subject: str) -> int:
    """``"OAS-case-007"`` -> ``7``: the key of the subject's row in a ``data.labels`` CSV."""
    return int(subject.removeprefix("OAS-case-"))


# --- listing (parent, cheap) ---------------------------------------------------------------------


def has_layout(root: Path) -> bool:
    """True if the folder ``root`` has a keras_png_slices_* split folder within MAX_DEPTH levels."""
    names = set(SPLIT_FOLDERS.values())
    level = [root]
    for _ in range(MAX_DEPTH + 1):
        children = [
            child
            for folder in level
            for child in folder.iterdir()
            if child.is_dir() and not child.name.startswith(".")
        ]
        if any(child.name in names for child in children):
            return True
        level = children
    return False


def scan(root: Path, *, segmentation: bool, location: str) -> PngListing:
    """List and check the slices of a folder or .zip in the OASIS PNG layout.

    ``location`` is how the user named the source (a path or gs:// URI), used in messages.

    Raises:
        DataError: no split folders within 2 levels, a missing or empty split folder (or
            mask folder with ``segmentation``), an archive member escaping the archive, a
            zip that cannot be read.
    """
    folders = _zip_folders(root, location) if root.is_file() else _disk_folders(root)
    base = _find_base(folders, location)
    refs: list[SliceRef] = []
    bad: list[BadFile] = []
    for split in SPLITS:
        folder = posixpath.join(base, SPLIT_FOLDERS[split])
        names = folders.get(folder)
        if names is None:
            raise DataError(f"{location}: no {folder}/ folder (need train, validate and test)")
        if not names:
            raise DataError(f"{location}/{folder}: split folder is empty")
        masks = _mask_names(folders, base, split, location) if segmentation else None
        _list_split(split, folder, names, masks, refs, bad)
    refs.sort(key=_order)
    return PngListing(refs, sorted(bad))


def _list_split(
    split: str,
    folder: str,
    names: list[str],
    masks: tuple[str, set[str]] | None,
    refs: list[SliceRef],
    bad: list[BadFile],
) -> None:
    """Turn the file names of one split folder into refs; misnamed files and lost masks are bad."""
    for name in names:
        path = f"{folder}/{name}"
        match = SLICE_NAME.fullmatch(name)
        if match is None:
            bad.append(BadFile(path, "name is not case_NNN_slice_M.nii.png"))
            continue
        case, index = match.groups()
        mask = None
        if masks is not None:
            mask_folder, mask_names = masks
            mask_name = f"seg_{case}_slice_{index}.nii.png"
            if mask_name not in mask_names:
                bad.append(BadFile(path, f"its mask {mask_folder}/{mask_name} is missing"))
                continue
            mask = f"{mask_folder}/{mask_name}"
        refs.append(SliceRef(split, subject_id(case), int(index), path, mask))


def _mask_names(
    folders: dict[str, list[str]], base: str, split: str, location: str
) -> tuple[str, set[str]]:
    folder = posixpath.join(base, SEG_FOLDERS[split])
    if folder not in folders:
        raise DataError(f"{location}: no {folder}/ folder, needed by data.segmentation: true")
    return folder, set(folders[folder])


def _order(ref: SliceRef) -> tuple[int, int, str, int, str]:
    """Split, then subject (by case number), then slice: the order of records in the shards."""
    case = ref.subject.removeprefix("OAS-case-")
    return SPLITS.index(ref.split), int(case), case, ref.slice, ref.path


def _find_base(folders: dict[str, list[str]], location: str) -> str:
    """The shallowest folder (within MAX_DEPTH) that holds any split folder."""
    split_names = set(SPLIT_FOLDERS.values())
    bases = {
        posixpath.dirname(folder)
        for folder in folders
        if posixpath.basename(folder) in split_names
        and _depth(posixpath.dirname(folder)) <= MAX_DEPTH
    }
    if not bases:
        raise DataError(
            f"{location}: no keras_png_slices_{{train,validate,test}}/ folders "
            f"(looked up to {MAX_DEPTH} levels down)"
        )
    shallowest = min(_depth(base) for base in bases)
    candidates = sorted(base for base in bases if _depth(base) == shallowest)
    if len(candidates) > 1:
        raise DataError(f"{location}: several data sets in one source: {candidates}")
    return candidates[0]


def _depth(folder: str) -> int:
    return 0 if folder == "" else folder.count("/") + 1


def _disk_folders(root: Path) -> dict[str, list[str]]:
    """Relative folder -> sorted file names, for folders up to MAX_DEPTH + 1 levels down."""
    folders: dict[str, list[str]] = {}
    pending = [("", root)]
    while pending:
        relative, path = pending.pop()
        files = []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # .DS_Store and friends
                if entry.is_dir():
                    child = posixpath.join(relative, entry.name)
                    if _depth(child) <= MAX_DEPTH + 1:
                        pending.append((child, Path(entry.path)))
                else:
                    files.append(entry.name)
        folders[relative] = sorted(files)
    return folders


def _zip_folders(root: Path, location: str) -> dict[str, list[str]]:
    """Folder -> sorted file names of a zip, after checking that no member escapes its root."""
    try:
        with zipfile.ZipFile(root) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{location}: not a readable .zip archive ({err})") from None
    folders: dict[str, set[str]] = {}
    for name in names:
        _check_member(name, location)
        parts = PurePosixPath(name).parts
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            continue  # macOS resource forks and hidden files
        for depth in range(len(parts)):  # register every folder, even without its own entry
            folders.setdefault("/".join(parts[:depth]), set())
        if name.endswith("/"):
            folders.setdefault("/".join(parts), set())
        else:
            folders["/".join(parts[:-1])].add(parts[-1])  # a set: zips may repeat a name
    return {folder: sorted(files) for folder, files in folders.items()}


def _check_member(name: str, location: str) -> None:
    """Reject a member whose path is absolute or climbs out of the archive (``../``)."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", posix):
        raise DataError(f"{location}: archive member {name!r} escapes the archive folder")


# --- decoding (worker processes) -----------------------------------------------------------------


def decode_batch(task: DecodeTask) -> list[Record | BadFile]:
    """Read, check and (if needed) resize a batch of slices; one result per ref, in order."""
    read = _reader(task.root)
    return [_decode_one(read, ref, task.png_size, task.image_size) for ref in task.refs]


def _decode_one(
    read: Callable[[str], bytes], ref: SliceRef, png_size: int, image_size: int
) -> Record | BadFile:
    path = ref.path
    try:
        image, (low, high) = stored_png(read(path), png_size, image_size, Image.Resampling.LANCZOS)
        mask = None
        if ref.mask is not None:
            path = ref.mask
            mask, _ = stored_png(read(path), png_size, image_size, Image.Resampling.NEAREST)
    except DataError as err:
        return BadFile(path, str(err))
    return Record(ref.split, ref.subject, ref.slice, image, low, high, mask)


def stored_png(
    data: bytes, png_size: int, image_size: int, resample: Image.Resampling
) -> tuple[bytes, tuple[int, int]]:
    """The PNG bytes to store for one input PNG, and the (min, max) of their pixels.

    The input is kept byte for byte when it already has the stored size (no re-encoding);
    otherwise it is resized with ``resample`` (LANCZOS for slices, NEAREST for masks, whose
    values are labels) and re-encoded with fast compression.

    Raises:
        DataError: the bytes are not a complete 8-bit grayscale PNG of png_size x png_size.
    """
    image = open_png(data, png_size)
    if png_size != image_size:
        image = image.resize((image_size, image_size), resample)
        data = encode_png(image)
    return data, image.getextrema()  # in C, without copying the pixels out


def decode_png(data: bytes, size: int) -> np.ndarray:
    """Pixels uint8 ``(size, size)`` of an 8-bit grayscale PNG, after checking everything.

    Raises:
        DataError: as :func:`open_png`.
    """
    import numpy as np  # not at module level: decoding workers start faster without it

    return np.asarray(open_png(data, size))


def open_png(data: bytes, size: int) -> Image.Image:
    """The decoded mode-L image of an 8-bit grayscale PNG of ``size`` x ``size``.

    Header checks come first (cheap, precise messages); the full decode then catches
    truncated or corrupt image data.

    Raises:
        DataError: not a PNG, another bit depth or colour type, other dimensions,
            truncated or corrupt data.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise DataError("not a PNG file")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise DataError("truncated or corrupt PNG (no IHDR header)")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    if (depth, color) != (8, 0):
        kind = COLOR_TYPES.get(color, f"colour type {color}")
        raise DataError(f"{depth}-bit {kind} PNG; only 8-bit grayscale (mode L) is accepted")
    if (width, height) != (size, size):
        raise DataError(f"{width}x{height} pixels, expected {size}x{size}")
    if data.rfind(PNG_END) < 0:
        raise DataError("truncated PNG (no IEND end chunk)")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        image.load()  # the actual decode: raises on truncated or corrupt image data
    except Exception as err:  # Pillow signals corrupt data with OSError, SyntaxError, ...
        raise DataError(f"corrupt PNG ({type(err).__name__}: {err})") from None
    if image.mode != "L":
        raise DataError(f"mode {image.mode}; only 8-bit grayscale (mode L) is accepted")
    return image


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with fast compression: decode speed barely depends on the level."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _reader(root: str) -> Callable[[str], bytes]:
    """A function reading one relative path from the folder or the .zip ``root``."""
    if not os.path.isdir(root):
        archive = _open_zip(root)
        return lambda name: _read_member(archive, name)
    return lambda name: _read_file(os.path.join(root, name))


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})") from None


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except Exception as err:  # BadZipFile (CRC), zlib.error, EOFError... for a damaged member
        raise DataError(f"cannot be read from the archive ({type(err).__name__}: {err})") from None


_open_zips: dict[tuple[str, int, int, int], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    """The open handle on ``path`` of this process: a worker opens the zip once, not per batch.

    Keyed by inode, size and mtime so a zip rewritten in place is reopened.
    """
    info = os.stat(path)
    key = (path, info.st_ino, info.st_size, info.st_mtime_ns)
    archive = _open_zips.get(key)
    if archive is None:
        for stale in _open_zips.values():
            stale.close()
        _open_zips.clear()
        archive = _open_zips[key] = zipfile.ZipFile(path)
    return archive
