"""MLflow tracking: one parent run per pipeline run, one child run per stage that ran.

Stages run as separate processes (``dvc repro``, Kubeflow tasks), so a stage finds the
parent run of its pipeline run by a key:

- ``MLFLOW_RUN_ID`` if set (Kubeflow's MLflow integration injects it): that run is the
  parent, and this project never ends it;
- else ``OASIS_PIPELINE_RUN_ID`` if set (the Kubeflow pipeline sets it to its run id);
- else a hash of the workspace (the current directory) and the DVC experiment name, so the
  stages of one ``dvc repro`` / ``dvc exp run`` share a parent.

The newest parent with the key that has not FINISHED is continued, otherwise a new one is
started. The evaluate stage logs the final metrics to the parent and ends it (FINISHED). A
failing stage marks it FAILED; the rerun after the fix (DVC skips the stages that finished)
continues that same parent, marks it RUNNING again and, at the end, FINISHED: one parent holds
every child of one pipeline run. A param changed between the attempts is listed in the
parent's ``oasis.params_changed`` tag (its logged params stay those of the first attempt). A
stage killed mid-way leaves its child RUNNING, and the rerun continues that child run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from oasis_vqvae.config import Params, TrackingConfig, flatten
from oasis_vqvae.errors import OasisError

log = logging.getLogger(__name__)

PIPELINE_RUN_ENV = "OASIS_PIPELINE_RUN_ID"
KEY_TAG = "oasis.pipeline_key"
STAGE_TAG = "oasis.stage"
ROLE_TAG = "oasis.role"
PARAMS_CHANGED_TAG = "oasis.params_changed"
REGISTERED_MODELS = {"vqvae": "oasis-vqvae", "pixelcnn": "oasis-pixelcnn"}
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Tells MLflow 3's UI this is model training: the experiment opens on its runs, not on the
empty GenAI overview (the kinds are in the UI's ExperimentKind enum)."""
DIGEST_CHARS = 36
"""MLflow's dataset digest column holds 36 characters (String(36) in its SQL store)."""


class TrackingError(OasisError):
    """The tracking server is unreachable or refuses the request."""


class StageRun:
    """The MLflow child run of one stage; its methods do nothing when tracking is off."""

    def __init__(
        self, run_id: str | None = None, parent_id: str | None = None, started: bool = False
    ) -> None:
        self.run_id = run_id
        self.parent_id = parent_id
        self.started_pipeline = started
        """True if this stage started the parent run (no earlier stage of the run ran)."""
        self.summary: dict[str, float] = {}
        """The metrics logged without a step: what the registered model versions are tagged with."""

    @property
    def active(self) -> bool:
        """False when tracking is disabled."""
        return self.run_id is not None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the stage run, e.g. with what ``auto`` settings resolved to on this machine."""
        if self.active:
            import mlflow

            mlflow.set_tags(dict(tags))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics on the stage run; ``step`` is the epoch for per-epoch metrics."""
        if self.active:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        if step is None:
            self.summary.update({k: float(v) for k, v in metrics.items()})

    def log_dataset(self, path: str | Path, content_hash: str, context: str) -> None:
        """Log a dataset as an input of the stage run and of its pipeline run (lineage).

        ``content_hash`` is its manifest's (``sha256:...``); the digest is its first
        :data:`DIGEST_CHARS` hex digits, the whole hash is the input's ``oasis.content_hash``
        tag. ``context`` is e.g. ``training`` or ``evaluation``.
        """
        if not self.active:
            return
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        uri = str(path) if "://" in str(path) else str(Path(path).resolve())
        digest = content_hash.partition(":")[2] or content_hash
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": it is a path
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(uri)
        dataset = MetaDataset(source, name=Path(uri).name, digest=digest[:DIGEST_CHARS])
        tags = {"mlflow.data.context": context, "oasis.content_hash": content_hash}
        mlflow.log_input(dataset, context=context, tags={"oasis.content_hash": content_hash})
        if self.parent_id is not None:
            entity = dataset._to_mlflow_entity()
            inputs = [DatasetInput(entity, [InputTag(k, v) for k, v in tags.items()])]
            mlflow.MlflowClient().log_inputs(self.parent_id, datasets=inputs)

    def log_artifacts(self, *paths: Path, folder: str | None = None) -> None:
        """Log files, or every file of a directory, as artifacts of the stage run."""
        if not self.active:
            return
        import mlflow

        for path in paths:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=folder)
            elif path.exists():
                mlflow.log_artifact(str(path), artifact_path=folder)

    def log_model(self, model: Any, kind: str) -> None:
        """Log a Keras model and register it as ``oasis-<kind>``, linked to this run."""
        if not self.active:
            return
        import keras
        import mlflow.keras
        import tensorflow as tf

        info = mlflow.keras.log_model(
            model,
            name=kind,
            registered_model_name=REGISTERED_MODELS[kind],
            # Explicit requirements: inferring them would reload the model in a subprocess.
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )
        # The registry lists versions by their tags: the run's key metrics, to compare them.
        version = getattr(info, "registered_model_version", None)
        if version is not None:
            client = mlflow.MlflowClient()
            for key, value in self.summary.items():
                client.set_model_version_tag(
                    REGISTERED_MODELS[kind], str(version), key, f"{value:.6g}"
                )

    def tag_pipeline(self, tags: Mapping[str, str]) -> None:
        """Tag the parent run, e.g. with the data hash every stage of the run shares."""
        if self.parent_id is not None:
            from mlflow import MlflowClient

            for key, value in tags.items():
                MlflowClient().set_tag(self.parent_id, key, value)

    def log_pipeline_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics on the parent run without ending it (a stage beside evaluate: utility)."""
        if self.parent_id is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for key, value in metrics.items():
            client.log_metric(self.parent_id, key, float(value))

    def finish_pipeline(self, metrics: Mapping[str, float]) -> None:
        """Log the pipeline's final metrics on the parent run and end it (evaluate stage)."""
        if self.parent_id is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for key, value in metrics.items():
            client.log_metric(self.parent_id, key, float(value))
        if not os.environ.get("MLFLOW_RUN_ID"):
            client.set_terminated(self.parent_id, "FINISHED")

    def keras_callback(self) -> Any:
        """A Keras callback logging every epoch's metrics with the epoch as step."""
        import keras

        stage_run = self

        class EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                stage_run.log_metrics(logs or {}, step=epoch)

        return EpochMetrics()


@contextlib.contextmanager
def stage_run(
    stage: str, params: Params, blocks: tuple[str, ...] = (), *, join_finished: bool = False
) -> Iterator[StageRun]:
    """Track one stage as a child run of its pipeline run; log ``blocks`` of params on it.

    ``join_finished``: with no RUNNING parent, join the newest finished one of the same key
    rather than start a new one; for a stage that may run after evaluate ended the parent
    (utility: both follow generate, in either order under DVC, in parallel under Kubeflow).
    Fails at once, before any work, if a remote tracking server is unreachable.
    """
    config = params.tracking
    if not config.enabled:
        yield StageRun()
        return
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(config)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment_id = _experiment_id(client, config.experiment, uri)
    parent_id, started = _parent_run(client, experiment_id, params, join_finished)
    logged = {
        k: v for block in blocks for k, v in flatten(getattr(params, block), f"{block}.").items()
    }
    child_id = _child_run(client, experiment_id, parent_id, stage, logged)
    try:
        with mlflow.start_run(run_id=child_id):
            mlflow.log_params(logged)
            yield StageRun(child_id, parent_id, started)
    except BaseException:
        if not os.environ.get("MLFLOW_RUN_ID"):
            client.set_terminated(parent_id, "FAILED")
        raise


def tracking_uri(config: TrackingConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else params' tracking.tracking_uri."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.tracking_uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an http(s) tracking server answers its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}); start it, fix "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri, or set tracking.enabled=false"
        ) from None


def _experiment_id(client: Any, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in EXPERIMENT_KIND.items():  # also for experiments made before the tag
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return str(experiment.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):
        # Keep artifacts beside the embedded store rather than in ./mlruns.
        store = Path(uri.removeprefix("sqlite:///")).resolve()
        location = (store.parent / "artifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND))


def _parent_run(
    client: Any, experiment_id: str, params: Params, join_finished: bool = False
) -> tuple[str, bool]:
    """The parent run's id, and whether it was started here."""
    injected = os.environ.get("MLFLOW_RUN_ID")
    if injected:
        return injected, False
    key = pipeline_key(params)
    unfinished = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if unfinished:
        return _continue_parent(client, unfinished[0], params), False
    if join_finished:
        finished = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if finished:
            return str(finished[0].info.run_id), False
    tags = {KEY_TAG: key, ROLE_TAG: "pipeline", "git_commit": _git_commit() or "unknown"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    run = client.create_run(experiment_id, run_name=_parent_name(), tags=tags)
    for name, value in flatten(params).items():
        client.log_param(run.info.run_id, name, value)
    log.info("MLflow: started pipeline run %s", run.info.run_id)
    return str(run.info.run_id), True


def _continue_parent(client: Any, parent: Any, params: Params) -> str:
    """Rejoin an unfinished parent: RUNNING again after a failure, changed params listed."""
    run_id = str(parent.info.run_id)
    if parent.info.status != "RUNNING":
        log.info("MLflow: continuing pipeline run %s (it was %s)", run_id, parent.info.status)
        client.update_run(run_id, status="RUNNING")
    logged = parent.data.params
    changed = sorted(k for k, v in flatten(params).items() if k in logged and logged[k] != str(v))
    if changed:
        earlier = parent.data.tags.get(PARAMS_CHANGED_TAG, "")
        keys = sorted(set(filter(None, earlier.split(","))) | set(changed))
        client.set_tag(run_id, PARAMS_CHANGED_TAG, ",".join(keys)[:5000])
    commit = _git_commit()
    if commit and parent.data.tags.get("git_commit") != commit:
        client.set_tag(run_id, "git_commit", commit)
    return run_id


def _child_run(
    client: Any, experiment_id: str, parent_id: str, stage: str, params: dict[str, Any]
) -> str:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    interrupted = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and tags.`{STAGE_TAG}` = '{stage}' "
            "and attributes.status = 'RUNNING'"
        ),
        max_results=1,
    )
    if interrupted:
        run = interrupted[0]
        if all(run.data.params.get(k, str(v)) == str(v) for k, v in params.items()):
            log.info("MLflow: continuing the interrupted %s run", stage)
            return str(run.info.run_id)
        # Other params: MLflow cannot change logged params, so that attempt ends here.
        client.set_terminated(run.info.run_id, "FAILED")
    tags = {MLFLOW_PARENT_RUN_ID: parent_id, STAGE_TAG: stage, ROLE_TAG: "stage"}
    return str(client.create_run(experiment_id, run_name=stage, tags=tags).info.run_id)


def pipeline_key(params: Params) -> str:
    """Identity of the pipeline run the current stage belongs to (see the module docstring).

    Not the params: fixing the param that made a stage fail and rerunning continues the
    same pipeline run. A pipeline run that finished is never continued, so the next
    ``dvc repro`` that runs any stage starts a new parent.
    """
    explicit = os.environ.get(PIPELINE_RUN_ENV)
    if explicit:
        return explicit
    identity = {
        "workspace": str(Path.cwd().resolve()),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME"),
        "experiment": params.tracking.experiment,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _parent_name() -> str:
    return os.environ.get("DVC_EXP_NAME") or os.environ.get(PIPELINE_RUN_ENV) or "pipeline"


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()
