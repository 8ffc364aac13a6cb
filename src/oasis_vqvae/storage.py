"""Local and gs:// paths: atomic output directories, transfers to and from Google Cloud Storage.

The google-cloud-storage client uses Application Default Credentials (ADC: ``gcloud auth
application-default login``, ``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata server of a
GKE/Vertex node) and honours ``STORAGE_EMULATOR_HOST`` (then it sends no credentials; the tests
point it at a local emulator). Nothing about the credentials is ever logged.

Every request is retried with exponential backoff on transient errors (HTTP 408/429/5xx,
refused or dropped connections, timeouts) for up to :data:`RETRY_TIMEOUT_S`. Downloads are
verified against the object's CRC32C and written to a temporary name that is renamed only
when complete, so a failed or corrupted download leaves no file behind. Many files move in
parallel (:data:`WORKERS` threads) with a byte-counting progress bar.

GCS has no atomic rename of a "directory", so a directory is published like this
(:func:`upload_directory`): delete the previous completion marker ``_COMPLETE.json``, upload
every file, delete objects left over from an older version, and write the marker LAST. The
marker lists every file with its generation and CRC32C. A reader (:func:`download`) that finds
the marker fetches exactly those generations: it never mixes two versions, and a directory
being rewritten (no marker yet, or listed generations already replaced) is refused.
Directories without a marker (e.g. a folder of PNG slices copied with ``gcloud storage cp``)
are downloaded as they are listed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oasis_vqvae.errors import DataError
from oasis_vqvae.progress import tqdm

if TYPE_CHECKING:  # google-cloud-storage is imported only when a gs:// path is used
    from google.cloud import storage

log = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
MARKER = "_COMPLETE.json"
"""Completion marker of a directory written to GCS, uploaded after every file it lists."""
WORKERS = 8
"""Parallel transfers: GCS latency, not bandwidth, limits many small files."""
RETRY_TIMEOUT_S = 120.0
"""How long one request keeps being retried on transient errors before giving up."""
STAGING_ENV = "OASIS_VQVAE_STAGING"
"""Where stages stage gs:// outputs locally (default: the system temp dir)."""


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

    A failed or killed stage leaves the previous ``dest`` (if any) in place and at most a
    hidden ``.NAME.tmp-*`` sibling, which the next run removes. The new directory replaces
    the old one in one atomic swap (Linux ``renameat2(RENAME_EXCHANGE)``), so ``dest`` is at
    every instant either the whole old or the whole new output. Where the swap is not
    available, the old copy is renamed aside to ``.NAME.tmp-old-PID`` and deleted only once
    the new one is in place; a kill between the two renames leaves it there, and the next
    run puts it back before anything else.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _recover_previous(dest)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not dest.exists():
        tmp.rename(dest)
    elif _exchange(tmp, dest):  # tmp now holds the old output
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = dest.parent / f".{dest.name}.tmp-old-{os.getpid()}"
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically; False where the OS or file system can't."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, Linux only
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without it
        return False
    raise OSError(error, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(error)}")


def _recover_previous(dest: Path) -> None:
    """Put back an old output that a run killed between its two fallback renames left aside."""
    if dest.exists():
        return
    for old in sorted(dest.parent.glob(f".{dest.name}.tmp-old-*")):
        log.warning("restoring %s from %s (a run was killed while replacing it)", dest, old.name)
        old.rename(dest)
        return


# --- stages: gs:// inputs and outputs in one place ------------------------------------------------


def with_gcs_paths(stage: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a stage function ``f(params, *, <inputs>..., out)`` so any path may be gs://.

    gs:// inputs are downloaded to a temporary directory first; a gs:// ``out`` is written to a
    local staging directory (:func:`staged_output`) and uploaded when the stage succeeds. Local
    paths pass through untouched, so the stage functions themselves only see local paths.
    """
    names = list(inspect.signature(stage).parameters)[1:]

    @functools.wraps(stage)
    def run(params: Any, *args: Any, **kwargs: Any) -> Any:
        paths = dict(zip(names, args, strict=False)) | kwargs
        if not any(is_gcs(value) for value in paths.values() if isinstance(value, str)):
            return stage(params, **paths)
        with contextlib.ExitStack() as stack:
            local = {
                name: _local_side(stack, name, value) if isinstance(value, str) else value
                for name, value in paths.items()
            }
            stage(params, **local)
        return paths.get("out")

    return run


def _local_side(stack: contextlib.ExitStack, name: str, value: str) -> Any:
    if not is_gcs(value):
        return value
    if name == "out":
        return stack.enter_context(staged_output(value))
    return stack.enter_context(local_copy(value))


@contextlib.contextmanager
def staged_output(uri: str) -> Iterator[Path]:
    """A local directory standing in for the gs:// output ``uri``; uploaded if the block succeeds.

    The directory is the same for the same URI (under ``$OASIS_VQVAE_STAGING`` or the temp
    dir), so the checkpoints a training stage keeps beside its output survive a failed run and
    the rerun resumes. After a successful upload the local copy is removed.
    """
    bucket, prefix = split_gcs(uri)
    if not prefix:
        raise DataError(f"{uri}: an output needs a folder below the bucket, e.g. gs://{bucket}/x")
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    root = Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir()) / "oasis-vqvae-staging"
    local = root / digest / Path(prefix).name
    local.parent.mkdir(parents=True, exist_ok=True)
    yield local
    upload_directory(local, uri)
    # The stage has cleared its checkpoints; nothing under the digest is needed any more.
    shutil.rmtree(local.parent, ignore_errors=True)


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


# --- the client -----------------------------------------------------------------------------------


@functools.cache
def retry_policy() -> Any:
    """Retry of every request: transient errors only, backoff 0.5 s doubling to 8 s."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.5, maximum=8.0, multiplier=2.0).with_timeout(
        RETRY_TIMEOUT_S
    )


def client() -> storage.Client:
    """A client on Application Default Credentials, or anonymous on an emulator."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError:
        # The exception text can name a key file path; keep the message our own.
        raise DataError(
            "gs://: no Google Cloud credentials found; run `gcloud auth application-default "
            "login`, set GOOGLE_APPLICATION_CREDENTIALS, or set STORAGE_EMULATOR_HOST for an "
            "emulator"
        ) from None


@contextlib.contextmanager
def _gcs_errors(uri: str) -> Iterator[None]:
    """Turn the client's errors into one-line DataErrors naming the URI."""
    from google.api_core import exceptions
    from google.resumable_media import DataCorruption

    try:
        yield
    except DataCorruption as err:
        raise DataError(f"{uri}: checksum mismatch, download discarded ({err})") from None
    except exceptions.NotFound:
        # A pinned generation is gone when the directory was rewritten since its marker.
        raise DataError(f"{uri}: no such bucket or object (or it changed while read)") from None
    except exceptions.Forbidden:
        raise DataError(f"{uri}: access denied for these credentials") from None
    except exceptions.GoogleAPICallError as err:
        raise DataError(f"{uri}: {err.code} {err.message}") from None
    except exceptions.RetryError as err:
        raise DataError(
            f"{uri}: still failing after {RETRY_TIMEOUT_S:.0f} s ({err.cause})"
        ) from None


# --- downloads ------------------------------------------------------------------------------------


def download(uri: str, dest_dir: Path, workers: int = WORKERS) -> Path:
    """Download a gs:// object or prefix into ``dest_dir``; return the local path of it.

    A prefix lands in ``dest_dir/<last part of the prefix>/`` with its relative paths. If it
    holds a completion marker, exactly the files and generations it lists are downloaded.
    """
    with _gcs_errors(uri):
        bucket_name, prefix = split_gcs(uri)
        bucket = client().bucket(bucket_name)
        single = bucket.get_blob(prefix, retry=retry_policy()) if prefix else None
        if single is not None:
            target = dest_dir / Path(prefix).name
            download_blob(single, target, progress=True)
            return target
        root = dest_dir / (Path(prefix).name or bucket_name)
        files = sorted(_listed_files(bucket, uri, f"{prefix}/" if prefix else "").items())
        transfer(
            lambda item: download_blob(item[1][0], _inside(root, item[0], uri), item[1][2]),
            files,
            sizes=[size for _, (_, size, _) in files],
            desc=f"download {uri}",
            workers=workers,
        )
        return root


def _listed_files(
    bucket: storage.Bucket, uri: str, folder: str
) -> dict[str, tuple[storage.Blob, int, str | None]]:
    """Relative path -> (blob, size, published CRC32C) under a prefix.

    The marker's list if there is one (pinned generations and their CRC32C), else a listing.
    """
    marker = bucket.get_blob(f"{folder}{MARKER}", retry=retry_policy())
    if marker is not None:
        listed = json.loads(marker.download_as_bytes(retry=retry_policy()))["files"]
        return {
            name: (
                bucket.blob(f"{folder}{name}", generation=entry["generation"]),
                entry["size"],
                entry["crc32c"],
            )
            for name, entry in listed.items()
        }
    blobs = {
        blob.name.removeprefix(folder): (blob, blob.size or 0, None)
        for blob in bucket.list_blobs(prefix=folder, retry=retry_policy())
        if not blob.name.endswith("/")
    }
    if not blobs:
        raise DataError(f"{uri}: no such object or prefix in the bucket")
    log.debug("%s has no %s: downloading the %d objects listed", uri, MARKER, len(blobs))
    return blobs


def _inside(root: Path, relative: str, uri: str) -> Path:
    target = root / relative
    if root.resolve() not in target.resolve().parents:
        raise DataError(f"{uri}: object {relative!r} escapes its prefix")
    return target


def download_blob(
    blob: storage.Blob,
    target: Path,
    published_crc32c: str | None = None,
    *,
    progress: bool = False,
) -> Path:
    """Download ``blob`` to ``target`` via a temporary name, checked against its CRC32C.

    ``published_crc32c`` (base64, from a completion marker) must also match: an object
    rewritten since its directory was published is refused. On any failure (checksum mismatch
    included) nothing is left at ``target`` or beside it. ``progress`` shows a bar in bytes
    (for one large object such as the OASIS .zip; folders have one bar for all files).
    """
    uri = f"{GCS_SCHEME}{blob.bucket.name}/{blob.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with _gcs_errors(uri):
            _fetch(blob, partial, f"download {uri}", progress)
        if published_crc32c is not None and _crc32c(partial) != published_crc32c:
            raise DataError(f"{uri}: changed while read (rewritten since its {MARKER})")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _fetch(blob: storage.Blob, path: Path, desc: str, progress: bool) -> None:
    with (
        path.open("wb") as handle,
        tqdm.wrapattr(
            handle, "write", total=blob.size, desc=desc, leave=False, disable=not progress
        ) as counted,
    ):
        # The server sends the object's CRC32C; the client hashes what it receives and raises
        # DataCorruption on a difference. Retries resume (or restart) the transfer.
        blob.download_to_file(counted, checksum="crc32c", retry=retry_policy())


def _crc32c(path: Path) -> str:
    """Base64 of the big-endian CRC32C of a file, as GCS reports it."""
    import base64

    import google_crc32c

    checksum = google_crc32c.Checksum()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


# --- uploads --------------------------------------------------------------------------------------


def upload_directory(local: Path, uri: str, workers: int = WORKERS) -> str:
    """Publish the directory ``local`` at the gs:// prefix ``uri`` (see the module docstring)."""
    bucket_name, prefix = split_gcs(uri)
    folder = f"{prefix}/" if prefix else ""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    with _gcs_errors(uri):
        bucket = client().bucket(bucket_name)
        marker = bucket.blob(f"{folder}{MARKER}")
        # Readers stop trusting the previous version before any of its files change.
        with contextlib.suppress(_not_found()):
            marker.delete(retry=retry_policy())
        previous = {b.name for b in bucket.list_blobs(prefix=folder, retry=retry_policy())}
        uploaded = transfer(
            lambda path: _upload_file(
                bucket, path, f"{folder}{path.relative_to(local).as_posix()}"
            ),
            files,
            sizes=[path.stat().st_size for path in files],
            desc=f"upload {uri}",
            workers=workers,
        )
        listing = {blob.name.removeprefix(folder): blob for blob in uploaded}
        for name in sorted(previous - {blob.name for blob in uploaded}):
            with contextlib.suppress(_not_found()):
                bucket.blob(name).delete(retry=retry_policy())
        manifest = {
            "files": {
                name: {"generation": blob.generation, "crc32c": blob.crc32c, "size": blob.size}
                for name, blob in sorted(listing.items())
            }
        }
        marker.upload_from_string(
            json.dumps(manifest, indent=1),
            content_type="application/json",
            retry=retry_policy(),
        )
    log.info("uploaded %d file(s) to %s", len(files), uri)
    return uri


def _upload_file(bucket: storage.Bucket, path: Path, name: str) -> storage.Blob:
    blob = bucket.blob(name)
    # checksum: the server rejects the upload if what it got does not hash to what we sent.
    blob.upload_from_filename(str(path), checksum="crc32c", retry=retry_policy())
    return blob


def _not_found() -> type[Exception]:
    from google.api_core.exceptions import NotFound

    return NotFound


# --- parallel transfers ---------------------------------------------------------------------------


def transfer(
    one: Callable[[Any], Any], items: list[Any], *, sizes: list[int], desc: str, workers: int
) -> list[Any]:
    """Run ``one(item)`` for every item in a thread pool, with a progress bar in bytes.

    Returns the results in the order of ``items``; the first error stops the rest.
    """
    results: list[Any] = []
    with (
        tqdm(total=sum(sizes), desc=desc, unit="B", unit_scale=True, leave=False) as bar,
        ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool,
    ):
        for size, result in zip(sizes, pool.map(one, items), strict=True):
            bar.update(size)
            results.append(result)
    return results
