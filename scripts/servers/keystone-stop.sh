#!/usr/bin/env bash
# Stops the Keystone and the Keystone Swift proxy that keystone-start.sh recorded in
# STATE_DIR/run, and nothing else (same PID + start-time check as saio-stop.sh).
#   scripts/servers/keystone-stop.sh [--purge] [STATE_DIR]     (default /tmp/barge-keystone)
# --purge also deletes STATE_DIR (database, keys, logs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PURGE=0
[ "${1:-}" = --purge ] && { PURGE=1; shift; }
TAG=keystone-stop
STATE=${1:-/tmp/barge-keystone}
[ -d "$STATE" ] || { echo "keystone-stop: $STATE does not exist, nothing to do" >&2; exit 0; }
STATE=$(cd "$STATE" && pwd)
RUN=$STATE/run LOGD=$STATE/log
# shellcheck source=common.sh
. "$HERE/common.sh"

if [ -d "$RUN" ]; then
    stop_names proxy keystone
    rm -f "$RUN/config.sig"
fi
if [ $PURGE = 1 ]; then purge_state; fi
