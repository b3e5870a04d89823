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

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
