"""Local and gs:// paths: atomic output directories, fetching inputs from Google Cloud Storage.

The google-cloud-storage client uses Application Default Credentials and honours
``STORAGE_EMULATOR_HOST`` (the tests point it at a local emulator).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from oasis_vqvae.errors import DataError

GCS_SCHEME = "gs://"


def is_gcs(path: str | os.PathLike[str]) -> bool:
    """True for ``gs://bucket/...`` URIs."""
    return str(path).startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = uri.removeprefix(GCS_SCHEME).partition("/")
    if not bucket:
        raise DataError(f"{uri}: a gs:// URI needs a bucket name")
    return bucket, prefix.strip("/")


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; move it into place only if the block succeeds.

    A failed or killed stage leaves the previous ``dest`` (if any) untouched and at most a
    hidden ``.NAME.tmp-*`` sibling, which the next run removes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.tmp-old-{os.getpid()}"
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def local_copy(source: str) -> Iterator[Path]:
    """A local path for ``source``: itself if local, else a temporary download of a gs:// URI.

    A gs:// URI may name one object (e.g. a .zip) or a prefix ("folder") whose objects are
    all downloaded, keeping their relative paths.
    """
    if not is_gcs(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{source}: no such file or directory")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="oasis-gcs-") as tmp:
        yield download(source, Path(tmp))


def download(uri: str, dest_dir: Path, workers: int = 8) -> Path:
    """Download a gs:// object or prefix into ``dest_dir``; return the local path of it.

    Downloads are checksum-verified and retried on transient errors by the client.
    """
    from google.cloud import storage  # heavy import, only when a gs:// path is used

    bucket_name, prefix = split_gcs(uri)
    bucket = storage.Client().bucket(bucket_name)
    single = bucket.get_blob(prefix) if prefix else None
    if single is not None:
        target = dest_dir / Path(prefix).name
        single.download_to_filename(str(target))
        return target
    folder_prefix = f"{prefix}/" if prefix else ""
    blobs = [b for b in bucket.list_blobs(prefix=folder_prefix) if not b.name.endswith("/")]
    if not blobs:
        raise DataError(f"{uri}: no such object or prefix in the bucket")
    root = dest_dir / (Path(prefix).name or bucket_name)

    def fetch(blob: storage.Blob) -> None:
        target = root / blob.name.removeprefix(folder_prefix)
        if root.resolve() not in target.resolve().parents:
            raise DataError(f"{uri}: object {blob.name!r} escapes its prefix")
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(fetch, blobs), total=len(blobs), desc=f"download {uri}", unit="file"))
    return root
