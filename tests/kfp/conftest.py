"""Fixtures of the Kubeflow tests: the end-to-end fixtures of tests/pipeline, shared."""

from __future__ import annotations

import pytest

from oasis_vqvae.tracking import PIPELINE_RUN_ENV
from tests.pipeline.conftest import (  # noqa: F401 - re-exported as fixtures of this folder
    cli_env,
    free_port,
    mlflow_server,
    repo_root,
    tiny_overrides,
)


@pytest.fixture(autouse=True)
def no_pipeline_run_env(monkeypatch):
    """Each test starts without, and leaves behind exactly, the variables naming MLflow runs.

    run_stage sets OASIS_PIPELINE_RUN_ID in this process; left behind, it would make later
    tests' stages join this test's parent run.
    """
    for name in (PIPELINE_RUN_ENV, "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        # setenv first, so that monkeypatch records the original state (set or not) to restore.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
