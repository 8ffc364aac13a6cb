"""``pytest -n N`` gives TensorFlow in every process its share of the cores (tests/conftest.py)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from tests.conftest import pytest_configure

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@pytest.fixture
def controller(monkeypatch):
    """The controller's environment: no xdist worker id, no thread variables set."""
    for name in ("PYTEST_XDIST_WORKER", *THREAD_VARIABLES):
        # setenv first, so that monkeypatch restores the original state (set or not) afterwards.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)


def _configure(workers):
    pytest_configure(SimpleNamespace(option=SimpleNamespace(numprocesses=workers)))
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def test_workers_share_the_cores(controller):
    assert _configure(2) == dict.fromkeys(THREAD_VARIABLES, "2")


def test_more_workers_than_cores_get_one_thread_each(controller):
    assert _configure(8) == dict.fromkeys(THREAD_VARIABLES, "1")


def test_a_serial_run_and_a_users_own_setting_are_left_alone(controller, monkeypatch):
    assert _configure(None) == dict.fromkeys(THREAD_VARIABLES)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert _configure(2) == {"TF_NUM_INTRAOP_THREADS": "3", "TF_NUM_INTEROP_THREADS": "2"}
