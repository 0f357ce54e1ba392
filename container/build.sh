#!/usr/bin/env bash
# Build the project image without network access inside the build.
#
#   container/build.sh [IMAGE]          (default: the configured repository tagged with the code's
#                                        hash, `python -m pipelines.cloud.image name`: what the
#                                        compiled spec names)
#
# 1. Wheels: every package of requirements.lock is downloaded (or built) on the host into
#    build/container/wheels/; skipped while the lockfile is unchanged.
# 2. Base: $BASE_IMAGE if set; else the Dockerfile's pinned python:3.11 slim image when it is
#    present or can be pulled; else a local Debian bookworm base (Python 3.11) made with
#    debootstrap and `docker import` (TAXIFARE_LOCAL_BASE=1 goes straight to that).
# 3. docker build with the repository as context (.dockerignore keeps it to what the image needs);
#    an unchanged rebuild reuses every layer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PY:-$ROOT/.venv/bin/python}"
IMAGE="${1:-${IMAGE:-}}"
if [[ -z "$IMAGE" ]]; then
  IMAGE="$("$PY" -m pipelines.cloud.image name)"
fi
BUILD_DIR="$ROOT/build/container"
WHEELS="$BUILD_DIR/wheels"
DEFAULT_BASE="$(sed -n 's/^ARG BASE_IMAGE=//p' container/Dockerfile)"
LOCAL_BASE="${LOCAL_BASE:-taxifare-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '[build.sh] %s\n' "$*" >&2; }

download_wheels() {
  local stamp="$WHEELS/.requirements.sha256" want
  want="$(sha256sum requirements.lock | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "wheels up to date ($(find "$WHEELS" -name '*.whl' | wc -l) in $WHEELS)"
    return
  fi
  mkdir -p "$WHEELS"
  log "downloading wheels for requirements.lock into $WHEELS"
  # `pip wheel` downloads binary wheels and builds the few source-only packages, so the image
  # installs with --no-index. The host must match the image: Linux x86_64, CPython 3.11.
  "$PY" -m pip wheel --quiet --disable-pip-version-check --find-links "$WHEELS" \
    -r requirements.lock -w "$WHEELS"
  echo "$want" > "$stamp"
}

local_base() {
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    return
  fi
  command -v debootstrap >/dev/null || { log "debootstrap is needed for a local base (apt-get install debootstrap)"; exit 1; }
  local rootfs="$BUILD_DIR/rootfs"
  if [[ ! -x "$rootfs/usr/bin/python3" ]]; then
    log "debootstrap bookworm (minbase + python3) into $rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" "$DEBIAN_MIRROR" >"$BUILD_DIR/debootstrap.log"
  fi
  log "importing $rootfs as $LOCAL_BASE"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
}

choose_base() {
  if [[ -n "${BASE_IMAGE:-}" ]]; then
    echo "$BASE_IMAGE"; return
  fi
  if [[ "${TAXIFARE_LOCAL_BASE:-0}" != "1" ]]; then
    if docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1 || docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
      echo "$DEFAULT_BASE"; return
    fi
    log "$DEFAULT_BASE cannot be pulled; using a local debootstrap base"
  fi
  local_base
  echo "$LOCAL_BASE"
}

code_version() {
  local version commit
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
  commit="$(git rev-parse --short HEAD 2>/dev/null || true)"
  if [[ -n "$commit" ]] && ! git diff --quiet HEAD -- trainer components pipelines 2>/dev/null; then
    commit="$commit-dirty"
  fi
  echo "${version}${commit:++$commit}"
}

download_wheels
base="$(choose_base)"
log "building $IMAGE from $base"
start=$SECONDS
DOCKER_BUILDKIT=0 docker build --quiet -f container/Dockerfile \
  --build-arg "BASE_IMAGE=$base" \
  --build-arg "CODE_VERSION=$(code_version)" \
  --build-arg "IMAGE_NAME=$IMAGE" \
  --label "org.opencontainers.image.source=taxifare-pipelines" \
  -t "$IMAGE" . >/dev/null
log "built $IMAGE in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
echo "$IMAGE"
