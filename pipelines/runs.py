"""Compile the pipeline, run it here with ``kfp.local``, or submit it to Kubeflow or Vertex AI."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from oasis_vqvae.errors import OasisError
from pipelines.pipeline import PipelineOptions, build_pipeline

TOKEN_ENVS = ("KF_PIPELINES_TOKEN", "KFP_TOKEN")
"""Environment variables read, in order, for the bearer token of a Kubeflow endpoint."""


class SubmitError(OasisError):
    """The pipeline could not be sent: missing extra, bad endpoint, refused request."""


def compile_pipeline(options: PipelineOptions, output: str | Path) -> Path:
    """Write the pipeline YAML (IR) to ``output``; return its path."""
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(output))
    return output


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """Where a local run left the evaluate outputs, and its metrics."""

    run_dir: Path
    """This run's folder under the pipeline root: one sub-folder per task."""
    evaluation: Path
    report: Path
    metrics: dict[str, float]


RUNNERS = ("subprocess", "docker")
"""``run-local --runner``: kfp.local's SubprocessRunner (this venv) or DockerRunner (the image)."""


def run_local(
    options: PipelineOptions, pipeline_root: str | Path, runner: str = "subprocess"
) -> LocalRun:
    """Run the whole DAG on this machine with kfp.local, every task in turn.

    ``runner="subprocess"``: tasks are subprocesses in this venv and inherit this process's
    environment; MLflow settings come from ``MLFLOW_TRACKING_URI`` here (or params), not from
    the cluster-side options. ``runner="docker"``: every task runs in the components' image
    (``options.image``) through the Docker API at ``$DOCKER_HOST`` (Docker or Podman), on the
    host's network, with this process's ``MLFLOW_*`` variables; see :mod:`pipelines.containers`.
    """
    from kfp import local

    if runner not in RUNNERS:
        raise OasisError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    pipeline_root = Path(pipeline_root).resolve()
    here = dataclasses.replace(
        options, mlflow_tracking_uri=None, mlflow_secret=None, gcs_secret=None
    )
    if runner == "docker":
        kfp_runner, image = _docker_runner(here, pipeline_root)
        here = dataclasses.replace(here, image=image)
    else:
        # use_venv=False: the components install nothing, everything is in this venv already.
        kfp_runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=kfp_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    run = build_pipeline(here)()
    outputs = run.outputs
    evaluation = Path(outputs["evaluation"].path)
    return LocalRun(
        run_dir=evaluation.parents[1],  # <root>/<pipeline>-<time>/evaluate/evaluation
        evaluation=evaluation,
        report=Path(outputs["report"].path),
        metrics=dict(outputs["metrics"].metadata),
    )


def _docker_runner(options: PipelineOptions, pipeline_root: Path) -> tuple[Any, str]:
    import components
    from oasis_vqvae.config import TrackingConfig
    from oasis_vqvae.tracking import tracking_uri
    from pipelines import containers

    params = dict(options.params) if options.params is not None else components.default_params()
    tracking = TrackingConfig(**params["tracking"])
    uri = tracking_uri(tracking) if tracking.enabled else None
    return containers.runner(pipeline_root, components.image(options.image), uri)


def submit_kfp(
    package: str | Path,
    host: str,
    *,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    caching: bool | None = None,
) -> str:
    """Create a run of a compiled pipeline on a Kubeflow Pipelines endpoint; return its id.

    The bearer token, if any, comes from ``$KF_PIPELINES_TOKEN`` or ``$KFP_TOKEN``.
    """
    import kfp
    import urllib3
    from kfp_server_api import ApiException

    # kfp.Client warns on every use that it needs a v2 backend; that is all we talk to.
    warnings.filterwarnings("ignore", "This client only works with Kubeflow Pipeline v2")
    token = next((os.environ[name] for name in TOKEN_ENVS if os.environ.get(name)), None)
    try:
        client = kfp.Client(host=host, namespace=namespace, existing_token=token)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=dict(arguments or {}),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=caching,
        )
    except (OSError, ValueError, ApiException, urllib3.exceptions.HTTPError) as err:
        raise SubmitError(f"Kubeflow Pipelines at {host}: {_short(err)}") from None
    return str(result.run_id)


def submit_vertex(
    package: str | Path,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    experiment: str | None = None,
    run_name: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    service_account: str | None = None,
    caching: bool | None = None,
    api_endpoint: str | None = None,
) -> str:
    """Submit a compiled pipeline to Vertex AI Pipelines; return the job's resource name.

    Credentials are Application Default Credentials (``gcloud auth application-default login``
    or the workload's service account). ``api_endpoint`` replaces the regional endpoint.
    """
    if not pipeline_root.startswith("gs://"):
        raise SubmitError(f"--pipeline-root must be a gs:// URI, got {pipeline_root!r}")
    if len(list(yaml.safe_load_all(Path(package).read_text()))) > 1:
        raise SubmitError(
            f"{package} carries Kubernetes secrets, which Vertex AI does not accept; "
            "compile it with --mlflow-secret '' and without --gcs-secret"
        )
    try:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import aiplatform
    except ImportError:
        raise SubmitError(
            "--vertex needs google-cloud-aiplatform: pip install -e '.[vertex]' -c constraints.txt"
        ) from None
    try:
        # REST rather than gRPC: one plain HTTPS client, friendlier to proxies.
        aiplatform.init(
            project=project, location=region, api_endpoint=api_endpoint, api_transport="rest"
        )
        job = aiplatform.PipelineJob(
            display_name=run_name or "oasis-vqvae",
            template_path=str(package),
            pipeline_root=pipeline_root,
            parameter_values=dict(arguments or {}),
            enable_caching=caching,
        )
        job.submit(service_account=service_account, experiment=experiment)
    except (GoogleAPIError, GoogleAuthError) as err:
        raise SubmitError(f"Vertex AI ({project}, {region}): {_short(err)}") from None
    return str(job.resource_name)


def _short(err: BaseException) -> str:
    # kfp_server_api errors carry the whole HTTP exchange; status, reason and a bit of body do.
    status = getattr(err, "status", None)
    if status is not None:
        body = str(getattr(err, "body", "") or "")[:200]
        return f"HTTP {status} {getattr(err, 'reason', '') or ''}: {body}".strip()
    reason = getattr(err, "reason", None)
    if isinstance(reason, Exception):  # urllib3: the connection failed before any answer
        return f"no answer ({type(reason).__name__}); check the address and that it is up"
    return str(err).splitlines()[0] if str(err) else type(err).__name__
