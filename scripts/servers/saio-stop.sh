#!/usr/bin/env bash
# Stops the SAIO processes that saio-start.sh recorded in STATE_DIR/run, and nothing else:
# a PID is signalled only while its /proc start time equals the recorded one. SIGTERM,
# up to 10 s of grace, then SIGKILL.
#   scripts/servers/saio-stop.sh [--purge] [STATE_DIR]     (default /tmp/barge-saio)
# --purge also deletes STATE_DIR and the /dev/shm device directory the start used.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PURGE=0
[ "${1:-}" = --purge ] && { PURGE=1; shift; }
TAG=saio-stop
STATE=${1:-/tmp/barge-saio}
[ -d "$STATE" ] || { echo "saio-stop: $STATE does not exist, nothing to do" >&2; exit 0; }
STATE=$(cd "$STATE" && pwd)
RUN=$STATE/run LOGD=$STATE/log
# shellcheck source=common.sh
. "$HERE/common.sh"

if [ -d "$RUN" ]; then
    stop_names proxy updater object container account
    stop_names memcached
    rm -f "$RUN/config.sig"
fi
if [ $PURGE = 1 ]; then
    # the objects live in a /dev/shm directory of their own (see saio-start.sh)
    dev=$(cat "$STATE/devices.path" 2>/dev/null || true)
    case $dev in /dev/shm/barge-saio-*) purge_state "$dev" ;; *) purge_state ;; esac
fi
