#!/usr/bin/env bash
# Listing throughput (keys/s) of one bucket of flat keys in the project's SAIO (s3api):
# `barge list` (key ranges listed --list-parallel at once) against `rclone lsf -R` and
# `aws s3api list-objects-v2` (both one sequential stream of pages), alternating, the
# median of each printed with the ratio of barge to the faster peer. Every tool must
# count every key. The server shares the machine's 2 cores with the client, so the
# server's CPU seconds per run are printed too: a listing that makes the server do more
# work per key shows there. Measured twice: with the SAIO's proxy in one process, as the
# tests run it (parallel requests then queue in that one process), and with 2 proxy
# worker processes, as a production proxy runs (SAIO_PROXY_WORKERS).
#
#   benches/listing.sh [--keys 100000] [--rounds 3] [--parallel 8]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=100000; rounds=3; par=8
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) keys=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --parallel) par=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/deps.sh bench
cargo build --release --quiet --bin barge
B=${CARGO_TARGET_DIR:-$PWD/target}/release/barge
start_saio() { saio=$(SAIO_PROXY_WORKERS=$1 scripts/servers/saio-start.sh); }
start_saio 0
val() { printf '%s\n' "$saio" | sed -n "s/^export $1=//p" | tr -d "'\""; }
E=$(val SAIO_S3_ENDPOINT)
export AWS_ACCESS_KEY_ID=$(val SAIO_S3_ACCESS_KEY) AWS_SECRET_ACCESS_KEY=$(val SAIO_S3_SECRET_KEY)
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_ENDPOINT_URL AWS_CA_BUNDLE
export RCLONE_CONFIG_SAIOS3_TYPE=s3 RCLONE_CONFIG_SAIOS3_PROVIDER=Other RCLONE_CONFIG_SAIOS3_ENDPOINT=$E \
       RCLONE_CONFIG_SAIOS3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_SAIOS3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
bucket=listbench$keys
dir=${BENCH_DIR:-$PWD/target/bench-listing}
mkdir -p "$dir"
# The bucket is filled once per server start (the SAIO keeps it until it is stopped):
# empty objects named k0000000..., uploaded by barge itself (a directory -> s3 move).
if ! aws --endpoint-url "$E" s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 ||
   [ "$(rclone lsf -R "saios3:$bucket" | wc -l)" != "$keys" ]; then
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
# shellcheck source=servers.sh
. benches/servers.sh
results=$(mktemp)
workers=0
# timed NAME CMD...: CMD prints one key per line; the run counts only if every key came.
timed() {
  local name=$1 t0 t1 s0 s1 n; shift
  s0=$(srv_cpu /tmp/barge-saio/run); t0=$(date +%s.%N)
  n=$("$@" 2>"$dir/$name.err" | wc -l) || { echo "bench: $name failed" >&2; tail -5 "$dir/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N); s1=$(srv_cpu /tmp/barge-saio/run)
  [ "$n" = "$keys" ] || { echo "bench: $name listed $n of $keys keys" >&2; exit 1; }
  echo "$name $(python3 -c "print($keys/($t1-$t0), $s1-$s0)") $workers" >>"$results"
}
for workers in 0 2; do
  start_saio "$workers"
  for r in $(seq 1 "$rounds"); do
    echo "bench: round $r/$rounds" >&2
    timed barge "$B" --quiet --source-endpoint "$E" --list-parallel "$par" list --keys --source "s3://$bucket"
    timed rclone rclone lsf -R "saios3:$bucket"
    timed awscli aws --endpoint-url "$E" s3api list-objects-v2 --bucket "$bucket" \
      --query 'Contents[].[Key]' --output text --page-size 1000
  done
done
# Back to the configuration the tests use.
start_saio 0
python3 - "$results" "$keys" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
for w in ("0", "2"):
    sel = [r for r in rows if r[3] == w]
    med = {}
    for name in ("barge", "rclone", "awscli"):
        med[name] = (statistics.median(float(r[1]) for r in sel if r[0] == name),
                     statistics.median(float(r[2]) for r in sel if r[0] == name))
    procs = "one process" if w == "0" else f"{w} worker processes"
    print(f"listing {sys.argv[2]} flat keys from the SAIO's s3api, proxy in {procs} (median of {len(sel)//3} runs)")
    for n, (kps, cpu) in med.items():
        print(f"  {n:7s} {kps:9.0f} keys/s   server CPU {cpu:5.1f} s")
    best = max(med["rclone"][0], med["awscli"][0])
    print(f"  ratio barge / faster peer: {med['barge'][0] / best:.2f} (goal >= 2)")
PY
