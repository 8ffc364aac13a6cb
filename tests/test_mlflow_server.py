"""MLflow tracking server: mlflow/server.sh runs a real server; the Kubernetes files are sound."""

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "mlflow" / "server.sh"
MANIFEST = REPO / "mlflow" / "k8s" / "mlflow.yaml"
DOCKERFILE = REPO / "mlflow" / "k8s" / "Dockerfile"
START_TIMEOUT_S = 90  # a cold start takes ~20 s on a small machine
SERVER_ENV_VARS = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_ARTIFACTS_DESTINATION",
    "MLFLOW_HOST",
    "MLFLOW_PORT",
    "MLFLOW_WORKERS",
    "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_DEFAULT_ARTIFACT_ROOT",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
)


def _env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_VARS}
    env["PATH"] = path
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _venv_path() -> str:
    """PATH with the interpreter's bin/ (where `mlflow` is) first."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manifest() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {MANIFEST.name}, found {len(found)}"
    return found[0]


def _container() -> dict:
    return _one(_manifest(), "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _arg(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from the container args {args}"
    return args[args.index(flag) + 1]


def _group_alive(pgid: int) -> list[int]:
    """Pids of the process group that still run (zombies waiting for a reaper don't count)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server.sh exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"OK":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no OK from {url}/health within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _status_with_host(port: int, host_header: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host_header}
        )
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_server_script_serves_tracking_and_artifacts(tmp_path):
    cwd = tmp_path / "elsewhere"  # not the repo: the script must not depend on the cwd
    cwd.mkdir()
    art = tmp_path / "art"
    db = tmp_path / "m.db"
    log = tmp_path / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The manifest's --allowed-hosts, passed through as an extra argument: checks pass-through
    # and that in-cluster DNS names and port-forwarded localhost are let in.
    allowed_hosts = _arg(_container()["args"], "--allowed-hosts")
    cmd = ["bash", str(SCRIPT), "--port", str(port), "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", str(art), "--allowed-hosts", allowed_hosts]  # fmt: skip

    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=_env(_venv_path()), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_healthy(proc, url, log)

        client = mlflow.MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment("server-sh-test")
        # Proxied artifacts: clients get an mlflow-artifacts: URI, never the storage location.
        assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
        run_id = client.create_run(exp_id).info.run_id
        client.log_metric(run_id, "loss", 0.25, step=3)
        src = tmp_path / "notes.txt"
        src.write_text("codebook usage 0.93\n")
        client.log_artifact(run_id, str(src), artifact_path="reports")
        client.set_terminated(run_id)

        run = client.get_run(run_id)
        assert run.data.metrics == {"loss": 0.25}
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(3, 0.25)]
        assert run.info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(run_id, "reports")] == ["reports/notes.txt"]
        back = client.download_artifacts(run_id, "reports/notes.txt", str(tmp_path))
        assert Path(back).read_text() == "codebook usage 0.93\n"

        stored = list(art.rglob("notes.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "codebook usage 0.93\n"
        assert run_id in stored[0].parts
        assert db.is_file()
        assert not any(cwd.iterdir()), f"server wrote into its cwd: {list(cwd.iterdir())}"

        assert _status_with_host(port, "mlflow.mlflow.svc.cluster.local:5000") == 200
        assert _status_with_host(port, "localhost:5000") == 200
        assert _status_with_host(port, "attacker.example.com") == 403
    finally:
        # SIGTERM to the script's pid only: it exec'd mlflow, which must stop its workers.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = _group_alive(proc.pid)
        if leftover or proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode is not None
    assert not leftover, f"processes left after SIGTERM: {leftover}"


def test_help_lists_the_options_without_mlflow_installed():
    # --help must work before `make install`, so run it without the venv on PATH.
    result = subprocess.run(
        ["bash", str(SCRIPT), "--help"], env=_env("/usr/bin:/bin"),
        capture_output=True, text=True, timeout=30, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for word in ("--backend-store-uri", "MLFLOW_BACKEND_STORE_URI", "--artifacts-destination",
                 "MLFLOW_ARTIFACTS_DESTINATION", "--host", "--port", "--workers", "127.0.0.1",
                 "5000", "sqlite:///", "gs://", "MLFLOW_TRACKING_URI"):  # fmt: skip
        assert word in result.stdout, f"--help does not mention {word}"


def test_missing_mlflow_is_a_clear_error():
    path = "/usr/bin:/bin"
    if shutil.which("mlflow", path=path):
        pytest.skip("mlflow is installed system-wide")
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=_env(path), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "not on PATH" in result.stderr and "make install" in result.stderr


def test_postgres_without_driver_is_a_clear_error():
    try:
        import psycopg2  # noqa: F401

        pytest.skip("psycopg2 is installed")
    except ImportError:
        pass
    result = subprocess.run(
        ["bash", str(SCRIPT), "--backend-store-uri",
         "postgresql+psycopg2://mlflow:s3cret@db.invalid:5432/mlflow"],
        env=_env(_venv_path()), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pip install psycopg2-binary" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_manifest_documents_are_complete_and_wired_together():
    docs = _manifest()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc
    assert _one(docs, "Namespace")["metadata"]["name"] == "mlflow"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "mlflow", doc["kind"]

    account = _one(docs, "ServiceAccount")
    assert "iam.gke.io/gcp-service-account" in account["metadata"].get("annotations", {})

    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    container = _container()
    assert container["image"] and not container["image"].startswith("ghcr.io/mlflow/")
    assert container["resources"]["requests"] and container["resources"]["limits"]
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health"
        assert get["port"] in ports or get["port"] in ports.values()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    args = container["args"]
    assert "--serve-artifacts" in args
    assert _arg(args, "--host") == "0.0.0.0"
    assert _arg(args, "--artifacts-destination").startswith("gs://")
    assert "pip" not in " ".join(container.get("command", []) + args)
    backend = {e["name"]: e for e in container["env"]}["MLFLOW_BACKEND_STORE_URI"]
    assert backend["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}

    service = _one(docs, "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 5000
    assert port["targetPort"] in ports or port["targetPort"] in ports.values()


def test_dockerfile_builds_on_the_installed_mlflow_version():
    text = DOCKERFILE.read_text()
    major_minor = ".".join(mlflow.__version__.split(".")[:2])
    version = re.search(r"^ARG MLFLOW_VERSION=(\S+)", text, re.M).group(1)
    assert version.startswith(major_minor + "."), (version, mlflow.__version__)
    assert re.search(r"^FROM ghcr\.io/mlflow/mlflow:v\$\{MLFLOW_VERSION\}$", text, re.M)
    assert re.search(r"psycopg2-binary==\S+", text) and re.search(r"google-cloud-storage==", text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert _container()["image"].endswith(":" + version)
