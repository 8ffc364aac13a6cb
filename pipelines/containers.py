"""Run the pipeline's tasks in the components' image: kfp.local's DockerRunner, set up here.

The engine is whatever answers the Docker API at ``$DOCKER_HOST``: Docker's daemon, or
Podman's API service (``podman system service``), found by itself at its usual socket when
``DOCKER_HOST`` is unset. Tasks share the host's network, so an MLflow server on this
machine (``http://127.0.0.1:PORT``) is reached as on the host; they run as the image's
unprivileged user and write only below the pipeline root, which is bind-mounted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oasis_vqvae.errors import OasisError

INSTALL_HINT = (
    "install Docker and start its daemon, or Podman (apt-get install podman runc) and start "
    "its Docker-compatible service: podman system service --time=0 "
    "unix:///run/podman/podman.sock & export DOCKER_HOST=unix:///run/podman/podman.sock"
)
PODMAN_SOCKETS = ("/run/podman/podman.sock", "{runtime}/podman/podman.sock")
"""Where Podman's API service listens by default: as root, and as a user (XDG_RUNTIME_DIR)."""
FORWARDED_ENV_PREFIXES = ("MLFLOW_",)
"""Variables of this process that the tasks get too (the subprocess runner passes them all)."""


class ContainerError(OasisError):
    """No container engine answers, or the image to run is missing."""


def connect() -> Any:
    """A ``docker.DockerClient`` that answers; sets ``DOCKER_HOST`` when it finds Podman's socket.

    kfp.local opens its own client per task with ``docker.from_env()``, hence the variable.
    """
    try:
        import docker
    except ImportError:
        raise ContainerError(
            "--runner docker needs the docker package: pip install 'docker>=7.1,<8'"
        ) from None
    candidates = [None] if os.environ.get("DOCKER_HOST") else [None, *_podman_sockets()]
    for host in candidates:
        try:
            client = docker.DockerClient(base_url=host) if host else docker.from_env()
            client.ping()
        except docker.errors.DockerException:
            continue
        if host:
            os.environ["DOCKER_HOST"] = host
        return client
    where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
    raise ContainerError(f"no container engine answers at {where}: {INSTALL_HINT}")


def _podman_sockets() -> list[str]:
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    paths = [Path(path.format(runtime=runtime)) for path in PODMAN_SOCKETS]
    return [f"unix://{path}" for path in paths if path.is_socket()]


def local_image(client: Any, tag: str) -> tuple[str, str]:
    """The engine's name of image ``tag`` and its user; a one-line error naming the fix if absent.

    Podman files a short name ``oasis-vqvae:x`` as ``localhost/oasis-vqvae:x``; kfp.local
    looks the name up literally and would try to pull anything else.
    """
    import docker

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise ContainerError(
            f"no image {tag} in the container engine: build it with make image IMAGE={tag}"
        ) from None
    except docker.errors.DockerException as err:
        raise ContainerError(f"the container engine cannot look up {tag}: {err}") from None
    names = [name for name in image.tags if name == tag or name.endswith(f"/{tag}")]
    user = (image.attrs.get("Config") or {}).get("User") or "root"
    return (names[0] if names else tag), user


def make_writable_for(directory: Path, user: str) -> None:
    """Let the image's ``user`` create the run folders in ``directory`` (bind-mounted as is).

    As root, hand the folder to that user; otherwise open it like /tmp (sticky, everyone
    may write): an unprivileged host user cannot chown, and the container's user differs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    uid, _, gid = user.partition(":")
    if os.getuid() == 0 and uid.isdigit():
        os.chown(directory, int(uid), int(gid) if gid.isdigit() else int(uid))
    elif os.getuid() != 0:
        directory.chmod(0o1777)


def runner(pipeline_root: Path, image: str, tracking_uri: str | None) -> tuple[Any, str]:
    """kfp.local's DockerRunner for ``image`` writing below ``pipeline_root``; and the image name.

    ``tracking_uri``: the MLflow tracking URI the tasks will use, None when tracking is off;
    it must be a server (http/https), since a store on this machine's disk is not mounted.
    """
    from kfp import local

    if tracking_uri is not None and not tracking_uri.startswith(("http://", "https://")):
        raise ContainerError(
            f"--runner docker: the tasks cannot reach the MLflow store {tracking_uri} on this "
            "machine's disk; start a server (make ui) and export "
            "MLFLOW_TRACKING_URI=http://127.0.0.1:5000, or --set tracking.enabled=false"
        )
    client = connect()
    try:
        name, user = local_image(client, image)
    finally:
        client.close()
    make_writable_for(pipeline_root, user)
    environment = {
        key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)
    }
    docker_runner = local.DockerRunner(network_mode="host", environment=environment)
    return docker_runner, name
