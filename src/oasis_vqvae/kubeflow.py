"""What a Kubeflow Pipelines component body calls: params mapping in, stage function called.

The components in ``components/`` are shipped to the cluster as source text and can import
only what the image has installed, which is this library. So the little glue they share
lives here: turning the pipeline's ``params`` mapping into validated :class:`Params`, joining
the pipeline run's MLflow parent run, and publishing the evaluation as KFP artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oasis_vqvae.config import Params, validate_params
from oasis_vqvae.tracking import PIPELINE_RUN_ENV

EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"


def run_stage(stage: str, params: Mapping[str, Any], output: Any, **inputs: str) -> Path:
    """Run one stage (``train-vqvae``) into ``output.path`` with a params mapping.

    ``output`` is the component's output artifact. Its URI, ``<run folder>/<task>/<name>``
    in Kubeflow Pipelines, Vertex AI and kfp.local alike, names the pipeline run; that name
    becomes ``OASIS_PIPELINE_RUN_ID`` so every task of one run joins one MLflow parent run
    (an injected ``MLFLOW_RUN_ID`` still wins, an explicit ``OASIS_PIPELINE_RUN_ID`` too).
    Unlike a run-id input parameter, the URI is not part of KFP's cache key, so caching works.
    """
    from oasis_vqvae.stages import stage_function

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_id = pipeline_run_id(output.uri)
    if run_id:
        os.environ.setdefault(PIPELINE_RUN_ENV, run_id)
    validated = component_params(params)
    return Path(stage_function(stage)(validated, **inputs, out=output.path))


def pipeline_run_id(uri: str) -> str | None:
    """The run folder's name in an output URI ``.../<run folder>/<task>/<output name>``.

    That is the run id in Kubeflow Pipelines (``<root>/<pipeline>/<run id>/...``), the job
    name in Vertex AI (``<root>/<project number>/<job>/...``) and ``<pipeline>-<time>`` in
    kfp.local; None if the URI is too short to hold one.
    """
    parts = [part for part in uri.split("?", 1)[0].split("/") if part]
    return parts[-3] if len(parts) >= 4 else None


def component_params(params: Mapping[str, Any]) -> Params:
    """Validate the mapping; ``MLFLOW_EXPERIMENT_NAME`` (set on every task) names the experiment."""
    raw = integral_floats_to_int(dict(params))
    experiment = os.environ.get(EXPERIMENT_ENV)
    if experiment:
        raw["tracking"] = {**raw.get("tracking", {}), "experiment": experiment}
    return validate_params(raw, origin="pipeline parameter params")


def integral_floats_to_int(value: Any) -> Any:
    """``64.0`` -> ``64`` throughout a mapping.

    KFP carries a dict parameter as a protobuf Struct, whose only number type is a double,
    so ``image_size: 64`` can arrive as ``64.0``, which strict validation rejects for an int.
    An int is accepted wherever a float is expected, so the conversion loses nothing.
    """
    if isinstance(value, dict):
        return {key: integral_floats_to_int(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_floats_to_int(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def publish_evaluation(evaluation: str | Path, metrics: Any, report: Any) -> dict[str, float]:
    """Log every metric of ``metrics.json`` on a KFP ``Metrics`` artifact; copy the HTML report.

    ``metrics`` and ``report`` are the component's ``Output[Metrics]`` and ``Output[HTML]``.
    """
    evaluation = Path(evaluation)
    values = json.loads((evaluation / "metrics.json").read_text())
    for name, value in values.items():
        metrics.log_metric(name, value)
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(evaluation / "report.html", report.path)
    return values


def publish_samples(samples: str | Path, labels: Any, synthetic: Any) -> None:
    """Copy generate's ``labels.csv`` and ``dataset/`` into their own KFP artifacts.

    ``labels`` and ``synthetic`` are the component's ``Output[Artifact]`` and
    ``Output[Dataset]``: a downstream step (a classifier) takes the labelled synthetic
    dataset as an input of its own, read like ingest's.
    """
    samples = Path(samples)
    Path(labels.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(samples / "labels.csv", labels.path)
    labels.metadata["rows"] = sum(1 for _ in (samples / "labels.csv").open()) - 1
    shutil.copytree(samples / "dataset", synthetic.path, dirs_exist_ok=True)
