#!/usr/bin/env bash
# Offline seeding throughput on loop devices, against fio on the same kind of device in
# the same run: `barge import` (every superblock, manifest and segment checksum read
# back) against fio sequential O_DIRECT reads, and `barge erase` (zero overwrite of the
# whole drive, fdatasync'ed, with a sampled read-back, after the crypto-erase) against fio
# sequential O_DIRECT writes. Loop devices over sparse files on the disk under BENCH_DIR; run as root.
#
#   benches/ship.sh [--size 1GiB] [--drive-size 2GiB] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1GiB; dsize=2GiB; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --drive-size) dsize=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "benches/ship.sh needs root (losetup)" >&2; exit 2; }
scripts/deps.sh bench
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-$PWD/target}/release/barge
dir=${BENCH_DIR:-$PWD/target/bench-ship}
mkdir -p "$dir"
[ -f "$dir/tree.done" ] || { rm -rf "$dir/tree"; "$B" sample --out "$dir/tree" --size "$size" --seed 11 >&2; touch "$dir/tree.done"; }
loops=()
cleanup() { for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done; rm -f "$dir"/drive*.img "$dir"/fio.img; }
trap cleanup EXIT
results=$(mktemp)
now() { date +%s.%N; }
dbytes=$(numfmt --from=iec "${dsize%iB}")

fio_ref() {  # prints "WRITE READ" MB/s: 1 MiB sequential O_DIRECT io_uring on a loop device,
            # the whole device written first so that the read reads data, not holes
  rm -f "$dir/fio.img"; truncate -s "$dsize" "$dir/fio.img"
  local l w rd; l=$(losetup --find --show --direct-io=on "$dir/fio.img"); loops+=("$l")
  for m in write read; do
    fio --name=ref --filename="$l" --rw="$m" --bs=1M --direct=1 --ioengine=io_uring --iodepth=8 \
        --size="$dbytes" --output-format=json 2>/dev/null |
      python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(j['$m']['bw_bytes']/1e6)"
  done | paste -sd' '
  losetup -d "$l"; rm -f "$dir/fio.img"
}

for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  rm -rf "$dir/site-a" "$dir/site-b" "$dir/ship" "$dir/certs"
  devs=()
  for i in 0 1 2; do
    rm -f "$dir/drive$i.img"; truncate -s "$dsize" "$dir/drive$i.img"
    l=$(losetup --find --show --direct-io=on "$dir/drive$i.img"); loops+=("$l"); devs+=("$l")
  done
  st=()
  for d in "${devs[@]}"; do st+=(--staging "$d"); done
  "$B" --quiet --state "$dir/site-a" init --segment-size 256MiB "${st[@]}" >/dev/null
  sealed=$("$B" --json --state "$dir/site-a" ingest --source "$dir/tree" |
           python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin if l.startswith('{\"ingest')][0]['ingest']['bytes_sealed'])")
  code=$("$B" --json --state "$dir/site-a" seal --out "$dir/ship" |
         python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin if l.startswith('{\"seal')][0]['seal']['unlock_code_file'])")
  # A "shipped" drive: nothing in the page cache from site A.
  sync; echo 3 >/proc/sys/vm/drop_caches
  t0=$(now)
  "$B" --quiet --state "$dir/site-b" import --unlock-code-file "$code" "${devs[@]}" >/dev/null
  t1=$(now)
  echo "import $(python3 -c "print($sealed/1e6/($t1-$t0))")" >>"$results"
  t0=$(now)
  "$B" --quiet --state "$dir/site-b" erase --force --certificate-dir "$dir/certs" "${devs[@]}" >/dev/null
  t1=$(now)
  echo "erase $(python3 -c "print(3*$dbytes/1e6/($t1-$t0))")" >>"$results"
  for l in "${devs[@]}"; do losetup -d "$l"; done
  loops=()
  read -r w rd < <(fio_ref)
  echo "fio_write $w" >>"$results"
  echo "fio_read $rd" >>"$results"
done
python3 - "$results" "$sealed" "$dsize" <<'PY'
import sys, statistics, collections
res = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split(); res[k].append(float(v))
print(f"sealed staging data {int(sys.argv[2])/1e6:.0f} MB on 3 loop drives of {sys.argv[3]}")
for k in ["import", "fio_read", "erase", "fio_write"]:
    print(f"{k:10} median {statistics.median(res[k]):8.1f} MB/s   runs " + " ".join(f"{x:.1f}" for x in res[k]))
m = {k: statistics.median(v) for k, v in res.items()}
print(f"import (segment bytes checked) / fio sequential read : {m['import'] / m['fio_read']:.2f}")
print(f"erase (drive bytes overwritten) / fio sequential write : {m['erase'] / m['fio_write']:.2f}")
PY
