"""Conditions of each slice: its level in its subject's stack and its subject's attributes.

These are the labels a conditional prior is trained on and asked for, and the targets the
evaluation's probes predict. A dataset describes them in ``manifest.json`` under
``conditions``, one entry per name::

    "conditions": {
      "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
      "age": {"kind": "continuous", "range": [18.0, 96.0], "counts": {...}},
      "sex": {"kind": "categorical", "values": ["F", "M"], "counts": {...}},
      "cdr": {"kind": "categorical", "values": [0.0, 0.5, 1.0, 2.0], "counts": {...}}
    }

``slice_level`` is always there (every record has one); the subject attributes are those the
source knows (``subject_metadata`` holds each subject's values, keyed by the same names).
``counts`` (written by ingest) gives per split the number of subjects with each value
(categorical) or with a known value (continuous).

A dataset may store each record's level (feature ``slice_level``, e.g. the samples generate
writes, each its own one-slice "subject"). Otherwise the slice level of a record is its rank
among its subject's slices (by slice index) divided by ``n - 1``: 0 at the lowest slice
kept, 1 at the highest, 0.5 for a subject with one slice.
For the synthetic source and OASIS-1 with a full ``slice_range`` this is the position in the
stack; for OASIS PNG slices, the ``slice_M`` index within the case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np

from oasis_vqvae.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

SLICE_LEVEL = "slice_level"
"""The condition every record has: position of the slice in its subject's stack, in [0, 1]."""
ID_COLUMNS = ("subject", "slice")
"""Columns of :func:`load_conditions` that identify a record rather than condition it."""

Kind = Literal["categorical", "continuous"]


class ConditionSpec(TypedDict, total=False):
    """One entry of the manifest's ``conditions``."""

    kind: Kind
    values: list[Any]
    """Categorical only: the values, sorted."""
    range: list[float]
    """Continuous only: [min, max] over the whole dataset."""
    counts: dict[str, Any]


SLICE_LEVEL_SPEC: ConditionSpec = {"kind": "continuous", "range": [0.0, 1.0]}


def slice_levels(subjects: Sequence[str], slices: Sequence[int]) -> np.ndarray:
    """The slice level ``(N,)`` float32 of each record, from its subject and slice index.

    E.g. subjects ``[a, a, a, b]`` with slices ``[4, 2, 9, 0]`` -> ``[0.5, 0, 1, 0.5]``.
    """
    subjects, slices = np.asarray(subjects), np.asarray(slices)
    if subjects.shape != slices.shape or subjects.ndim != 1:
        raise ValueError(f"subjects {subjects.shape} and slices {slices.shape} must be (N,) each")
    levels = np.full(len(slices), 0.5, np.float32)
    for subject in np.unique(subjects):
        where = np.flatnonzero(subjects == subject)
        if len(where) > 1:
            rank = np.argsort(np.argsort(slices[where], kind="stable"), kind="stable")
            levels[where] = rank / (len(where) - 1)
    return levels


def condition_specs(manifest: dict[str, Any]) -> dict[str, ConditionSpec]:
    """The conditions a dataset describes, ``slice_level`` first.

    Datasets ingested before conditions existed describe none: they get ``slice_level`` only.
    """
    specs = dict(manifest.get("conditions") or {})
    specs.setdefault(SLICE_LEVEL, SLICE_LEVEL_SPEC)
    return {SLICE_LEVEL: specs.pop(SLICE_LEVEL), **specs}


def check_names(names: Sequence[str], specs: dict[str, ConditionSpec], key: str) -> None:
    """Raise DataError naming ``key`` if a name is not among ``specs``."""
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise DataError(f"{key}: unknown condition {unknown[0]!r}; the dataset has {sorted(specs)}")


def load_conditions(dataset_dir: str | Path, split: str) -> pd.DataFrame:
    """One row per record of ``split`` in manifest order (as `load_split` yields the images).

    Columns: ``subject``, ``slice``, ``slice_level`` and one per subject attribute of the
    manifest's ``conditions`` (None where a subject lacks the value).
    """
    import pandas as pd

    from oasis_vqvae.data.shards import load_ids, read_manifest

    manifest = read_manifest(dataset_dir)
    subjects, slices, levels = load_ids(dataset_dir, split)
    frame = pd.DataFrame({"subject": subjects, "slice": slices})
    frame[SLICE_LEVEL] = slice_levels(subjects, slices) if levels is None else levels
    metadata = manifest.get("subject_metadata", {})
    for name in condition_specs(manifest):
        if name != SLICE_LEVEL:
            frame[name] = [metadata.get(subject, {}).get(name) for subject in subjects]
    return frame
