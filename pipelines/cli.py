"""``python -m pipelines compile | run-local | submit``: the Kubeflow front end of the stages."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import components
from oasis_vqvae.errors import ConfigError, OasisError
from pipelines.pipeline import (
    DEFAULT_RESOURCES,
    IN_CLUSTER_MLFLOW,
    PIPELINE_NAME,
    PipelineOptions,
    Resources,
)

EPILOG = """\
The DAG: ingest -> train-vqvae -> extract-codes -> train-pixelcnn -> generate -> evaluate.
Hyper-parameters are one pipeline parameter, params, shaped like params.yaml (--params, --set).
Examples:
  python -m pipelines compile --output outputs/oasis_vqvae.yaml
  python -m pipelines run-local --set vqvae.epochs=2 --set pixelcnn.epochs=2
  make image && MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m pipelines run-local \\
      --runner docker --image ghcr.io/oasis-vqvae/oasis-vqvae:0.1.0
  KF_PIPELINES_TOKEN=... python -m pipelines submit --host https://kfp.example.org/pipeline \\
      --namespace team-mri --experiment oasis-vqvae --set data.source=gs://bucket/oasis.zip
  python -m pipelines submit --vertex --project my-project --region europe-west4 \\
      --pipeline-root gs://my-bucket/pipeline-root --accelerator-type NVIDIA_TESLA_T4
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipelines``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Compile the oasis-vqvae Kubeflow pipeline, run it here with kfp.local, "
        "or submit it to Kubeflow Pipelines or Vertex AI Pipelines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_ = commands.add_parser("compile", help="write the pipeline YAML")
    _add_params(compile_)
    _add_cluster(compile_)
    compile_.add_argument("--output", required=True, metavar="FILE", help="YAML file to write")

    local = commands.add_parser(
        "run-local",
        help="run the whole DAG on this machine with kfp.local",
        description="Run every component with kfp.local and print the evaluate metrics: as a "
        "subprocess of this virtualenv (--runner subprocess, the default; no container engine, "
        "no cluster) or in the components' image (--runner docker: kfp.local DockerRunner "
        "against $DOCKER_HOST, Docker or Podman's service; build the image with make image). "
        "MLflow tracking follows MLFLOW_TRACKING_URI or params' tracking block, as with dvc "
        "repro; in containers it must be a server (http://...), reached on the host's network.",
    )
    _add_params(local)
    local.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="where the tasks run (default: %(default)s)",
    )
    local.add_argument(
        "--output-dir",
        default="outputs/kfp-local",
        metavar="DIR",
        help="kfp.local pipeline root: every task's outputs go below it (default: %(default)s)",
    )

    submit = commands.add_parser(
        "submit",
        help="send the pipeline to Kubeflow Pipelines (or Vertex AI with --vertex)",
        description="Create a run on a Kubeflow Pipelines endpoint with kfp.Client; the "
        "bearer token, if the endpoint needs one, is read from $KF_PIPELINES_TOKEN or "
        "$KFP_TOKEN. With --vertex, submit to Vertex AI Pipelines instead (needs the "
        "[vertex] extra and Application Default Credentials).",
    )
    _add_params(submit)
    _add_cluster(submit)
    _add_submit(submit)
    return parser


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        default=str(components.PARAMS_FILE),
        metavar="FILE",
        help="params.yaml to start from (default: the repository's params.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter by its dotted key, e.g. --set vqvae.epochs=40 or "
        "--set data.source=gs://bucket/oasis.zip; repeatable; validated before anything runs",
    )
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        help=f"container image of every task (default: ${components.IMAGE_ENV} or "
        f"{components.DEFAULT_IMAGE})",
    )


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster settings (fixed in the compiled pipeline)")
    group.add_argument(
        "--accelerator-type",
        metavar="TYPE",
        help="accelerator of the two training tasks, e.g. nvidia.com/gpu (Kubeflow) or "
        "NVIDIA_TESLA_T4 (Vertex); default: none, CPU only. Use the GPU image variant with it",
    )
    group.add_argument(
        "--accelerator-count", type=int, default=1, metavar="N", help="default: %(default)s"
    )
    group.add_argument(
        "--resources",
        action="append",
        default=[],
        metavar="STAGE=CPU,MEMORY",
        help="request = limit of one task, e.g. train-vqvae=8,32Gi; repeatable; defaults: "
        + ", ".join(f"{s}={r.cpu},{r.memory}" for s, r in DEFAULT_RESOURCES.items()),
    )
    group.add_argument(
        "--retries", type=int, default=2, metavar="N", help="retries per task (default: 2)"
    )
    group.add_argument(
        "--backoff",
        default="60s",
        metavar="DURATION",
        help="wait before the first retry, doubling after each (default: %(default)s)",
    )
    group.add_argument("--no-cache", action="store_true", help="turn KFP caching off")
    group.add_argument(
        "--mlflow-uri",
        default=IN_CLUSTER_MLFLOW,
        metavar="URI",
        help="MLFLOW_TRACKING_URI of every task (default: %(default)s, the server of "
        "mlflow/k8s); '' leaves it unset",
    )
    group.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        help="MLFLOW_EXPERIMENT_NAME of every task (default: params' tracking.experiment)",
    )
    group.add_argument(
        "--mlflow-secret",
        default="mlflow-credentials",
        metavar="SECRET",
        help="optional Kubernetes Secret with keys username/password/token for the MLflow "
        "server, exposed as MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN (default: %(default)s; "
        "'' for none)",
    )
    group.add_argument(
        "--gcs-secret",
        metavar="SECRET",
        help="Kubernetes Secret holding a service-account key.json for gs:// access, mounted "
        "and named by GOOGLE_APPLICATION_CREDENTIALS (default: none; Workload Identity)",
    )


def _add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--package", metavar="FILE", help="compiled pipeline YAML to send (default: compile now)"
    )
    parser.add_argument("--run-name", metavar="NAME", help="name of the run")
    parser.add_argument(
        "--experiment",
        metavar="NAME",
        help=f"experiment of the run, created if missing (Kubeflow default: {PIPELINE_NAME}; "
        "Vertex default: none)",
    )
    kfp_group = parser.add_argument_group("Kubeflow Pipelines")
    kfp_group.add_argument(
        "--host",
        default=os.environ.get("KF_PIPELINES_ENDPOINT"),
        metavar="URL",
        help="endpoint, e.g. https://kubeflow.example.org/pipeline or http://127.0.0.1:8888 "
        "after kubectl port-forward (default: $KF_PIPELINES_ENDPOINT)",
    )
    kfp_group.add_argument("--namespace", metavar="NS", help="Kubeflow profile namespace")
    vertex = parser.add_argument_group("Vertex AI Pipelines")
    vertex.add_argument("--vertex", action="store_true", help="submit to Vertex AI instead")
    vertex.add_argument("--project", metavar="PROJECT", help="Google Cloud project")
    vertex.add_argument("--region", default="us-central1", help="default: %(default)s")
    vertex.add_argument("--pipeline-root", metavar="GS_URI", help="gs:// folder for artifacts")
    vertex.add_argument("--service-account", metavar="EMAIL", help="service account of the run")
    vertex.add_argument(
        "--vertex-endpoint",
        metavar="URL",
        help="Vertex AI API endpoint (default: REGION-aiplatform.googleapis.com), e.g. a "
        "Private Service Connect address",
    )


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    """The pipeline options (cluster settings and params defaults) given on the command line."""
    params = components.default_params(args.params, tuple(args.overrides))
    cluster = {}
    if hasattr(args, "accelerator_type"):
        cluster = {
            "accelerator_type": args.accelerator_type or None,
            "accelerator_count": args.accelerator_count,
            "resources": _resources(args.resources),
            "retries": args.retries,
            "backoff": args.backoff,
            "caching": not args.no_cache,
            "mlflow_tracking_uri": args.mlflow_uri or None,
            "mlflow_experiment": args.mlflow_experiment,
            "mlflow_secret": args.mlflow_secret or None,
            "gcs_secret": args.gcs_secret or None,
        }
    return PipelineOptions(image=args.image, params=params, **cluster)


def _resources(values: Sequence[str]) -> dict[str, Resources]:
    resources = dict(DEFAULT_RESOURCES)
    for value in values:
        stage, _, spec = value.partition("=")
        cpu, _, memory = spec.partition(",")
        if stage not in resources or not cpu or not memory:
            raise ConfigError(
                f"--resources {value!r}: expected STAGE=CPU,MEMORY with STAGE one of "
                f"{', '.join(resources)}, e.g. train-vqvae=8,32Gi"
            )
        resources[stage] = Resources(cpu, memory)
    return resources


def cmd_compile(args: argparse.Namespace) -> None:
    """Write the pipeline YAML."""
    from pipelines.runs import compile_pipeline

    path = compile_pipeline(options_from_args(args), args.output)
    print(f"pipeline written to {path}")


def cmd_run_local(args: argparse.Namespace) -> None:
    """Run the DAG with kfp.local and print where the outputs went and the metrics."""
    from pipelines.runs import run_local

    # kfp.local warns that an image without "python" in its name may not run in a subprocess;
    # here the image only names where the components would run on a cluster.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task")
    run = run_local(options_from_args(args), args.output_dir, runner=args.runner)
    print(f"outputs of every task are under {run.run_dir}")
    print(f"evaluation: {run.evaluation}")
    print(f"report:     {run.report}")
    for name, value in sorted(run.metrics.items()):
        print(f"  {name:<24} {value:.6g}")


def cmd_submit(args: argparse.Namespace) -> None:
    """Send a compiled (or freshly compiled) pipeline to Kubeflow or Vertex AI."""
    from pipelines.runs import compile_pipeline, submit_kfp, submit_vertex

    _require(args, *(("project", "pipeline_root") if args.vertex else ("host",)))
    options = options_from_args(args)
    if args.vertex:
        options = _for_vertex(options)
    arguments = {"params": dict(options.params or {})}
    caching = False if args.no_cache else None
    with tempfile.TemporaryDirectory(prefix="oasis-vqvae-pipeline-") as tmp:
        package = args.package or compile_pipeline(options, Path(tmp) / "pipeline.yaml")
        if args.vertex:
            name = submit_vertex(
                package, project=args.project, region=args.region,
                pipeline_root=args.pipeline_root, experiment=args.experiment,
                run_name=args.run_name, arguments=arguments,
                service_account=args.service_account, caching=caching,
                api_endpoint=args.vertex_endpoint,
            )  # fmt: skip
            print(f"submitted to Vertex AI Pipelines: {name}")
            return
        run_id = submit_kfp(
            package, args.host, namespace=args.namespace,
            experiment=args.experiment or PIPELINE_NAME,
            run_name=args.run_name, arguments=arguments, caching=caching,
        )  # fmt: skip
        print(f"submitted to {args.host}: run {run_id}")


def _for_vertex(options: PipelineOptions) -> PipelineOptions:
    # Vertex AI runs no Kubernetes secrets (the run's --service-account holds the rights)
    # and cannot reach an in-cluster MLflow service.
    tracking = (options.params or {}).get("tracking", {}).get("enabled", True)
    if tracking and options.mlflow_tracking_uri in (None, IN_CLUSTER_MLFLOW):
        raise ConfigError(
            "--vertex: Vertex AI tasks cannot reach the in-cluster MLflow server; give "
            "--mlflow-uri of a server they can reach, or --set tracking.enabled=false"
        )
    return dataclasses.replace(options, mlflow_secret=None, gcs_secret=None)


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(args, name)]
    if missing:
        where = "Vertex AI (--vertex)" if args.vertex else "Kubeflow Pipelines"
        raise ConfigError(f"submitting to {where} needs {' and '.join(missing)}")


COMMANDS = {"compile": cmd_compile, "run-local": cmd_run_local, "submit": cmd_submit}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 with one line on a user error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except OasisError as err:
        print(f"python -m pipelines {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
