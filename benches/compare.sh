#!/usr/bin/env bash
# Measures barge against the physical references on this machine, in one run, and prints
# the ratios. Runs alternate A B A B ... (this machine's disk is virtual and noisy) and
# the median ratio is reported.
#
#   benches/compare.sh [--rounds N] [--tree-size 4GiB] [--dir DIR]
#
# References: fio (io_uring, O_DIRECT, same block size and queue depth, same filesystem),
# openssl speed (AES-256-GCM, one core), b3sum --num-threads 1, restic backup of the
# same tree into a local repository.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3; tree_size=4GiB; dir=${BENCH_DIR:-$PWD/target/bench}
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --tree-size) tree_size=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/deps.sh bench
cargo build --release --quiet
B=$PWD/${CARGO_TARGET_DIR:-target}/release/barge
[ -x "$B" ] || B=${CARGO_TARGET_DIR}/release/barge
mkdir -p "$dir"
results=$(mktemp)
bs=1048576; qd=8; stage_mib=2048

log() { echo "bench: $*" >&2; }
record() { echo "$1 $2" >> "$results"; }   # name value(MB/s)
mbps() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['mb_per_s'])"; }

fio_write() {
  rm -f "$dir/fio.dat"
  fio --name=w --filename="$dir/fio.dat" --ioengine=io_uring --direct=1 --rw=write \
      --bs=$bs --iodepth=$qd --size=${stage_mib}M --end_fsync=1 --output-format=json 2>/dev/null |
    python3 -c "import json,sys; j=json.load(sys.stdin); print(j['jobs'][0]['write']['bw_bytes']/1e6)"
  rm -f "$dir/fio.dat"
}

openssl_gcm() {
  # Bytes per second at 16 KiB blocks, one process (one core), through the EVP interface.
  openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3 2>/dev/null |
    awk '/^aes-256-gcm|^AES-256-GCM/ {v=$NF; sub(/k$/,"",v); print v*1000/1e6}' | tail -1
}

b3sum_1t() {
  local f=$dir/b3.dat
  [ -f "$f" ] || head -c $((1024*1024*1024)) /dev/urandom > "$f"
  cat "$f" > /dev/null
  local t0 t1; t0=$(date +%s.%N); b3sum --num-threads 1 "$f" > /dev/null; t1=$(date +%s.%N)
  python3 -c "print(1073741824/1e6/($t1-$t0))"
}

tree=$dir/tree
if [ ! -f "$dir/tree.done" ]; then
  rm -rf "$tree"; log "generating a $tree_size sample tree"
  "$B" sample --out "$tree" --size "$tree_size" --seed 3 >&2 && touch "$dir/tree.done"
fi
tree_bytes=$(du -sb --apparent-size "$tree" | cut -f1)

barge_ingest() {
  rm -rf "$dir/state"
  "$B" --quiet --state "$dir/state" init >/dev/null
  cat "$tree"/*/* "$tree"/*/*/* > /dev/null 2>&1 || true
  local t0 t1; t0=$(date +%s.%N)
  "$B" --quiet --state "$dir/state" ingest --source "$tree" > /dev/null
  t1=$(date +%s.%N)
  du -sb "$dir/state/staging" | cut -f1 > "$dir/barge.size"
  python3 -c "print($tree_bytes/1e6/($t1-$t0))"
}

restic_backup() {
  rm -rf "$dir/restic"
  export RESTIC_PASSWORD=bench
  restic init -q --repo "$dir/restic" >/dev/null
  local t0 t1; t0=$(date +%s.%N)
  restic backup -q --repo "$dir/restic" "$tree" >/dev/null
  t1=$(date +%s.%N)
  du -sb "$dir/restic" | cut -f1 > "$dir/restic.size"
  python3 -c "print($tree_bytes/1e6/($t1-$t0))"
}

for r in $(seq 1 "$rounds"); do
  log "round $r/$rounds"
  record fio "$(fio_write)"
  record stage "$("$B" bench stage --dir "$dir" --mib $stage_mib --block-size $bs --queue-depth $qd | mbps)"
  record openssl "$(openssl_gcm)"
  record seal_awslc "$("$B" bench seal --backend aws-lc --mib 2048 | mbps)"
  record seal_rustcrypto "$("$B" bench seal --backend rust-crypto --mib 512 | mbps)"
  record b3sum "$(b3sum_1t)"
  record hash "$("$B" bench hash --mib 1024 | mbps)"
  record chunk "$("$B" bench chunk --mib 512 | mbps)"
  record chunk_crate "$("$B" bench chunk --crate --mib 512 | mbps)"
  record ingest "$(barge_ingest)"
  record restic "$(restic_backup)"
done

python3 - "$results" "$dir" "$tree_bytes" <<'PY'
import sys, statistics, collections
res = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split(); res[k].append(float(v))
d = sys.argv[2]; tree = int(sys.argv[3])
def ratios(a, b): return [x / y for x, y in zip(res[a], res[b]) if y > 0]
def med(xs): return statistics.median(xs) if xs else float('nan')
print(f"{'measure':44} {'median MB/s':>12}   runs")
for k in ["fio", "stage", "openssl", "seal_awslc", "seal_rustcrypto", "b3sum", "hash", "chunk", "chunk_crate", "ingest", "restic"]:
    print(f"{k:44} {med(res[k]):12.0f}   " + " ".join(f"{x:.0f}" for x in res[k]))
best_aes = [max(a, b) for a, b in zip(res["openssl"], res["seal_awslc"])]
rows = [
    ("staging write / fio io_uring O_DIRECT", med(ratios("stage", "fio")), ">= 0.9"),
    ("AES-256-GCM seal (aws-lc) / fastest", med([a / b for a, b in zip(res["seal_awslc"], best_aes)]), ">= 0.8"),
    ("AES-256-GCM seal (aws-lc) / openssl speed", med(ratios("seal_awslc", "openssl")), "info"),
    ("AES-256-GCM seal (aes-gcm crate) / openssl", med(ratios("seal_rustcrypto", "openssl")), "info (reference impl)"),
    ("keyed BLAKE3 / b3sum --num-threads 1", med(ratios("hash", "b3sum")), ">= 0.9"),
    ("FastCDC: barge chunker / fastcdc crate", med(ratios("chunk", "chunk_crate")), ">= 1"),
    ("barge ingest / restic backup", med(ratios("ingest", "restic")), ">= 2"),
    ("barge ingest / fio write", med(ratios("ingest", "fio")), ">= 0.7"),
]
bs = int(open(f"{d}/barge.size").read()); rs = int(open(f"{d}/restic.size").read())
print()
print(f"{'ratio (median of alternated runs)':44} {'value':>8}   goal")
for name, v, goal in rows:
    print(f"{name:44} {v:8.2f}   {goal}")
print(f"{'staged bytes / restic repository bytes':44} {bs / rs:8.2f}   <= 1  (barge {bs} B, restic {rs} B, tree {tree} B)")
PY
