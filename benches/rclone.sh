#!/usr/bin/env bash
# barge vs rclone, same data set, same concurrency, same servers: local tree -> the
# project's SAIO (Swift API) and -> Ceph radosgw (S3 API). Runs alternate barge, rclone,
# barge, rclone ... and the median throughput ratio is printed, with the CPU seconds the
# client and the test servers spent per run (they share the machine's cores).
#
#   benches/rclone.sh [--rounds N] [--concurrency N] [--size 256MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3; conc=8; size=256MiB
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/deps.sh bench
cargo build --release --quiet
B=${CARGO_TARGET_DIR:-$PWD/target}/release/barge
saio=$(scripts/servers/saio-start.sh)
ceph=$(scripts/servers/ceph-start.sh)
val() { printf '%s\n' "$1" | sed -n "s/^export $2=//p" | tr -d "'\""; }
ST_AUTH=$(val "$saio" ST_AUTH); ST_USER=$(val "$saio" ST_USER); ST_KEY=$(val "$saio" ST_KEY)
RGW=$(val "$ceph" CEPH_S3_ENDPOINT); RGW_AK=$(val "$ceph" CEPH_S3_ACCESS_KEY); RGW_SK=$(val "$ceph" CEPH_S3_SECRET_KEY)
dir=${BENCH_DIR:-$PWD/target/bench-rclone}
mkdir -p "$dir"
[ -f "$dir/tree.done" ] || { rm -rf "$dir/tree"; "$B" sample --out "$dir/tree" --size "$size" --seed 9 >&2; touch "$dir/tree.done"; }
bytes=$(du -sb --apparent-size "$dir/tree" | cut -f1)
export RCLONE_CONFIG_SAIO_TYPE=swift RCLONE_CONFIG_SAIO_AUTH=$ST_AUTH RCLONE_CONFIG_SAIO_USER=$ST_USER RCLONE_CONFIG_SAIO_KEY=$ST_KEY
export RCLONE_CONFIG_RGW_TYPE=s3 RCLONE_CONFIG_RGW_PROVIDER=Ceph RCLONE_CONFIG_RGW_ENDPOINT=$RGW \
       RCLONE_CONFIG_RGW_ACCESS_KEY_ID=$RGW_AK RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY=$RGW_SK
results=$(mktemp)
now() { date +%s.%N; }
mbps() { python3 -c "print($bytes/1e6/($2-$1))"; }
# shellcheck source=servers.sh
. benches/servers.sh
cpu_of() { python3 -c "import sys; u, s = open(sys.argv[1]).read().split(); print(float(u) + float(s))" "$1"; }

# timed NAME CMD...: runs CMD (its output in $dir/NAME.log, the tail shown if it fails,
# which ends the bench) and adds "NAME MB/s client-CPU-s servers-CPU-s" to the results.
timed() {
  local name=$1 t0 t1 s0 s1; shift
  s0=$(srv_cpu); t0=$(now)
  /usr/bin/time -f '%U %S' -o "$dir/cpu" "$@" >"$dir/$name.log" 2>&1 ||
    { echo "bench: $name failed:" >&2; tail -5 "$dir/$name.log" >&2; exit 1; }
  t1=$(now); s1=$(srv_cpu)
  echo "$name $(mbps "$t0" "$t1") $(cpu_of "$dir/cpu") $(python3 -c "print($s1 - $s0)")" >>"$results"
}
barge_run() {  # barge_run NAME TARGET-URL [extra env...]
  local st=$dir/state; rm -rf "$st"
  "$B" --quiet --state "$st" init >/dev/null
  timed "$1" env "${@:3}" "$B" --quiet --state "$st" --list-parallel 4 --max-concurrency "$conc" \
      migrate --concurrency "$conc" --source "$dir/tree" --dest "$2"
}
rclone_run() {  # rclone_run NAME REMOTE:PATH
  # AWS_CA_BUNDLE (set on some hosts) breaks rclone's S3 client on plain http.
  timed "$1" env -u AWS_CA_BUNDLE rclone copy --transfers "$conc" --checkers "$conc" "$dir/tree" "$2"
}
# Every run's copy is deleted after it is timed: the test servers' disks are small (the
# Ceph OSD is a 10 GiB file, and a full OSD stalls writes instead of refusing them).
purge() { env -u AWS_CA_BUNDLE rclone purge "$1" >/dev/null 2>&1 || echo "bench: could not delete $1" >&2; }
for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  id=$r-$$
  barge_run barge_swift "swift://bb$id" ST_AUTH="$ST_AUTH" ST_USER="$ST_USER" ST_KEY="$ST_KEY"
  purge "saio:bb$id"
  rclone_run rclone_swift "saio:rc$id"
  purge "saio:rc$id"
  barge_run barge_rgw "s3://bb-$id" AWS_ACCESS_KEY_ID="$RGW_AK" AWS_SECRET_ACCESS_KEY="$RGW_SK" AWS_ENDPOINT_URL="$RGW"
  purge "rgw:bb-$id"
  rclone_run rclone_rgw "rgw:rc-$id"
  purge "rgw:rc-$id"
done
python3 - "$results" "$bytes" "$conc" <<'PY'
import sys, statistics, collections
res = collections.defaultdict(list)
cli = collections.defaultdict(list)
srv = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v, c, s = line.split()
    res[k].append(float(v)); cli[k].append(float(c)); srv[k].append(float(s))
print(f"data set {int(sys.argv[2])/1e6:.0f} MB, concurrency {sys.argv[3]}")
for k in ["barge_swift", "rclone_swift", "barge_rgw", "rclone_rgw"]:
    print(f"{k:14} median {statistics.median(res[k]):7.1f} MB/s   runs " + " ".join(f"{x:.1f}" for x in res[k])
          + f"   CPU-s: client {statistics.median(cli[k]):.2f}, servers {statistics.median(srv[k]):.2f}")
for dst in ["swift", "rgw"]:
    r = [a / b for a, b in zip(res[f"barge_{dst}"], res[f"rclone_{dst}"])]
    print(f"barge / rclone into {dst:5}: {statistics.median(r):.2f}  (goal >= 1.3)")
PY
