#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER for scripts/fuzz.sh: adds libFuzzer's coverage
# instrumentation (what cargo-fuzz adds, on the stable compiler) to the workspace's own
# crates only, so the dependencies keep the ordinary build and are not recompiled.
exec "$@" -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing
