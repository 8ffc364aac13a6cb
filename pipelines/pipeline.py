"""The Kubeflow Pipelines DAG: it only wires the components of ``components/``.

Steps: ingest -> train-vqvae -> extract-codes -> train-pixelcnn -> generate -> evaluate,
evaluate also reading the dataset, the VQ-VAE and the PixelCNN; utility after generate,
beside evaluate, also reading the dataset, the codes and the PixelCNN (its leakage guards).
Every task gets CPU and memory requests and limits, retries with exponential backoff,
caching (unless turned off), a display name, the MLflow settings as environment variables
and credentials from Kubernetes secrets. The tasks of one run find their MLflow parent run
from their output URIs (see ``oasis_vqvae.kubeflow.run_stage``), which keeps KFP caching
working.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real types.
import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics

import components

PIPELINE_NAME = "oasis-vqvae"
IN_CLUSTER_MLFLOW = "http://mlflow.mlflow.svc.cluster.local:5000"
"""The tracking server of ``mlflow/k8s/mlflow.yaml``, as seen from pipeline pods."""
GCS_KEY_DIR = "/var/secrets/google"
MLFLOW_SECRET_KEYS = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}
"""Keys of the (optional) MLflow secret and the variables MLflow's client reads them from."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory of a task, used as both request and limit (Guaranteed QoS)."""

    cpu: str
    memory: str


DISPLAY_NAMES = {
    "ingest": "Ingest slices",
    "train-vqvae": "Train VQ-VAE",
    "extract-codes": "Extract codes",
    "train-pixelcnn": "Train PixelCNN",
    "generate": "Generate slices",
    "evaluate": "Evaluate",
    "utility": "Downstream utility",
}
DEFAULT_RESOURCES = {
    "ingest": Resources("2", "4Gi"),
    "train-vqvae": Resources("4", "16Gi"),
    "extract-codes": Resources("2", "8Gi"),
    "train-pixelcnn": Resources("4", "16Gi"),
    "generate": Resources("2", "8Gi"),
    "evaluate": Resources("2", "8Gi"),
    "utility": Resources("2", "8Gi"),
}
TRAINING = ("train-vqvae", "train-pixelcnn")
"""The tasks that get the accelerator."""


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Everything about the DAG that is not a hyper-parameter; fixed when it is compiled."""

    image: str | None = None
    """Container image of every task; None: ``$OASIS_VQVAE_IMAGE`` or the release tag."""
    params: Mapping[str, Any] | None = None
    """Default of the pipeline's ``params`` parameter; None: params.yaml."""
    resources: Mapping[str, Resources] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RESOURCES)
    )
    accelerator_type: str | None = None
    """E.g. ``nvidia.com/gpu`` (Kubeflow) or ``NVIDIA_TESLA_T4`` (Vertex); None: CPU only."""
    accelerator_count: int = 1
    retries: int = 2
    backoff: str = "60s"
    """First wait before a retry; it doubles each time, up to an hour."""
    caching: bool = True
    mlflow_tracking_uri: str | None = IN_CLUSTER_MLFLOW
    """Set as ``MLFLOW_TRACKING_URI`` on every task; None: leave the tasks' environment alone."""
    mlflow_experiment: str | None = None
    """Set as ``MLFLOW_EXPERIMENT_NAME``; None: the params' ``tracking.experiment``."""
    mlflow_secret: str | None = "mlflow-credentials"
    """Optional Secret with keys username/password/token for an authenticating MLflow server."""
    gcs_secret: str | None = None
    """Secret holding a service-account ``key.json``; None: Workload Identity / node account."""


class Outputs(NamedTuple):
    """What a pipeline run returns: the evaluate task's outputs and the labelled samples."""

    metrics: Metrics
    report: HTML
    evaluation: Artifact
    labels: Artifact
    synthetic: Dataset


def build_pipeline(options: PipelineOptions | None = None) -> Any:
    """The pipeline (a KFP graph component) for ``options``; compile it or call it locally."""
    options = options or PipelineOptions()
    params = dict(options.params) if options.params is not None else components.default_params()
    ops = components.build(options.image, params)
    experiment = options.mlflow_experiment or params["tracking"]["experiment"]

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="VQ-VAE + PixelCNN generative model of OASIS brain MRI slices: "
        "ingest, train-vqvae, extract-codes, train-pixelcnn, generate, evaluate, utility.",
    )
    def oasis_vqvae(params: dict = params) -> Outputs:  # noqa: B006 - read by KFP, never mutated
        common = {"params": params}
        ingest = ops["ingest"](**common)
        vqvae = ops["train-vqvae"](dataset=ingest.output, **common)
        codes = ops["extract-codes"](dataset=ingest.output, vqvae=vqvae.output, **common)
        pixelcnn = ops["train-pixelcnn"](codes=codes.output, **common)
        samples = ops["generate"](vqvae=vqvae.output, pixelcnn=pixelcnn.output, **common)
        evaluate = ops["evaluate"](
            dataset=ingest.output,
            vqvae=vqvae.output,
            pixelcnn=pixelcnn.output,
            samples=samples.outputs["samples"],
            **common,
        )
        utility = ops["utility"](
            dataset=ingest.output,
            codes=codes.output,
            pixelcnn=pixelcnn.output,
            samples=samples.output,
            **common,
        )
        tasks = {
            "ingest": ingest, "train-vqvae": vqvae, "extract-codes": codes,
            "train-pixelcnn": pixelcnn, "generate": samples, "evaluate": evaluate,
            "utility": utility,
        }  # fmt: skip
        for stage, task in tasks.items():
            configure_task(task, stage, options, experiment)
        return Outputs(
            metrics=evaluate.outputs["metrics"],
            report=evaluate.outputs["report"],
            evaluation=evaluate.outputs["evaluation"],
            labels=samples.outputs["labels"],
            synthetic=samples.outputs["synthetic"],
        )

    return oasis_vqvae


def configure_task(task: Any, stage: str, options: PipelineOptions, experiment: str) -> None:
    """Name, resources, accelerator, retries, caching, environment and secrets of one task."""
    resources = options.resources[stage]
    task.set_display_name(DISPLAY_NAMES[stage])
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if options.accelerator_type and stage in TRAINING:
        task.set_accelerator_type(options.accelerator_type)
        task.set_accelerator_limit(options.accelerator_count)
    # Transient failures (pre-empted node, registry or storage hiccup) get another go.
    task.set_retry(
        num_retries=options.retries,
        backoff_duration=options.backoff,
        backoff_factor=2.0,
        backoff_max_duration="3600s",
    )
    task.set_caching_options(enable_caching=options.caching)
    if options.mlflow_tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", options.mlflow_tracking_uri)
    task.set_env_variable("MLFLOW_EXPERIMENT_NAME", experiment)
    _use_secrets(task, options)


def _use_secrets(task: Any, options: PipelineOptions) -> None:
    # Credentials come from the cluster at run time and are never pipeline parameters.
    if options.mlflow_secret:
        # Optional: a server without authentication needs no secret at all.
        kubernetes.use_secret_as_env(task, options.mlflow_secret, MLFLOW_SECRET_KEYS, optional=True)
    if options.gcs_secret:
        kubernetes.use_secret_as_volume(task, options.gcs_secret, mount_path=GCS_KEY_DIR)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{GCS_KEY_DIR}/key.json")
