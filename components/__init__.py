"""Kubeflow Pipelines components, one per stage, each a thin wrapper over its stage function.

Each module holds one plain function with typed KFP artifacts; :func:`build` turns them into
lightweight Python components that run in the project's image (installing nothing at run
time), so ``kfp.local.SubprocessRunner`` runs the same components in this virtualenv.

Every component takes ``params``: a mapping shaped like params.yaml (all blocks, since the
stages validate them together), defaulting to params.yaml itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfp import dsl

from components.evaluate import evaluate
from components.extract_codes import extract_codes
from components.generate import generate
from components.ingest import ingest
from components.train_pixelcnn import train_pixelcnn
from components.train_vqvae import train_vqvae
from components.utility import utility
from oasis_vqvae import __version__
from oasis_vqvae.config import Params, load_params

IMAGE_ENV = "OASIS_VQVAE_IMAGE"
DEFAULT_IMAGE = f"ghcr.io/oasis-vqvae/oasis-vqvae:{__version__}"
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"

FUNCTIONS: dict[str, Callable[..., None]] = {
    "ingest": ingest,
    "train-vqvae": train_vqvae,
    "extract-codes": extract_codes,
    "train-pixelcnn": train_pixelcnn,
    "generate": generate,
    "evaluate": evaluate,
    "utility": utility,
}
"""Component functions by stage name (the names of ``oasis_vqvae.stages.STAGES``)."""


def image(explicit: str | None = None) -> str:
    """The components' image: ``explicit``, else ``$OASIS_VQVAE_IMAGE``, else the release tag."""
    return explicit or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def default_params(path: str | Path = PARAMS_FILE, overrides: tuple[str, ...] = ()) -> dict:
    """params.yaml (validated, every key filled in) as the JSON-shaped mapping KFP carries.

    Null values are left out (a KFP Struct cannot hold them); validation restores them.
    """
    return as_mapping(load_params(path, overrides))


def as_mapping(params: Params) -> dict:
    """Validated params as a mapping KFP can carry: JSON types, no nulls, aliases as keys."""
    return params.model_dump(mode="json", by_alias=True, exclude_none=True)


def build(image_name: str | None = None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The components by stage name, in ``image_name``; ``params`` default to params.yaml."""
    defaults = dict(params) if params is not None else default_params()
    return {
        stage: _component(function, image(image_name), defaults)
        for stage, function in FUNCTIONS.items()
    }


def _component(function: Callable[..., None], image_name: str, params: dict) -> Any:
    # The image has the project and kfp installed: nothing is pip-installed at run time.
    component = dsl.component(function, base_image=image_name, install_kfp_package=False)
    # The source keeps `params: dict` without a default (the body is shipped as text, so a
    # default could not name a value loaded here); the spec carries params.yaml as default.
    spec = component.component_spec.inputs["params"]
    spec.default, spec.optional = params, True
    return component
