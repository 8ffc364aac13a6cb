"""The components' image, built here (make image) and run: CLI, one stage, the whole DAG.

Selected with ``pytest -m image`` (make test-image); they skip, saying what to install,
where no container engine answers. The image is reused while its inputs are unchanged.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from oasis_vqvae.stages import STAGES
from oasis_vqvae.tracking import ROLE_TAG, STAGE_TAG
from pipelines.cli import main
from tests.kfp.image_fixtures import REPO, run

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]

UID = "10001"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|PASSWD|API_?KEY|ACCESS_KEY", re.I)


def test_cli_runs_as_the_unprivileged_user(engine, image):
    result = run(engine, "run", "--rm", image, "sh", "-c", "id -u; id -g; oasis-vqvae --help")
    uid, gid, *help_text = result.stdout.splitlines()
    assert (uid, gid) == (UID, UID)
    assert "usage: oasis-vqvae" in help_text[0]
    assert "train-pixelcnn" in result.stdout


def test_stage_writes_only_its_output_its_home_and_tmp(engine, image, tmp_path, tiny_overrides):
    """A read-only root filesystem: any write outside /out, /home/oasis and /tmp would fail."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the container's user is not this one
    params = REPO / "params.yaml"
    sandbox = [
        engine, "run", "--rm", "--read-only",
        *(["--read-only-tmpfs=false"] if engine == "podman" else []),
        "--tmpfs", "/tmp:rw,mode=1777", "--tmpfs", "/home/oasis:rw,mode=1777",
        "-v", f"{params}:/params/params.yaml:ro", "-v", f"{out}:/out", image,
    ]  # fmt: skip
    sets = [arg for item in tiny_overrides for arg in ("--set", item)]
    result = run(
        *sandbox, "oasis-vqvae", "ingest", "--params", "/params/params.yaml", *sets,
        "--set", "tracking.enabled=false", "--out", "/out/dataset", timeout=900,
    )  # fmt: skip
    manifest = out / "dataset" / "manifest.json"
    assert manifest.is_file(), result.stderr[-2000:]
    assert json.loads(manifest.read_text())
    assert {str(path.stat().st_uid) for path in (out / "dataset").rglob("*")} != {"0"}
    if os.getuid() == 0:  # a rootful engine keeps the container's UID on the host
        assert {str(path.stat().st_uid) for path in (out / "dataset").rglob("*")} == {UID}
    # The same sandbox does refuse a write anywhere else: the check above is real.
    refused = run(*sandbox, "touch", "/opt/oasis-vqvae/written", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr


def test_image_holds_no_credentials(engine, image):
    (config,) = json.loads(run(engine, "image", "inspect", image).stdout)
    env = config["Config"]["Env"]
    assert config["Config"]["User"] == UID
    assert not [item for item in env if SECRET_NAME.search(item.partition("=")[0])]
    history = run(engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "useradd" in history  # the history is there to read
    assert not re.search(rf"({SECRET_NAME.pattern})\w*=\S", history, re.I)
    # No value of a secret-looking variable of this machine went into the image.
    secrets = [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8]
    for value in secrets:
        assert value not in history and not any(value in item for item in env)
    # No credential files in any layer; the build's CA-bundle secret was only mounted.
    found = run(
        engine, "run", "--rm", image, "sh", "-c",
        "find / -xdev \\( -name .netrc -o -name .pypirc -o -name .git-credentials "
        "-o -name application_default_credentials.json -o -name '*.pem' -path '/home/*' "
        "-o -path '*/.docker/config.json' -o -path '*/gcloud/*' \\) -print 2>/dev/null; "
        "test ! -e /run/secrets/ca_bundle || echo /run/secrets/ca_bundle",
    ).stdout  # fmt: skip
    assert found.strip() == ""


def test_dag_in_the_image_matches_the_subprocess_runner(
    image, docker_api, tmp_path, tiny_overrides, mlflow_server, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # 127.0.0.1: host network
    monkeypatch.chdir(tmp_path)
    sets = [arg for item in tiny_overrides for arg in ("--set", item)]
    runs = {}
    for runner in ("docker", "subprocess"):
        status = main(
            ["run-local", "--runner", runner, "--image", image, *sets,
             "--set", f"tracking.experiment=kfp-{runner}",
             "--output-dir", str(tmp_path / runner)]
        )  # fmt: skip
        out = capsys.readouterr().out
        assert status == 0, out[-3000:]
        evaluation = tmp_path / _printed(out, "evaluation:")
        runs[runner] = evaluation
    docker, subprocess_ = (
        json.loads((runs[name] / "metrics.json").read_text()) for name in ("docker", "subprocess")
    )
    assert docker.keys() == subprocess_.keys()
    assert docker["ssim_mean"] == pytest.approx(subprocess_["ssim_mean"], abs=1e-3)

    # The same tasks ran, each in its own folder, written by the image's user.
    docker_dir, subprocess_dir = (runs[name].parents[1] for name in ("docker", "subprocess"))
    tasks = sorted(path.name for path in subprocess_dir.iterdir())
    assert sorted(path.name for path in docker_dir.iterdir()) == tasks
    assert (docker_dir / "train-vqvae" / "vqvae" / "vqvae.keras").is_file()
    if os.getuid() == 0:
        assert str((docker_dir / "ingest").stat().st_uid) == UID

    # The containers reached the host's MLflow server: one parent run, one child per task.
    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name("kfp-docker").experiment_id
    (parent,) = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == docker_dir.name
    children = client.search_runs(
        [experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    )
    assert sorted(child.data.tags[STAGE_TAG] for child in children) == sorted(STAGES)


def test_missing_image_names_the_tag_and_make_image(docker_api, tmp_path, capsys):
    tag = "localhost/oasis-vqvae:no-such-tag"
    status = main(
        ["run-local", "--runner", "docker", "--image", tag, "--set", "tracking.enabled=false",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1
    assert f"no image {tag}" in err and f"make image IMAGE={tag}" in err


def _printed(out: str, label: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(label)]
    return line.removeprefix(label).strip()
