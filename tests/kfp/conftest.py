"""Fixtures of the Kubeflow tests: the end-to-end fixtures of tests/pipeline, shared."""

from __future__ import annotations

from tests.pipeline.conftest import (  # noqa: F401 - re-exported as fixtures of this folder
    cli_env,
    free_port,
    mlflow_server,
    repo_root,
    tiny_overrides,
)
