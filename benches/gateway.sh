#!/usr/bin/env bash
# barge gateway against the stores behind it, same client (boto3), same concurrency,
# runs alternating (benches/gateway_get.py):
#   1. read-through: GETs of objects not moved yet, through the gateway vs straight from
#      the source (the SAIO's s3api);
#   2. moved: the same GETs once a pass moved them, through the gateway vs straight from
#      the destination (radosgw): 4 KiB objects (objects/s) and 16 MiB objects (MB/s),
#      with the latency the gateway adds (p50, p99).
# Trees are deleted at the end. Figures are for this machine and its loopback servers.
#
#   benches/gateway.sh                         (release build: cargo build --release)
#   SMALL=2000 BIG=8 ROUNDS=3 THREADS=16 BARGE_BIN=... benches/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BARGE_BIN:-$TARGET/release/barge}
SMALL=${SMALL:-2000}
BIG=${BIG:-8}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-16}
VENV=${S3TESTS_VENV:-/var/tmp/barge-s3tests-venv}
[ -x "$BIN" ] || { echo "no barge binary at $BIN (cargo build --release, or BARGE_BIN=)" >&2; exit 2; }
S3TESTS_VENV=$VENV scripts/pyvenv.sh >/dev/null
eval "$(scripts/servers/saio-start.sh /tmp/barge-saio | grep '^export ')"
eval "$(scripts/servers/ceph-start.sh /tmp/barge-ceph | grep '^export ')"

RUN=$(mktemp -d "${TMPDIR:-/var/tmp}/barge-gwbench.XXXXXX")
GW=""
cleanup() {
  if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; fi
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
SRC=gwbench-src-$$
DST=gwbench-dst-$$
aws_at() {
  AWS_ACCESS_KEY_ID=$2 AWS_SECRET_ACCESS_KEY=$3 AWS_DEFAULT_REGION=us-east-1 \
    aws --endpoint-url "$1" "${@:4}"
}
at_src() { aws_at "$SAIO_S3_ENDPOINT" "$SAIO_S3_ACCESS_KEY" "$SAIO_S3_SECRET_KEY" "$@"; }
at_dst() { aws_at "$CEPH_S3_ENDPOINT" "$CEPH_S3_ACCESS_KEY" "$CEPH_S3_SECRET_KEY" "$@"; }

echo "== gateway bench: $SMALL objects of 4 KiB and $BIG of 16 MiB, $THREADS threads, $ROUNDS rounds each way ($BIN)"
mkdir -p "$RUN/tree/small" "$RUN/tree/big"
for i in $(seq -w 1 "$SMALL"); do head -c 4096 /dev/urandom >"$RUN/tree/small/$i"; done
for i in $(seq -w 1 "$BIG"); do head -c $((16 << 20)) /dev/urandom >"$RUN/tree/big/$i"; done
(cd "$RUN/tree" && find small -type f | sort >"$RUN/small.keys" && find big -type f | sort >"$RUN/big.keys")
at_src s3 mb "s3://$SRC" >/dev/null
at_dst s3 mb "s3://$DST" >/dev/null
at_src s3 cp --recursive --quiet "$RUN/tree" "s3://$SRC"
rm -rf "$RUN/tree"

cat >"$RUN/aws-credentials" <<EOF
[src]
aws_access_key_id = $SAIO_S3_ACCESS_KEY
aws_secret_access_key = $SAIO_S3_SECRET_KEY
[dst]
aws_access_key_id = $CEPH_S3_ACCESS_KEY
aws_secret_access_key = $CEPH_S3_SECRET_KEY
EOF
printf '[profile src]\nregion = us-east-1\n[profile dst]\nregion = us-east-1\n' >"$RUN/aws-config"
export AWS_SHARED_CREDENTIALS_FILE=$RUN/aws-credentials AWS_CONFIG_FILE=$RUN/aws-config
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_PROFILE AWS_ENDPOINT_URL
BARGE=("$BIN" --state "$RUN/state"
  --source-endpoint "$SAIO_S3_ENDPOINT" --source-profile src
  --dest-endpoint "$CEPH_S3_ENDPOINT" --dest-profile dst)
"${BARGE[@]}" init >/dev/null
printf 'BENCHKEY benchsecret\n' >"$RUN/keys"
chmod 600 "$RUN/keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
serve() {
  "${BARGE[@]}" gateway --source "s3://$SRC" --dest "s3://$DST" --listen "127.0.0.1:$PORT" \
    --credentials "$RUN/keys" --passes 0 >"$RUN/gateway.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
    sleep 0.2
  done
  cat "$RUN/gateway.log" >&2
  exit 1
}
stop() { kill "$GW"; wait "$GW" 2>/dev/null || true; GW=""; }
bench() {
  "$VENV/bin/python" benches/gateway_get.py --rounds "$ROUNDS" --threads "$1" \
    --keys-file "$2" --label "$3" --a "gateway,http://127.0.0.1:$PORT,BENCHKEY,benchsecret,$SRC" --b "$4"
}
SRC_SIDE="source,$SAIO_S3_ENDPOINT,$SAIO_S3_ACCESS_KEY,$SAIO_S3_SECRET_KEY,$SRC"
DST_SIDE="destination,$CEPH_S3_ENDPOINT,$CEPH_S3_ACCESS_KEY,$CEPH_S3_SECRET_KEY,$DST"

serve
bench "$THREADS" "$RUN/small.keys" "read-through 4 KiB" "$SRC_SIDE"
bench 4 "$RUN/big.keys" "read-through 16 MiB" "$SRC_SIDE"
stop
echo "== moving them (one sync pass)"
"${BARGE[@]}" sync --passes 1 --source "s3://$SRC" --dest "s3://$DST" >/dev/null
serve
bench "$THREADS" "$RUN/small.keys" "moved 4 KiB" "$DST_SIDE"
bench 4 "$RUN/big.keys" "moved 16 MiB" "$DST_SIDE"
stop
