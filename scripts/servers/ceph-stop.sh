#!/usr/bin/env bash
# Stops the Ceph daemons that ceph-start.sh recorded in STATE_DIR/run, and nothing else:
# a PID is signalled only while its /proc start time equals the recorded one. radosgw and
# the OSD first (the OSD tells the mon it is going down), then the mon; each gets SIGTERM,
# up to 10 s of grace, then SIGKILL.
#   scripts/servers/ceph-stop.sh [--purge] [STATE_DIR]     (default /tmp/barge-ceph)
# --purge also deletes STATE_DIR (config, mon store, OSD block file, logs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PURGE=0
[ "${1:-}" = --purge ] && { PURGE=1; shift; }
TAG=ceph-stop
STATE=${1:-/tmp/barge-ceph}
[ -d "$STATE" ] || { echo "ceph-stop: $STATE does not exist, nothing to do" >&2; exit 0; }
STATE=$(cd "$STATE" && pwd)
RUN=$STATE/run LOGD=$STATE/log
# shellcheck source=common.sh
. "$HERE/common.sh"

if [ -d "$RUN" ]; then
    stop_names rgw
    stop_names osd
    stop_names mon
    rm -f "$RUN/config.sig"
fi
if [ $PURGE = 1 ]; then purge_state; fi
