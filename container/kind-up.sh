#!/usr/bin/env bash
# A local Kubeflow Pipelines for development: a kind cluster, a pinned standalone KFP, the project
# image loaded into the cluster, and the KFP UI (which also proxies the API) port-forwarded.
#
#   container/kind-up.sh            (make kind-up)
#
# Needs: docker (a running engine), kind, kubectl (with kustomize, built in since 1.14), network
# access to GitHub (manifests) and to the registries of the KFP images. Settings (environment):
#   KIND_CLUSTER (taxifare), KIND_NODE_IMAGE, PIPELINE_VERSION, IMAGE (the project image), UI_PORT (8080)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-taxifare}"
# Pinned: the kind node image (kind v0.27.0's Kubernetes) and the KFP release.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
PIPELINE_VERSION="${PIPELINE_VERSION:-2.14.3}"
PY="${PY:-$ROOT/.venv/bin/python}"
# the image this code builds (make image), tagged with the code's hash: what the compiled spec names
IMAGE="${IMAGE:-$(cd "$ROOT" && "$PY" -m pipelines.cloud.image name)}"
UI_PORT="${UI_PORT:-8080}"
STATE_DIR="$ROOT/build/kind"
MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"

fail() { echo "kind-up: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is required: $2"; }

need docker "install Docker (Debian: apt-get install docker.io) and start the engine"
need kind "install kind v0.27.0, https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "install kubectl >= 1.14, https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 || fail "the Docker engine is not running (start dockerd)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "image $IMAGE not found: build it first with make image"

echo "== kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "   exists, reusing it"
else
  kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "== Kubeflow Pipelines $PIPELINE_VERSION (standalone, platform-agnostic)"
kubectl apply -k "$MANIFESTS/cluster-scoped-resources?ref=$PIPELINE_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "$MANIFESTS/env/platform-agnostic?ref=$PIPELINE_VERSION"
echo "   waiting for every KFP deployment to be available (first start pulls images: minutes)"
kubectl -n kubeflow wait --for=condition=available --timeout=900s deployment --all

echo "== project image $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER"
# `taxifare submit --target kfp` accepts a spec naming this image only once it is recorded as loaded
(cd "$ROOT" && "$PY" -m pipelines.cloud.image record loaded "$IMAGE")
# Pipeline tasks run as the pipeline-runner service account; the deploy step's cluster target
# creates the serving Deployment + Service in this namespace.
kubectl apply -f "$ROOT/container/k8s/serving-rbac.yaml"

echo "== KFP UI on http://localhost:$UI_PORT"
mkdir -p "$STATE_DIR"
if [[ -f "$STATE_DIR/port-forward.pid" ]] && kill -0 "$(cat "$STATE_DIR/port-forward.pid")" 2>/dev/null; then
  echo "   port-forward already running (pid $(cat "$STATE_DIR/port-forward.pid"))"
else
  kubectl -n kubeflow port-forward svc/ml-pipeline-ui "$UI_PORT:80" >"$STATE_DIR/port-forward.log" 2>&1 &
  echo $! >"$STATE_DIR/port-forward.pid"
fi
cat <<DONE
ready:
  UI and API   http://localhost:$UI_PORT
  submit       .venv/bin/taxifare submit --target kfp --host http://localhost:$UI_PORT --experiment dev --wait
  stop         make kind-down
DONE
