"""Fixtures of the Kubeflow tests: the end-to-end fixtures of tests/pipeline, shared."""

from __future__ import annotations

import pytest

from oasis_vqvae.tracking import PIPELINE_RUN_ENV
from tests.kfp.image_fixtures import docker_api, engine, image  # noqa: F401 - fixtures
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


def pytest_collection_modifyitems(config, items):
    """Image tests (marker ``image``) run only when asked for: ``pytest -m image``.

    They build the components' image and run it, which takes minutes and a container engine;
    a plain ``pytest`` or ``-m "not slow"`` leaves them out instead of starting a build.
    """
    if "image" in (config.getoption("markexpr") or ""):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("image") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
