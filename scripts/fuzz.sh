#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 20; the test command
# uses a short run). A long run: scripts/fuzz.sh 3600, or one target:
#   scripts/fuzz.sh 3600 fuzz_segment_format
# Corpora grow in fuzz/corpus/<target>/ (seeds are committed); a crash leaves
# fuzz/artifacts/<target>/crash-* and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_segment_format fuzz_catalog_records fuzz_names_and_etags fuzz_shipped_drive fuzz_inventory_manifest fuzz_inventory_csv fuzz_inventory_parquet)
export RUSTC_WORKSPACE_WRAPPER=$PWD/scripts/fuzz-rustc.sh
cargo build --locked -p barge-fuzz --bins
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t; artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$t"
  echo "== fuzz $t for ${secs}s"
  "$bin/$t" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" "fuzz/seeds/$t" 2>&1 | grep -E "^(INFO: Seed|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread|panicked)" || true
  if ls "$artifacts"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls "$artifacts"/crash-*)" >&2
    exit 1
  fi
done
