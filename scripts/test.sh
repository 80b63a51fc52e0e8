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
stop_servers() {
  scripts/servers/saio-stop.sh /tmp/barge-saio >/dev/null 2>&1 || true
  scripts/servers/saio-stop.sh /tmp/barge-saio-throttled >/dev/null 2>&1 || true
  scripts/servers/ceph-stop.sh /tmp/barge-ceph >/dev/null 2>&1 || true
}
trap stop_servers EXIT
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== node image: build (Debian tree cached in /var/tmp/barge-image-cache) and UEFI boot test in qemu"
image/build.sh
image/test-boot.sh
echo "== fuzz (short run of every target; scripts/fuzz.sh 3600 for a long one)"
scripts/fuzz.sh "${BARGE_FUZZ_SECS:-15}"
