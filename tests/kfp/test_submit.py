"""``submit`` against a local HTTP endpoint that records what kfp.Client sends.

There is no Kubeflow cluster here; the endpoint is the server side of the real client: it
answers the few calls a submission makes (health, find/create experiment, create run)
just enough for the client to proceed, and keeps every request for the assertions.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from oasis_vqvae.config import load_params
from oasis_vqvae.kubeflow import component_params
from oasis_vqvae.stages import STAGES
from pipelines.cli import main

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict


@dataclass
class Endpoint:
    url: str
    requests: list[Request] = field(default_factory=list)
    refuse_runs: bool = False

    def sent(self, method: str, path: str) -> list[Request]:
        return self.sent_to(method, f"{API}{path}")

    def sent_to(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
            self._answer()

        def do_POST(self) -> None:  # noqa: N802
            self._answer()

        def _answer(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) or b"{}"
            try:
                body = json.loads(raw)
            except ValueError:  # the OAuth token request is a form
                body = {"form": parse_qs(raw.decode())}
            endpoint.requests.append(
                Request(self.command, url.path, parse_qs(url.query), _lower(self.headers), body)
            )
            status, reply = self._reply(url.path, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reply(self, path: str, body: dict) -> tuple[int, dict]:
            if path.startswith("/v1/projects/"):  # Vertex AI
                return 200, {**body, "name": f"{path.removeprefix('/v1/')}/job-1"}
            if path == "/token":  # OAuth, for Application Default Credentials
                return 200, {"access_token": "adc-token", "expires_in": 3600}
            if path.startswith("/storage/v1/b/"):  # the pipeline root's bucket exists
                return 200, {"name": path.rsplit("/", 1)[-1]}
            if path == f"{API}/healthz":
                return 200, {"multi_user": False}
            if path == f"{API}/experiments" and self.command == "GET":
                return 200, {}  # no experiment of that name yet
            if path == f"{API}/experiments":
                return 200, {"experiment_id": "exp-1", "display_name": body["display_name"]}
            if path == f"{API}/runs" and endpoint.refuse_runs:
                return 403, {"error": "denied", "code": 7, "message": "no access to namespace"}
            if path == f"{API}/runs":
                return 200, {"run_id": "run-1", "display_name": body["display_name"]}
            return 404, {"error": "not found"}

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    return Recorder


def _lower(headers) -> dict[str, str]:
    # HTTP header names are case-insensitive; the client sends `authorization`.
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: None)  # type: ignore[arg-type]
    recorder = Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_ambient_kfp_settings(monkeypatch, tmp_path):
    for name in ("KF_PIPELINES_TOKEN", "KFP_TOKEN", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json


def test_submit_sends_spec_run_name_experiment_and_params(endpoint, monkeypatch, capsys, repo_root):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "secret-token")
    status = main([
        "submit", "--host", endpoint.url, "--namespace", "team-mri",
        "--experiment", "oasis-exp", "--run-name", "nightly-42",
        "--set", "vqvae.epochs=3", "--set", "data.source=gs://bucket/oasis.zip",
        "--image", "registry.example/oasis-vqvae:test",
    ])  # fmt: skip
    assert status == 0
    assert "run run-1" in capsys.readouterr().out

    (found,) = endpoint.sent("GET", "/experiments")
    assert "oasis-exp" in found.query["filter"][0] and found.query["namespace"] == ["team-mri"]
    (created,) = endpoint.sent("POST", "/experiments")
    assert created.body["display_name"] == "oasis-exp"
    assert created.body["namespace"] == "team-mri"

    (run,) = endpoint.sent("POST", "/runs")
    assert run.body["display_name"] == "nightly-42"
    assert run.body["experiment_id"] == "exp-1"
    assert run.headers["authorization"] == "Bearer secret-token"
    # With a Kubernetes platform spec (the secrets) the client sends both, side by side.
    spec = run.body["pipeline_spec"]["pipeline_spec"]
    platform = run.body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert spec["pipelineInfo"]["name"] == "oasis-vqvae"
    for executor in platform["deploymentSpec"]["executors"].values():
        assert executor["secretAsEnv"][0]["secretName"] == "mlflow-credentials"
    assert set(spec["root"]["dag"]["tasks"]) == set(STAGES)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/oasis-vqvae:test"}
    sent = run.body["runtime_config"]["parameters"]["params"]
    expected = load_params(
        repo_root / "params.yaml", ["vqvae.epochs=3", "data.source=gs://bucket/oasis.zip"]
    )
    assert component_params(sent) == expected


def test_submit_a_compiled_package_with_overrides(endpoint, tmp_path, repo_root):
    package = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(package), "--mlflow-uri", "http://mlflow.x:5000"]) == 0
    status = main([
        "submit", "--host", endpoint.url, "--namespace", "team-mri",
        "--package", str(package), "--set", "generate.count=64", "--no-cache",
    ])  # fmt: skip
    assert status == 0
    (run,) = endpoint.sent("POST", "/runs")
    pipeline_spec, platform_spec = yaml.safe_load_all(package.read_text())
    sent = run.body["pipeline_spec"]
    assert sent["platform_spec"] == platform_spec
    # The package as compiled, except that the client rewrote caching for --no-cache.
    for part in ("components", "deploymentSpec", "pipelineInfo"):
        assert sent["pipeline_spec"][part] == pipeline_spec[part], part
    env = sent["pipeline_spec"]["deploymentSpec"]["executors"]["exec-ingest"]["container"]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.x:5000"} in env
    assert run.body["experiment_id"] == "exp-1"
    assert "authorization" not in run.headers
    params = component_params(run.body["runtime_config"]["parameters"]["params"])
    assert params == load_params(repo_root / "params.yaml", ["generate.count=64"])
    tasks = sent["pipeline_spec"]["root"]["dag"]["tasks"]
    assert set(tasks) == set(STAGES)
    assert all(not task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


def test_a_refused_run_is_one_clear_line(endpoint, capsys):
    endpoint.refuse_runs = True
    assert main(["submit", "--host", endpoint.url, "--namespace", "team-mri"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"Kubeflow Pipelines at {endpoint.url}: HTTP 403" in err


def test_an_unreachable_endpoint_is_one_clear_line(free_port, capsys):
    host = f"http://127.0.0.1:{free_port()}"
    assert main(["submit", "--host", host, "--namespace", "team-mri"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"Kubeflow Pipelines at {host}: no answer" in err


def test_submit_needs_a_host_and_vertex_needs_project_and_root(capsys):
    assert main(["submit"]) == 2
    assert "needs --host" in capsys.readouterr().err
    assert main(["submit", "--vertex"]) == 2
    assert "needs --project and --pipeline-root" in capsys.readouterr().err


def test_vertex_refuses_what_cannot_work_there_before_contacting_it(tmp_path, capsys):
    vertex = ["submit", "--vertex", "--project", "p", "--pipeline-root", "gs://bucket/root"]
    assert main(vertex) == 2  # the in-cluster MLflow service is not reachable from Vertex
    assert "--mlflow-uri" in capsys.readouterr().err
    package = tmp_path / "with-secrets.yaml"
    assert main(["compile", "--output", str(package)]) == 0
    assert main([*vertex, "--mlflow-uri", "https://mlflow.example", "--package", str(package)]) == 2
    assert "Kubernetes secrets, which Vertex AI does not accept" in capsys.readouterr().err
    assert main([*vertex, "--pipeline-root", "/local/root", "--set", "tracking.enabled=false"]) == 2
    assert "must be a gs:// URI" in capsys.readouterr().err


def test_vertex_sends_spec_name_root_and_params(endpoint, tmp_path, monkeypatch, capsys, repo_root):
    pytest.importorskip("google.cloud.aiplatform", reason="needs the [vertex] extra")
    # Application Default Credentials whose tokens come from the recording endpoint, and a
    # storage "emulator" there that says the pipeline root's bucket exists.
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(_service_account_key(f"{endpoint.url}/token")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint.url)
    status = main([
        "submit", "--vertex", "--project", "my-project", "--region", "europe-west4",
        "--pipeline-root", "gs://my-bucket/root", "--vertex-endpoint", endpoint.url,
        "--run-name", "nightly-7", "--set", "tracking.enabled=false", "--set", "vqvae.epochs=5",
        "--accelerator-type", "NVIDIA_TESLA_T4",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "pipelineJobs/job-1" in capsys.readouterr().out
    jobs = endpoint.sent_to("POST", "/v1/projects/my-project/locations/europe-west4/pipelineJobs")
    (job,) = jobs
    # Signed with the service-account key of the Application Default Credentials.
    scheme, token = job.headers["authorization"].split()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert scheme == "Bearer" and claims["iss"] == "pipelines@my-project.iam.gserviceaccount.com"
    assert job.body["displayName"] == "nightly-7"
    assert job.body["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/root"
    sent = job.body["runtimeConfig"]["parameterValues"]["params"]
    expected = load_params(repo_root / "params.yaml", ["tracking.enabled=false", "vqvae.epochs=5"])
    assert component_params(sent) == expected
    spec = job.body["pipelineSpec"]
    assert set(spec["root"]["dag"]["tasks"]) == set(STAGES)
    train = spec["deploymentSpec"]["executors"]["exec-train-vqvae"]["container"]["resources"]
    assert train["accelerator"]["resourceType"] == "NVIDIA_TESLA_T4"
    assert "platformSpec" not in job.body  # no Kubernetes secrets on Vertex AI


def _service_account_key(token_uri: str) -> dict:
    """A service-account key file with a fresh RSA key; its tokens come from ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account", "project_id": "my-project", "private_key_id": "test",
        "private_key": pem, "client_email": "pipelines@my-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }  # fmt: skip
