#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, clippy, every test
# of the workspace (unit, integration, doc). .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
