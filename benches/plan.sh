#!/usr/bin/env bash
# Time to plan a move over several nodes: `barge plan --shards 16` of one bucket of
# 100,000 flat keys in the project's SAIO (s3api), and the key count per shard against
# the mean (goal: within ±20%). The plan lists the bucket once (key ranges in parallel,
# as `barge list` does), so the `barge list` time of the same bucket is printed beside it.
#
#   benches/plan.sh [--keys 100000] [--shards 16] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=100000; shards=16; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) keys=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/deps.sh bench
cargo build --release --quiet --bin barge
B=${CARGO_TARGET_DIR:-$PWD/target}/release/barge
saio=$(scripts/servers/saio-start.sh)
val() { printf '%s\n' "$saio" | sed -n "s/^export $1=//p" | tr -d "'\""; }
E=$(val SAIO_S3_ENDPOINT)
export AWS_ACCESS_KEY_ID=$(val SAIO_S3_ACCESS_KEY) AWS_SECRET_ACCESS_KEY=$(val SAIO_S3_SECRET_KEY)
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_ENDPOINT_URL AWS_CA_BUNDLE
bucket=listbench$keys   # the same bucket as benches/listing.sh
dir=${BENCH_DIR:-$PWD/target/bench-plan}
mkdir -p "$dir"
n=$("$B" --quiet --source-endpoint "$E" list --source "s3://$bucket" --keys 2>/dev/null | wc -l || true)
if [ "$n" != "$keys" ]; then
  echo "bench: filling s3://$bucket with $keys keys" >&2
  rm -rf "$dir/tree" "$dir/fill"
  python3 - "$dir/tree" "$keys" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
for i in range(n):
    open(os.path.join(d, "k%07d" % i), "wb").close()
PY
  "$B" --quiet --state "$dir/fill" init >/dev/null
  "$B" --quiet --state "$dir/fill" --dest-endpoint "$E" migrate --concurrency 64 \
    --source "$dir/tree" --dest "s3://$bucket" >/dev/null
  rm -rf "$dir/tree" "$dir/fill"
fi
for r in $(seq "$rounds"); do
  t0=$(date +%s.%N)
  "$B" --quiet --source-endpoint "$E" list --source "s3://$bucket" >/dev/null 2>&1
  t1=$(date +%s.%N)
  "$B" --quiet --source-endpoint "$E" plan --source "s3://$bucket" --shards "$shards" \
    --out "$dir/plan.json" 2>/dev/null
  t2=$(date +%s.%N)
  python3 - "$dir/plan.json" "$keys" "$shards" "$t0" "$t1" "$t2" "$r" <<'PY'
import json, sys
plan, keys, shards = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
t0, t1, t2, r = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
counts = [s["objects"] for s in plan["shards"]]
assert sum(counts) == keys and len(counts) == shards, (sum(counts), len(counts))
mean = keys / shards
print(f"round {r}: plan of {shards} shards for {keys} keys in {t2 - t1:.2f} s "
      f"({keys / (t2 - t1):,.0f} keys/s; barge list {t1 - t0:.2f} s); "
      f"keys per shard {min(counts)}..{max(counts)} "
      f"({(min(counts) / mean - 1) * 100:+.1f}%..{(max(counts) / mean - 1) * 100:+.1f}% of the mean)")
PY
done
