#!/usr/bin/env bash
# Undo kind-up.sh: stop the UI port-forward it started (by its PID) and delete the kind cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-taxifare}"
STATE_DIR="$ROOT/build/kind"

if [[ -f "$STATE_DIR/port-forward.pid" ]]; then
  pid="$(cat "$STATE_DIR/port-forward.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    echo "stopped the port-forward (pid $pid)"
  fi
  rm -f "$STATE_DIR/port-forward.pid"
fi
command -v kind >/dev/null 2>&1 || { echo "kind-down: kind is not installed; nothing to delete" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER"
fi
