#!/usr/bin/env bash
# Container engine helpers behind `make image`, `make image-base` and the image tests.
#   components/image.sh engine                 print the working engine: docker, podman or buildah
#   components/image.sh base TAG               make a Debian bookworm + Python 3.11 base (debootstrap)
#   components/image.sh build TAG VARIANT BASE build components/Dockerfile from the repository root
#   components/image.sh exists TAG             exit 0 if the engine holds the image TAG
# An engine is one that answers, not one whose binary exists: a docker CLI without a daemon
# does not count. OASIS_VQVAE_ENGINE=docker|podman|buildah forces one.
set -euo pipefail

INSTALL_HINT="install Docker (with a running daemon) or Podman and Buildah, e.g. apt-get install podman buildah runc"
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "components/image.sh: $*" >&2; exit 1; }

engine() {
    if [[ -n ${OASIS_VQVAE_ENGINE:-} ]]; then
        echo "$OASIS_VQVAE_ENGINE"; return
    fi
    # timeout: a docker CLI pointed at a dead socket can hang rather than fail.
    if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null && timeout 60 podman info >/dev/null 2>&1; then
        echo podman
    elif command -v buildah >/dev/null && timeout 60 buildah info >/dev/null 2>&1; then
        echo buildah
    else
        die "no container engine answers: $INSTALL_HINT"
    fi
}

# The image-loading command of an engine: reads a root filesystem tarball on stdin.
import_rootfs() {
    local tag=$1 engine
    engine=$(engine)
    case $engine in
        docker|podman)
            "$engine" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$tag" ;;
        buildah)
            local ctr
            ctr=$(buildah from scratch)
            buildah add "$ctr" - / >/dev/null
            buildah config --cmd /bin/bash --env LANG=C.UTF-8 "$ctr"
            buildah commit --rm "$ctr" "$tag" ;;
    esac
}

base() {
    local tag=${1:?usage: image.sh base TAG}
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root: run make image-base as root (or sudo)"
    ROOT_DIR=$(mktemp -d /tmp/oasis-vqvae-base.XXXXXX); local root=$ROOT_DIR
    trap 'rm -rf "$ROOT_DIR"' EXIT
    # What python:3.11-slim-bookworm holds, from Debian's own packages: bookworm's python3 is
    # 3.11; venv makes the image's environment; ca-certificates for HTTPS to PyPI.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
        "$SUITE" "$root" "$MIRROR"
    chroot "$root" python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/* "$root"/tmp/* "$root"/dev/* "$root"/proc/* "$root"/sys/*
    tar -C "$root" --numeric-owner -c . | import_rootfs "$tag"
    echo "base image $tag: Debian $SUITE, $(chroot "$root" python3 --version)"
}

build() {
    local tag=${1:?usage: image.sh build TAG VARIANT BASE} variant=${2:-cpu}
    local base_image=${3:-python:3.11-slim-bookworm} engine
    engine=$(engine)
    local args=(-f components/Dockerfile --build-arg "VARIANT=$variant"
        --build-arg "BASE_IMAGE=$base_image" -t "$tag")
    # The host's CA bundle, if any, reaches pip as a build secret (never a layer), for
    # networks whose HTTPS goes through an inspecting proxy.
    local bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -f $bundle ]] && args+=(--secret "id=ca_bundle,src=$bundle")
    case $engine in
        docker) DOCKER_BUILDKIT=1 docker build "${args[@]}" . ;;
        # Host networking: no bridge or DNS set-up needed; the build only downloads.
        podman) podman build --network host --layers "${args[@]}" . ;;
        buildah) buildah build --network host --layers "${args[@]}" . ;;
    esac
}

exists() {
    local tag=${1:?usage: image.sh exists TAG} engine
    engine=$(engine)
    "$engine" image inspect "$tag" >/dev/null 2>&1 \
        || die "no image $tag: build it with make image IMAGE=$tag"
}

cmd=${1:-}
shift || true
case $cmd in
    engine) engine ;;
    base) base "$@" ;;
    build) build "$@" ;;
    exists) exists "$@" ;;
    *) die "usage: image.sh engine | base TAG | build TAG VARIANT BASE | exists TAG" ;;
esac
