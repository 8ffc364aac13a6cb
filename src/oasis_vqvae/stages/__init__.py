"""One function per pipeline stage; the CLI, DVC and KFP components only call these.

Each lives in the module of its name (``oasis_vqvae.stages.train_vqvae.train_vqvae``);
modules are imported on demand so that ``oasis-vqvae --help`` does not load TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from oasis_vqvae.storage import with_gcs_paths

STAGES = (
    "ingest", "train-vqvae", "extract-codes", "train-pixelcnn", "generate", "evaluate", "utility",
)  # fmt: skip


def stage_function(stage: str) -> Callable[..., Any]:
    """The library function of a stage, by its CLI name (``train-vqvae``).

    Wrapped so that every path argument, ``out`` included, may be a gs:// URI
    (:func:`oasis_vqvae.storage.with_gcs_paths`); the stage itself sees local paths only.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    name = stage.replace("-", "_")
    return with_gcs_paths(getattr(importlib.import_module(f"oasis_vqvae.stages.{name}"), name))
