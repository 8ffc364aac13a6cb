"""The compiled pipeline YAML, loaded back: tasks, wiring, image, resources, retries, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import components as kfp_components

import components
from oasis_vqvae.config import load_params
from oasis_vqvae.kubeflow import component_params
from oasis_vqvae.stages import STAGES
from pipelines.cli import main
from pipelines.pipeline import DEFAULT_RESOURCES

IMAGE = "registry.example/oasis-vqvae:test"
# Task -> the tasks whose outputs it reads.
UPSTREAM = {
    "ingest": set(),
    "train-vqvae": {"ingest"},
    "extract-codes": {"ingest", "train-vqvae"},
    "train-pixelcnn": {"extract-codes"},
    "generate": {"train-vqvae", "train-pixelcnn"},
    "evaluate": {"ingest", "train-vqvae", "train-pixelcnn", "generate"},
    "utility": {"ingest", "extract-codes", "train-pixelcnn", "generate"},
}


def compile_to(path: Path, *args: str) -> tuple[dict, dict]:
    """Compile with the CLI; return the pipeline spec and the Kubernetes platform spec."""
    assert main(["compile", "--output", str(path), *args]) == 0
    spec, *platform = yaml.safe_load_all(path.read_text())
    return spec, (platform[0] if platform else {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("compile") / "pipeline.yaml"
    spec, platform = compile_to(
        path, "--image", IMAGE,
        "--accelerator-type", "nvidia.com/gpu", "--accelerator-count", "2",
        "--resources", "train-vqvae=8,32Gi",
        "--mlflow-uri", "http://mlflow.test:5000", "--mlflow-experiment", "kfp-test",
        "--mlflow-secret", "mlflow-auth", "--gcs-secret", "gcs-key",
        "--retries", "3", "--backoff", "30s",
        "--set", "vqvae.epochs=3",
    )  # fmt: skip
    return path, spec, platform


def tasks_of(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]


def executor(spec: dict, task: dict) -> dict:
    name = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][name]["container"]


def test_loads_back_with_kfp_as_the_seven_task_dag(compiled):
    path, spec, _ = compiled
    loaded = kfp_components.load_component_from_file(str(path))
    assert loaded.name == "oasis-vqvae"
    assert set(loaded.component_spec.inputs) == {"params"}
    assert set(loaded.component_spec.outputs) == {
        "metrics", "report", "evaluation", "labels", "synthetic"
    }  # fmt: skip
    tasks = tasks_of(spec)
    assert set(tasks) == set(STAGES)
    for name, task in tasks.items():
        assert set(task.get("dependentTasks", [])) == UPSTREAM[name], name
        producers = {
            source["taskOutputArtifact"]["producerTask"]
            for source in task["inputs"].get("artifacts", {}).values()
        }
        assert producers == UPSTREAM[name], name


def test_every_task_runs_the_image_without_installing_anything(compiled):
    _, spec, _ = compiled
    for name, task in tasks_of(spec).items():
        container = executor(spec, task)
        assert container["image"] == IMAGE, name
        assert "pip install" not in " ".join(container["command"]), name


def test_resources_accelerator_retry_caching_and_names(compiled):
    _, spec, _ = compiled
    names = set()
    for name, task in tasks_of(spec).items():
        resources = executor(spec, task)["resources"]
        default = DEFAULT_RESOURCES[name]
        cpu, memory = ("8", "32Gi") if name == "train-vqvae" else (default.cpu, default.memory)
        assert resources["resourceCpuRequest"] == resources["resourceCpuLimit"] == cpu, name
        assert resources["resourceMemoryRequest"] == memory, name
        assert resources["resourceMemoryLimit"] == memory, name
        accelerator = resources.get("accelerator")
        if name in ("train-vqvae", "train-pixelcnn"):
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert int(accelerator["resourceCount"]) == 2
        else:
            assert accelerator is None, name
        assert task["retryPolicy"] == {
            "maxRetryCount": 3,
            "backoffDuration": "30s",
            "backoffFactor": 2.0,
            "backoffMaxDuration": "3600s",
        }
        assert task["cachingOptions"] == {"enableCache": True}
        names.add(task["taskInfo"]["name"])
    assert len(names) == len(STAGES) and "Train VQ-VAE" in names


def test_no_cache_turns_caching_off_and_no_accelerator_by_default(tmp_path):
    spec, _ = compile_to(tmp_path / "p.yaml", "--no-cache")
    for name, task in tasks_of(spec).items():
        assert task["cachingOptions"] == {}, name  # enableCache false is the proto default
        assert "accelerator" not in executor(spec, task)["resources"], name
        assert executor(spec, task)["image"] == components.image()


def test_mlflow_settings_and_secrets_reach_every_task(compiled):
    _, spec, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in tasks_of(spec).items():
        env = {item["name"]: item["value"] for item in executor(spec, task)["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.test:5000", name
        assert env["MLFLOW_EXPERIMENT_NAME"] == "kfp-test", name
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
        # Only params: a per-run input (such as the run id) would defeat KFP's cache key.
        assert task["inputs"]["parameters"] == {"params": {"componentInputParameter": "params"}}
        secrets = executors[task["componentRef"]["name"].replace("comp-", "exec-")]
        (mlflow_secret,) = secrets["secretAsEnv"]
        assert mlflow_secret["secretName"] == "mlflow-auth" and mlflow_secret["optional"]
        assert {item["envVar"] for item in mlflow_secret["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
        }  # fmt: skip
        assert secrets["secretAsVolume"][0]["secretName"] == "gcs-key"
    # Credentials never travel as pipeline parameters.
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"params"}


def test_params_default_is_params_yaml_with_overrides(compiled, repo_root):
    _, spec, _ = compiled
    default = spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]
    expected = load_params(repo_root / "params.yaml", ["vqvae.epochs=3"])
    assert component_params(default) == expected


def test_component_defaults_are_params_yaml(repo_root):
    """Every key of params.yaml, current and future, is a component default: no drift."""
    expected = load_params(repo_root / "params.yaml")
    built = components.build()
    assert set(built) == set(STAGES)
    for stage, component in built.items():
        spec = component.component_spec.inputs["params"]
        assert spec.optional, stage
        assert component_params(spec.default) == expected, stage
        # Also as KFP serialises it (numbers become doubles in a protobuf Struct).
        ir = component.pipeline_spec.root.input_definitions.parameters["params"]
        assert component_params(json_format.MessageToDict(ir.default_value)) == expected


def test_bad_override_fails_before_compiling_with_one_line(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--set", "vqvae.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vqvae.epoch: unknown key" in err
    assert not (tmp_path / "p.yaml").exists()


def test_bad_resources_flag_names_the_format(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--resources", "train=4"]) == 2
    assert "STAGE=CPU,MEMORY" in capsys.readouterr().err
