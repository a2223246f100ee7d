#!/usr/bin/env bash
# Validates the Kubernetes manifests in k8s/ offline (part of ./scripts/test.sh): renders each
# overlay with kustomize (or kubectl's built-in kustomize) and checks every object against the
# Kubernetes JSON schemas of the PyPI package kubernetes-validate, the CRD schemas in
# scripts/k8s-schemas/, and the cross-references no schema sees (scripts/validate_k8s.py).
#
# The package lives in a venv under ~/.cache/mealkitz/ (created on first use from PyPI; nothing
# else is downloaded). Skips, with a message, only when python3 is absent.
#
#   ./scripts/validate-k8s.sh                     # Kubernetes 1.30 and 1.37 schemas
#   K8S_VERSIONS="1.32" ./scripts/validate-k8s.sh  # others
#   ./scripts/validate-k8s.sh -v                  # also list the secret keys read, etc.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

KUBERNETES_VALIDATE_VERSION=1.37.0
CACHE_DIR="${MEALKITZ_CACHE_DIR:-$HOME/.cache/mealkitz}"
VENV="$CACHE_DIR/k8s-validate-$KUBERNETES_VALIDATE_VERSION"

if ! command -v python3 >/dev/null 2>&1; then
  say "SKIPPED: Kubernetes manifest validation needs python3, which is not installed"
  exit 0
fi

started_ns=$(date +%s%N)

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV (from PyPI)"
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv out of python3.
    rm -rf "$VENV"
    if command -v apt-get >/dev/null 2>&1; then
      say "python3 cannot create a venv; installing python3-venv with apt-get"
      pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv "python$pyver-venv" >/dev/null \
        || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

status=0
"$VENV/bin/python" scripts/validate_k8s.py "$@" || status=$?

# The check must be able to fail: a copy with one misspelt field must be refused, and so must
# a copy whose replicas may start without Redis (REDIS_URL made optional): they could not share
# the regions.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
broken_copy() {
  rm -rf "$scratch/copy"
  mkdir -p "$scratch/copy/scripts"
  cp -r k8s src "$scratch/copy/"
  cp -r scripts/validate_k8s.py scripts/k8s-schemas "$scratch/copy/scripts/"
}
broken_copy
sed -i '0,/timeoutSeconds:/s//timeoutSecond:/' "$scratch/copy/k8s/base/deployment.yaml"
if "$VENV/bin/python" "$scratch/copy/scripts/validate_k8s.py" >/dev/null 2>&1; then
  say "the validator accepted a deliberately broken Deployment (timeoutSecond)"
  status=1
fi
broken_copy
sed -i 's/^\( *\)key: redis-url$/&\n\1optional: true/' "$scratch/copy/k8s/base/deployment.yaml"
if ! grep -A1 'key: redis-url' "$scratch/copy/k8s/base/deployment.yaml" | grep -q 'optional: true'; then
  say "could not make REDIS_URL optional in a copy of k8s/base/deployment.yaml (its redis-url key moved?)"
  status=1
elif "$VENV/bin/python" "$scratch/copy/scripts/validate_k8s.py" >/dev/null 2>&1; then
  say "the validator accepted several replicas with an optional REDIS_URL"
  status=1
fi
# And a copy whose engine is pointed at OSRM (k8s/components/maps) but may not reach it: the
# egress rule the component adds to the engine's NetworkPolicy names another port.
broken_copy
sed -i 's/^\( *\)port: 5000$/\1port: 5001/' "$scratch/copy/k8s/components/maps/kustomization.yaml"
if ! grep -q 'port: 5001' "$scratch/copy/k8s/components/maps/kustomization.yaml"; then
  say "could not change the OSRM egress port in a copy of k8s/components/maps/kustomization.yaml (moved?)"
  status=1
elif "$VENV/bin/python" "$scratch/copy/scripts/validate_k8s.py" >/dev/null 2>&1; then
  say "the validator accepted an engine that its NetworkPolicy keeps from reaching OSRM"
  status=1
fi

elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
elapsed="$((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)) | cut -c1)"
if [ "$status" = 0 ]; then
  say "Kubernetes manifests valid (${elapsed} s)"
else
  say "Kubernetes manifests INVALID (${elapsed} s)"
fi
exit "$status"
