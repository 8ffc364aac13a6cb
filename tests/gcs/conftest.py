"""A real GCS emulator (the ``gcp-storage-emulator`` package) on 127.0.0.1 for the gs:// tests.

The session emulator serves every test; ``STORAGE_EMULATOR_HOST`` points the
google-cloud-storage client (and so this project, DVC's gcsfs and MLflow) at it. Each test gets
its own bucket. Tests that stop the emulator start their own with :func:`start_emulator`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

# gcsfs (under dvc-gs) asks for hierarchical-namespace support on import; an emulator never
# answers, so every call would wait a minute. Set before anything imports gcsfs.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

from tests.pipeline.conftest import (  # noqa: E402,F401  (fixtures shared with these tests)
    _free_port,
    cli_env,
    free_port,
    repo_root,
    tiny_dataset,
    tiny_overrides,
    tiny_params,
)

BIN = Path(sys.executable).parent
PROJECT = "oasis-test"


@dataclass
class Emulator:
    """A running emulator process; ``stop()`` and ``start()`` keep the port and the data."""

    port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def object_file(self, bucket: str, name: str) -> Path:
        """Where the emulator keeps an object's bytes (what the corruption test damages)."""
        return self.data_dir / ".cloudstorage" / bucket / name

    def start(self) -> None:
        log = (self.data_dir.parent / f"emulator-{self.port}.log").open("a")
        command = [
            str(BIN / "gcp-storage-emulator"), "-d", str(self.data_dir), "start",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the GCS emulator exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.host}/storage/v1/b", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the GCS emulator did not answer within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(data_dir: Path, port: int) -> Emulator:
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(port, data_dir)
    emulator.start()
    return emulator


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The session's emulator, with ``STORAGE_EMULATOR_HOST`` set in this process."""
    emulator = start_emulator(tmp_path_factory.mktemp("gcs") / "data", _free_port())
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


def make_bucket(name: str | None = None):
    """Create a bucket on the emulator ``STORAGE_EMULATOR_HOST`` names; return it."""
    from google.cloud import storage

    name = name or f"test-{uuid.uuid4().hex[:12]}"
    return storage.Client(project=PROJECT).create_bucket(name)


@pytest.fixture
def bucket(gcs_emulator):
    """A fresh, empty bucket on the session emulator."""
    return make_bucket()


def put_tree(bucket, local: Path, prefix: str) -> str:
    """Upload a folder object by object, as ``gcloud storage cp -r`` would (no marker)."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(path)
    return f"gs://{bucket.name}/{prefix}"
