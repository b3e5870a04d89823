#!/usr/bin/env bash
# Renders deploy/kubernetes (the base and every overlay) with `kubectl kustomize` and validates
# each object strictly against the Kubernetes API schemas (PyPI `kubernetes-validate`, which ships
# them; installed into .venv by scripts/setup.sh). Offline: no cluster is needed. The in-cluster
# proxy.toml is loaded by the proxy's own config loader in tests/cli/cli_config.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.31.0}
validate=.venv/bin/kubernetes-validate
command -v kubectl >/dev/null 2>&1 || { echo "kubectl (1.27 or newer) is missing" >&2; exit 1; }
[ -x "$validate" ] || { echo "$validate is missing: run scripts/setup.sh" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  kubectl kustomize "$dir" > "$out/$name.yaml"
  "$validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out/$name.yaml"
  echo "kubernetes: $dir renders $(grep -c '^kind:' "$out/$name.yaml") objects, valid against $KUBERNETES_VERSION"
done
