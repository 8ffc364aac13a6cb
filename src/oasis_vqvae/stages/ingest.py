"""Stage ingest: read brain MRI slices from ``data.source`` into a dataset of TFRecord shards.

``data.source`` is ``synthetic`` (generated, then read as OASIS PNG slices), a folder or .zip
of the preprocessed OASIS PNG slices, raw OASIS-1 discs (folder or tarball), or any of these
at a gs:// URI. The steps:

1. cheap checks before any long work: the source exists, its layout, the split folders,
   every zip member name, the demographics CSV, the labels CSV (``data.labels``; the
   synthetic source writes its own, read the same way) and that it labels every case;
2. into a temporary sibling of ``out`` (renamed into place only when complete): generate the
   synthetic slices or extract the needed tarball members, then decode, check and resize
   in a pool of worker processes, in order;
3. in this process, write the TFRecord shards and ``manifest.json``
   (see :mod:`oasis_vqvae.data.shards`), with each subject's attributes and the
   ``conditions`` they make (see :mod:`oasis_vqvae.data.labels`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from oasis_vqvae import tracking
from oasis_vqvae.config import DataConfig, Params
from oasis_vqvae.data import labels, oasis1, png_slices
from oasis_vqvae.data.conditions import Kind
from oasis_vqvae.data.shards import SPLITS, BadFile, DatasetWriter, Record, read_manifest
from oasis_vqvae.errors import DataError
from oasis_vqvae.storage import atomic_directory, local_copy

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
SCRATCH = ".scratch"
"""Folder inside the temporary output for generated or extracted inputs; removed at the end."""
POOL_MIN_SLICES = 300
"""Fewer PNG slices than this are decoded in-process: starting workers would cost more."""
POOL_MIN_VOLUMES = 3
BATCH_LIMITS = (16, 64)
"""Slices per worker task: large enough to keep the inter-process traffic per image small."""


@dataclass
class Plan:
    """The decoding work: picklable ``tasks`` for ``worker``, ``sizes[i]`` files each."""

    source: dict[str, Any]
    """Description stored in the manifest (kind, location, ...)."""
    location: str
    """How the user named the source; bad files are reported relative to it."""
    worker: Callable[[Any], list[Record | BadFile]]
    tasks: list[Any]
    sizes: list[int]
    unit: str
    pool_min: int
    """Fewest files for which a process pool is worth starting."""
    bad: list[BadFile] = field(default_factory=list)
    """Bad files found before decoding (misnamed files, lost masks, subjects without volume)."""
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Subject id -> its attributes (canonical names, see `oasis_vqvae.data.labels`)."""
    kinds: dict[str, Kind] = field(default_factory=dict)
    """Kind of each attribute, in column order."""


@dataclass(frozen=True)
class CaseLabels:
    """A labels CSV keyed by case number, and how to name it in messages."""

    table: labels.Labels
    location: str


Prepare = Callable[[Path], Plan]
"""Makes the plan; may write into the scratch folder it is given (synthetic, tarballs)."""


def ingest(params: Params, out: str | Path) -> Path:
    """The ingest stage: :func:`write_dataset` from ``params.data``, tracked in MLflow.

    The source is checked before the MLflow run starts, so a wrong path records nothing.
    """
    with (
        checked_source(params.data) as write,
        tracking.stage_run("ingest", params, blocks=("data",)) as run,
    ):
        write(out)
        manifest = read_manifest(out)
        run.tag_pipeline({"data_hash": manifest["content_hash"]})
        counts = {f"slices_{split}": count for split, count in manifest["counts"].items()}
        run.log_metrics({**counts, "skipped_files": manifest["skipped"]["count"]})
        run.log_artifacts(Path(out) / "manifest.json")
    return Path(out)


def write_dataset(cfg: DataConfig, out: str | Path) -> Path:
    """Read ``cfg.source`` and write the dataset directory ``out``; return ``out``.

    ``out`` gets ``SPLIT-IIIII-of-NNNNN.tfrecord`` shards and ``manifest.json``. The same
    input and params give byte-identical files. A failed or killed run leaves the previous
    ``out`` untouched.

    Raises:
        DataError: a missing or malformed source; a bad file unless ``on_bad_file: skip``.
    """
    with checked_source(cfg) as write:
        return write(out)


@contextlib.contextmanager
def checked_source(cfg: DataConfig) -> Iterator[Callable[[str | Path], Path]]:
    """Check what is cheap to check about ``cfg.source``; yield the function writing ``out``.

    Downloads (gs://) and other temporary inputs live until the block ends.
    """
    workers = cfg.workers or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        prepare = _check_source(cfg, stack, workers)
        yield functools.partial(_write, cfg, prepare, workers)


def _write(cfg: DataConfig, prepare: Prepare, workers: int, out: str | Path) -> Path:
    started = time.perf_counter()
    with atomic_directory(out) as tmp:
        plan = prepare(tmp / SCRATCH)
        with DatasetWriter(
            tmp,
            image_size=cfg.image_size,
            images_per_shard=cfg.images_per_shard,
            segmentation=cfg.segmentation,
        ) as writer:
            skipped = _decode_into(writer, plan, cfg.on_bad_file, workers)
            shutil.rmtree(tmp / SCRATCH, ignore_errors=True)
            conditions = labels.describe(plan.kinds, plan.metadata, writer.subjects)
            manifest = writer.finish(
                source=plan.source,
                skipped=skipped,
                subject_metadata=plan.metadata,
                conditions=conditions,
            )
    _log_summary(manifest, time.perf_counter() - started, out)
    return Path(out)


# --- cheap checks and plans per source -----------------------------------------------------------


def _check_source(cfg: DataConfig, stack: contextlib.ExitStack, workers: int) -> Prepare:
    """Check what is cheap to check about the source; return how to plan the decoding."""
    if cfg.source == SYNTHETIC:
        if cfg.segmentation:
            raise DataError("data.segmentation: the synthetic source has no segmentation masks")
        _warn_unused_demographics(cfg)
        return functools.partial(_synthetic_plan, cfg, workers, _user_labels(cfg, stack))
    root = stack.enter_context(local_copy(cfg.source))
    location = _redact(cfg.source)
    if _source_kind(root, location) == "png_slices":
        listing = png_slices.scan(root, segmentation=cfg.segmentation, location=location)
        _fail_on_bad(listing.bad, cfg, location)
        _warn_unused_demographics(cfg)
        case_labels = _user_labels(cfg, stack)
        source = {
            "kind": "png_slices",
            "location": location,
            "png_size": cfg.png_size,
            "labels": case_labels.location if case_labels else None,
        }
        plan = _png_plan(cfg, root, listing, source, cfg.png_size, workers, case_labels)
        return lambda scratch: plan
    if cfg.segmentation:
        raise DataError("data.segmentation: raw OASIS-1 volumes come without the PNG masks")
    if cfg.labels is not None:
        raise DataError(
            "data.labels: a labels CSV keyed by case applies to OASIS PNG slices and the "
            "synthetic source; for raw OASIS-1 set data.oasis1.demographics"
        )
    found = oasis1.scan(root, location=location)
    demographics = _demographics(cfg, stack)
    return functools.partial(_oasis1_plan, cfg, found, demographics, location, workers)


def _source_kind(root: Path, location: str) -> str:
    """``png_slices`` or ``oasis1``, from the file type or the folder layout."""
    if root.is_file():
        if root.name.lower().endswith(".zip"):
            return "png_slices"
        if root.name.lower().endswith(oasis1.TARBALL_SUFFIXES):
            return "oasis1"
        raise DataError(
            f"{location}: expected a folder, a .zip of PNG slices or an OASIS-1 .tar.gz"
        )
    if png_slices.has_layout(root):
        return "png_slices"
    if oasis1.has_layout(root):
        return "oasis1"
    raise DataError(
        f"{location}: found neither keras_png_slices_{{train,validate,test}}/ folders "
        "(up to 2 levels down) nor OASIS-1 disc tarballs or OAS1_XXXX_MR1 folders"
    )


def _synthetic_plan(
    cfg: DataConfig, workers: int, case_labels: CaseLabels | None, scratch: Path
) -> Plan:
    """Generate the synthetic slices and their labels, then plan them as OASIS PNG slices.

    The labels are the generator's own CSV, read like a user's ``data.labels``, unless the
    user gave one.
    """
    from oasis_vqvae.data.synthetic import LABELS_FILE, write_synthetic_oasis

    split = cfg.split
    root = write_synthetic_oasis(
        scratch / SYNTHETIC,
        subjects=cfg.synthetic.subjects,
        slices_per_subject=cfg.synthetic.slices_per_subject,
        image_size=cfg.image_size,
        seed=cfg.seed,
        split_fractions=(split.train, split.validation, split.test),
        cdr_positive=cfg.synthetic.cdr_positive,
    )
    if case_labels is None:
        where = f"{SYNTHETIC}/{LABELS_FILE}"
        case_labels = CaseLabels(labels.read_case_labels(root / LABELS_FILE, location=where), where)
    listing = png_slices.scan(root, segmentation=False, location=SYNTHETIC)
    source = {
        "kind": SYNTHETIC,
        "location": SYNTHETIC,
        "subjects": cfg.synthetic.subjects,
        "slices_per_subject": cfg.synthetic.slices_per_subject,
        "cdr_positive": cfg.synthetic.cdr_positive,
        "seed": cfg.seed,
        "labels": case_labels.location,
    }
    return _png_plan(cfg, root, listing, source, cfg.image_size, workers, case_labels)


def _png_plan(
    cfg: DataConfig,
    root: Path,
    listing: png_slices.PngListing,
    source: dict[str, Any],
    png_size: int,
    workers: int,
    case_labels: CaseLabels | None,
) -> Plan:
    """Batches of slices per task: few, large messages between the processes.

    With ``case_labels``, slices of a case without a row are bad (one stop in error mode).
    """
    refs, bad, metadata, kinds = listing.refs, listing.bad, {}, {}
    if case_labels is not None:
        refs, unlabelled, metadata = _label_cases(refs, case_labels, cfg.on_bad_file)
        bad, kinds = sorted(bad + unlabelled), dict(case_labels.table.kinds)
    low, high = BATCH_LIMITS
    batch = max(low, min(high, math.ceil(len(refs) / (workers * 8))))
    tasks = [
        png_slices.DecodeTask(str(root), tuple(refs[i : i + batch]), png_size, cfg.image_size)
        for i in range(0, len(refs), batch)
    ]
    return Plan(
        source=source,
        location=source["location"],
        worker=png_slices.decode_batch,
        tasks=tasks,
        sizes=[len(task.refs) for task in tasks],
        unit="slice",
        pool_min=POOL_MIN_SLICES,
        bad=bad,
        metadata=metadata,
        kinds=kinds,
    )


def _label_cases(
    refs: list[png_slices.SliceRef], case_labels: CaseLabels, on_bad_file: str
) -> tuple[list[png_slices.SliceRef], list[BadFile], dict[str, dict[str, Any]]]:
    """(labelled slices, unlabelled slices as bad files, subject -> its labels).

    Raises:
        DataError: in error mode, a case without a row in the labels CSV.
    """
    rows, where = case_labels.table.rows, case_labels.location
    kept, unlabelled, metadata = [], [], {}
    for ref in refs:
        case = str(png_slices.case_number(ref.subject))
        if case in rows:
            kept.append(ref)
            metadata[ref.subject] = rows[case]
            continue
        if on_bad_file == "error":
            raise DataError(
                f"{where}: column {labels.CASE}: no row for case {case} (slices such as "
                f"{ref.path}); add one, or set data.on_bad_file: skip to skip its slices"
            )
        unlabelled.append(BadFile(ref.path, f"case {case} has no row in {where}"))
    unused = len(set(rows) - {str(png_slices.case_number(s)) for s in metadata})
    if unused:
        log.info("%s: %d row(s) for cases without slices", where, unused)
    return kept, unlabelled, metadata


def _user_labels(cfg: DataConfig, stack: contextlib.ExitStack) -> CaseLabels | None:
    """``data.labels`` read and checked (downloaded first if gs://), or None if unset."""
    if cfg.labels is None:
        return None
    where = _redact(cfg.labels)
    local = stack.enter_context(local_copy(cfg.labels))
    return CaseLabels(labels.read_case_labels(local, location=where), where)


def _oasis1_plan(
    cfg: DataConfig,
    found: oasis1.Oasis1Scan,
    demographics: labels.Labels | None,
    location: str,
    workers: int,
    scratch: Path,
) -> Plan:
    """Extract what is needed, split the subjects, one task per volume.

    With demographics the split is stratified by CDR class (0, > 0, unknown).
    """
    volumes, bad = oasis1.collect(found, scratch, location=location, workers=workers)
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    metadata = demographics.rows if demographics else {}
    subjects = [volume.subject for volume in volumes]
    strata = {s: oasis1.cdr_class(metadata.get(s)) for s in subjects} if demographics else None
    splits = oasis1.assign_splits(subjects, fractions, cfg.seed, location=location, strata=strata)
    start, stop = cfg.oasis1.slice_range
    tasks = [
        oasis1.VolumeTask(
            subject=volume.subject,
            split=splits[volume.subject],
            header=str(volume.header),
            path=volume.path,
            slices=(start, stop, cfg.oasis1.slice_step),
            clip_percentile=cfg.oasis1.clip_percentile,
            image_size=cfg.image_size,
        )
        for volume in volumes
    ]
    tasks.sort(key=lambda task: (SPLITS.index(task.split), task.subject))
    source = {
        "kind": "oasis1",
        "location": location,
        "slice_range": [start, stop],
        "slice_step": cfg.oasis1.slice_step,
        "clip_percentile": cfg.oasis1.clip_percentile,
        "demographics": _redact(cfg.oasis1.demographics) if cfg.oasis1.demographics else None,
        "missing_cdr_under_60": oasis1.YOUNG_CDR if cfg.oasis1.demographics else None,
    }
    missing = sorted(set(splits) - set(metadata)) if demographics else []
    if missing:
        log.warning("%d subject(s) have no row in the demographics: %s", len(missing), missing)
    return Plan(
        source=source,
        location=location,
        worker=oasis1.slice_volume,
        tasks=tasks,
        sizes=[1] * len(tasks),
        unit="volume",
        pool_min=POOL_MIN_VOLUMES,
        bad=bad,
        metadata=metadata,
        kinds=dict(demographics.kinds) if demographics else {},
    )


def _demographics(cfg: DataConfig, stack: contextlib.ExitStack) -> labels.Labels | None:
    csv = cfg.oasis1.demographics
    if csv is None:
        return None
    local = stack.enter_context(local_copy(csv))
    return oasis1.read_demographics(local, location=_redact(csv))


def _warn_unused_demographics(cfg: DataConfig) -> None:
    if cfg.oasis1.demographics:
        log.warning("data.oasis1.demographics is ignored: it only applies to raw OASIS-1 sources")


# --- decoding and writing ------------------------------------------------------------------------


def _decode_into(
    writer: DatasetWriter, plan: Plan, on_bad_file: str, workers: int
) -> list[BadFile]:
    """Feed every good record to ``writer`` in order; return the skipped files."""
    skipped = []
    for bad in plan.bad:
        skipped.append(_reject(bad, plan.location, on_bad_file))
    with contextlib.closing(_results(plan, workers)) as results:
        for result in results:
            for item in result:
                if isinstance(item, BadFile):
                    skipped.append(_reject(item, plan.location, on_bad_file))
                else:
                    writer.add(item)
    return skipped


def _results(plan: Plan, workers: int) -> Iterator[list[Record | BadFile]]:
    """Worker results in task order, from a process pool unless the input is small."""
    total = sum(plan.sizes)
    serial = workers <= 1 or len(plan.tasks) < 2 or total < plan.pool_min
    processes = 1 if serial else min(workers, len(plan.tasks))
    log.info("ingest: %d %ss from %s, %d process(es)", total, plan.unit, plan.location, processes)
    with contextlib.ExitStack() as stack:
        if serial:
            results = map(plan.worker, plan.tasks)
        else:
            # spawn, not fork: TensorFlow may already be loaded here, and forking it is unsafe.
            context = multiprocessing.get_context("spawn")
            # Workers ignore Ctrl-C: the parent gets it too and terminates them (no traceback each).
            no_sigint = (signal.SIGINT, signal.SIG_IGN)
            pool = stack.enter_context(context.Pool(processes, signal.signal, no_sigint))
            results = pool.imap(plan.worker, plan.tasks)  # ordered: deterministic output
        bar = stack.enter_context(tqdm(total=total, desc="ingest", unit=plan.unit))
        for size, result in zip(plan.sizes, results, strict=True):
            bar.update(size)
            yield result


def _reject(bad: BadFile, location: str, on_bad_file: str) -> BadFile:
    """Raise for a bad file, or log it and hand it back to be listed as skipped."""
    if on_bad_file == "error":
        raise DataError(f"{location}/{bad.path}: {bad.reason}")
    log.warning("skipping %s/%s: %s", location, bad.path, bad.reason)
    return bad


def _fail_on_bad(bad: list[BadFile], cfg: DataConfig, location: str) -> None:
    """In error mode, a bad file found while listing stops the stage before any decoding."""
    if bad and cfg.on_bad_file == "error":
        _reject(bad[0], location, cfg.on_bad_file)


def _log_summary(manifest: dict[str, Any], seconds: float, out: str | Path) -> None:
    counts = ", ".join(f"{split} {manifest['counts'][split]}" for split in SPLITS)
    subjects = sum(len(manifest["subjects"][split]) for split in SPLITS)
    log.info(
        "ingest: %s slices of %d subjects, %d skipped, %.1f s -> %s",
        counts,
        subjects,
        manifest["skipped"]["count"],
        seconds,
        out,
    )


def _redact(location: str) -> str:
    """A location without credentials (``scheme://user:secret@host/...`` loses ``user:secret@``)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", location)
