#!/usr/bin/env bash
# The main job on its embedded default: generate a sample tree (duplicates, shifted and
# edited copies), migrate it through sealed, deduplicated staging into a local directory,
# verify every byte and print the report with the dedup ratio. No servers needed.
#   scripts/demo.sh [DIR] [SIZE]      (defaults: ./barge-demo 256MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
dir=${1:-./barge-demo}
size=${2:-256MiB}
cargo run --release --quiet -- demo --dir "$dir" --size "$size"
diff -r "$dir/sample" "$dir/out" && echo "demo: diff -r finds $dir/sample and $dir/out identical"
