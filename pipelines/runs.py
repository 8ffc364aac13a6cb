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


def run_local(options: PipelineOptions, pipeline_root: str | Path) -> LocalRun:
    """Run the whole DAG on this machine with kfp.local's SubprocessRunner, in this venv.

    Tasks are subprocesses of this process and inherit its environment: MLflow settings
    come from ``MLFLOW_TRACKING_URI`` here (or params), not from the cluster-side options.
    """
    from kfp import local

    pipeline_root = Path(pipeline_root).resolve()
    # use_venv=False: the components install nothing, everything is in this venv already.
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    here = dataclasses.replace(
        options, mlflow_tracking_uri=None, mlflow_secret=None, gcs_secret=None
    )
    run = build_pipeline(here)()
    outputs = run.outputs
    evaluation = Path(outputs["evaluation"].path)
    return LocalRun(
        run_dir=evaluation.parents[1],  # <root>/<pipeline>-<time>/evaluate/evaluation
        evaluation=evaluation,
        report=Path(outputs["report"].path),
        metrics=dict(outputs["metrics"].metadata),
    )


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
