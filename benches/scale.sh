#!/usr/bin/env bash
# Per-object cost: many small files (1-16 KiB, ~10% duplicates), the work that decides how
# long a billion-object move takes. Measured in one run, side by side, on this machine:
#
#   1. directory -> directory: barge migrate (objects/s, MB/s, peak RSS, catalog bytes per
#      object after `barge fsck` compacts it; peak RSS also at a tenth of the objects, to
#      show whether memory grows with the object count), rclone copy, cp -r. Every copy
#      ends with `sync` inside its timing: barge's objects are durable when it returns,
#      rclone's and cp's are not until then.
#   2. S3 (the SAIO's s3api) -> Swift (the SAIO): barge migrate and rclone copy of a
#      smaller set, at the same concurrency, with each tool's CPU seconds, and the SAIO's
#      CPU seconds and requests per object during each run. The SAIO shares these cores,
#      so its work per object bounds the ratio any tool can reach here; the last line
#      prints that bound.
#
#   benches/scale.sh [--objects 1000000] [--s3-objects 20000] [--concurrency 8] [--no-s3]
#
# BARGE_BIN=path uses that binary instead of building the release one (a quick check of the
# script itself with a debug build says nothing about speed). BENCH_DIR (default
# target/bench-scale) keeps the generated trees between runs. SETTLE_SECS (default 65) is the
# pause before each timed copy into a directory (see settle below).
set -euo pipefail
cd "$(dirname "$0")/.."
objects=1000000; s3_objects=20000; conc=8; s3=1
while [ $# -gt 0 ]; do
  case "$1" in
    --objects) objects=$2; shift 2 ;;
    --s3-objects) s3_objects=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --no-s3) s3=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for v in "$objects" "$s3_objects" "$conc"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "not a positive whole number: $v" >&2; exit 2; }
done
scripts/deps.sh bench
if [ -n "${BARGE_BIN:-}" ]; then
  B=$BARGE_BIN
else
  cargo build --release --quiet --bin barge
  B=${CARGO_TARGET_DIR:-$PWD/target}/release/barge
fi
dir=${BENCH_DIR:-$PWD/target/bench-scale}
mkdir -p "$dir"
results=$dir/results.txt
: >"$results"

# gen DIR N SEED: N files of 1-16 KiB, a tenth of them copies of earlier ones, 1000 per
# directory; the first tenth of the directories under DIR/a, the rest under DIR/b.
gen() {
  [ -f "$1.done" ] && return 0
  rm -rf "$1"
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
pool = []
tenth = max(1, n // 10)
for i in range(n):
    part = "a" if i < tenth else "b"
    d = os.path.join(root, part, f"d{i // 1000:05d}")
    if i % 1000 == 0 or not os.path.isdir(d):
        os.makedirs(d, exist_ok=True)
    if pool and rng.random() < 0.10:
        data = rng.choice(pool)
    else:
        data = rng.randbytes(rng.randint(1024, 16384))
        if len(pool) < 1000:
            pool.append(data)
        else:
            pool[rng.randrange(1000)] = data
    with open(os.path.join(d, f"f{i:08d}"), "wb") as f:
        f.write(data)
PY
  touch "$1.done"
}

now() { date +%s.%N; }
# timed NAME OBJECTS BYTES CMD...: runs CMD then sync; appends
# "NAME objects/s MB/s peak-RSS-MiB CPU-s" to the results.
timed() {
  local name=$1 n=$2 bytes=$3 t0 t1; shift 3
  sync; t0=$(now)
  /usr/bin/time -f '%M %U %S' -o "$dir/time" "$@" >"$dir/$name.log" 2>&1 ||
    { echo "bench: $name failed:" >&2; tail -5 "$dir/$name.log" >&2; exit 1; }
  sync; t1=$(now)
  python3 - "$name" "$n" "$bytes" "$t0" "$t1" "$dir/time" >>"$results" <<'PY'
import sys
name, n, b, t0, t1, tf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
rss, u, s = open(tf).read().split()[-3:]
dt = t1 - t0
print(f"{name} {n / dt:.0f} {b / 1e6 / dt:.1f} {int(rss) / 1024:.0f} {float(u) + float(s):.1f} {dt:.1f}")
PY
}
# After a large tree is deleted, ext4 keeps its inodes from reuse for about a minute
# (recently_deleted): a copy that starts right away scans past them on every file it
# creates, up to twice the system CPU (measured with perf: 17% of a migrate in
# find_inode_bit/recently_deleted). Each timed copy therefore starts after this pause.
settle() { rm -rf "$@"; sync; sleep "${SETTLE_SECS:-65}"; }
# field NAME COLUMN [FILE]: a column of NAME's line in FILE (default: the results).
field() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "${3:-$results}"; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}' if b else '-')" "$1" "$2"; }

# ---- 1. directory -> directory
tree=$dir/tree-$objects
echo "bench: generating $objects files in $tree (kept for the next run)" >&2
gen "$tree" "$objects" 7
bytes=$(du -sb --apparent-size "$tree" | cut -f1)
tenth=$(find "$tree/a" -type f | wc -l)
tenth_bytes=$(du -sb --apparent-size "$tree/a" | cut -f1)
barge_dir() {  # barge_dir NAME SRC N BYTES
  settle "$dir/state" "$dir/out"
  "$B" --quiet --state "$dir/state" init >/dev/null
  timed "$1" "$3" "$4" "$B" --quiet --state "$dir/state" migrate --source "$2" --dest "$dir/out"
}
barge_dir barge_tenth "$tree/a" "$tenth" "$tenth_bytes"
barge_dir barge "$tree" "$objects" "$bytes"
"$B" --quiet --state "$dir/state" fsck >/dev/null
per_object=$("$B" --quiet --json --state "$dir/state" report |
  python3 -c 'import json,sys; print(round(json.load(sys.stdin)["report"]["catalog_bytes_per_object"]))')
settle "$dir/out"
timed rclone "$objects" "$bytes" rclone copy --transfers 8 --checkers 8 "$tree" "$dir/out"
settle "$dir/out"
timed cp "$objects" "$bytes" cp -r "$tree" "$dir/out"
rm -rf "$dir/out" "$dir/state"

# ---- 2. S3 -> Swift, small objects, same concurrency
if [ "$s3" = 1 ]; then
  saio=$(scripts/servers/saio-start.sh)
  val() { printf '%s\n' "$saio" | sed -n "s/^export $1=//p" | tr -d "'\""; }
  export RCLONE_CONFIG_SAIO_TYPE=swift RCLONE_CONFIG_SAIO_AUTH=$(val ST_AUTH) \
    RCLONE_CONFIG_SAIO_USER=$(val ST_USER) RCLONE_CONFIG_SAIO_KEY=$(val ST_KEY)
  export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
    RCLONE_CONFIG_S3_ENDPOINT=$(val SAIO_S3_ENDPOINT) \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=$(val SAIO_S3_ACCESS_KEY) \
    RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$(val SAIO_S3_SECRET_KEY)
  # shellcheck source=servers.sh
  . benches/servers.sh
  servers=$dir/servers.txt
  : >"$servers"
  # timed_s3 NAME ...: timed, and "NAME server-CPU-s requests" of the SAIO during the run
  # in $servers: the server shares these cores, and its work per object bounds any tool.
  saio_dir=$(val SAIO_DIR)
  timed_s3() {
    local s0 r0
    s0=$(srv_cpu "$saio_dir/run"); r0=$(saio_requests "$saio_dir/log/proxy.log")
    timed "$@"
    echo "$1 $(python3 -c "print(round($(srv_cpu "$saio_dir/run") - $s0, 1))") $(($(saio_requests "$saio_dir/log/proxy.log") - r0))" >>"$servers"
  }
  small=$dir/s3tree-$s3_objects
  gen "$small" "$s3_objects" 11
  s3_bytes=$(du -sb --apparent-size "$small" | cut -f1)
  id=$$
  echo "bench: uploading $s3_objects objects to s3:src$id (not timed)" >&2
  env -u AWS_CA_BUNDLE rclone copy --transfers 16 "$small" "s3:src$id" >/dev/null 2>&1
  rm -rf "$dir/state"
  "$B" --quiet --state "$dir/state" init >/dev/null
  timed_s3 barge_s3_swift "$s3_objects" "$s3_bytes" env -u AWS_CA_BUNDLE \
    AWS_ACCESS_KEY_ID="$(val SAIO_S3_ACCESS_KEY)" AWS_SECRET_ACCESS_KEY="$(val SAIO_S3_SECRET_KEY)" \
    AWS_REGION=us-east-1 ST_AUTH="$(val ST_AUTH)" ST_USER="$(val ST_USER)" ST_KEY="$(val ST_KEY)" \
    "$B" --quiet --state "$dir/state" --source-endpoint "$(val SAIO_S3_ENDPOINT)" \
    --max-concurrency "$conc" migrate --concurrency "$conc" \
    --source "s3://src$id" --dest "swift://bb$id"
  timed_s3 rclone_s3_swift "$s3_objects" "$s3_bytes" env -u AWS_CA_BUNDLE \
    rclone copy --transfers "$conc" --checkers "$conc" "s3:src$id" "saio:rc$id"
  for c in "s3:src$id" "saio:bb$id" "saio:rc$id"; do
    env -u AWS_CA_BUNDLE rclone purge "$c" >/dev/null 2>&1 || echo "bench: could not delete $c" >&2
  done
  rm -rf "$dir/state"
fi

# ---- report
printf '\n%-18s %10s %8s %9s %7s %8s\n' run objects/s MB/s "RSS MiB" CPU-s secs
while read -r name ops mbs rss cpu secs; do
  printf '%-18s %10s %8s %9s %7s %8s\n' "$name" "$ops" "$mbs" "$rss" "$cpu" "$secs"
done <"$results"
echo
echo "directory -> directory, $objects files of 1-16 KiB:"
echo "  barge / rclone objects/s:  $(ratio "$(field barge 2)" "$(field rclone 2)")   (goal >= 1.0)"
echo "  barge / cp -r objects/s:   $(ratio "$(field barge 2)" "$(field cp 2)")"
echo "  peak RSS at $objects / at $tenth objects: $(ratio "$(field barge 4)" "$(field barge_tenth 4)")   (goal <= 1.2)"
echo "  catalog bytes per object after fsck: $per_object   (goal <= 150 + key)"
if [ "$s3" = 1 ]; then
  echo "S3 -> Swift, $s3_objects small objects, concurrency $conc:"
  echo "  barge / rclone objects/s:  $(ratio "$(field barge_s3_swift 2)" "$(field rclone_s3_swift 2)")   (goal >= 2.0)"
  echo "  client CPU-s: barge $(field barge_s3_swift 5), rclone $(field rclone_s3_swift 5)"
  srv() { field "$1" "$2" "$servers"; }
  # per VALUE SCALE DIGITS: VALUE per S3 object, times SCALE.
  per() { python3 -c "import sys; v = float(sys.argv[1]) / int(sys.argv[2]) * float(sys.argv[3]); print(f'{v:.{sys.argv[4]}f}')" "$1" "$s3_objects" "$2" "$3"; }
  echo "  server CPU-s (the SAIO, same cores): barge $(srv barge_s3_swift 2) ($(per "$(srv barge_s3_swift 2)" 1000 1) ms per object), rclone $(srv rclone_s3_swift 2) ($(per "$(srv rclone_s3_swift 2)" 1000 1) ms per object)"
  echo "  requests per object: barge $(per "$(srv barge_s3_swift 3)" 1 2), rclone $(per "$(srv rclone_s3_swift 3)" 1 2)"
  # Both runs keep these cores busy, so objects/s goes as 1 / (server + client CPU per
  # object): with no client CPU at all, barge could reach (rclone's server + client CPU)
  # / barge's server CPU times rclone's rate.
  echo "  barge / rclone with barge at zero client CPU, the server on these cores: $(ratio "$(python3 -c "print($(srv rclone_s3_swift 2) + $(field rclone_s3_swift 5))")" "$(srv barge_s3_swift 2)")"
fi
