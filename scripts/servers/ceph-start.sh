#!/usr/bin/env bash
# One-node Ceph on 127.0.0.1 from Debian bookworm's packages (16.2 Pacific), without systemd:
# one monitor, one bluestore OSD on a sparse file, radosgw serving S3 and Swift. No mgr
# (not needed for I/O), no cephx, pool size 1.
#
#   scripts/servers/ceph-start.sh [STATE_DIR]        (default /tmp/barge-ceph)
#
# Installs missing packages, writes STATE_DIR/ceph.conf, creates the mon and OSD on first use,
# starts mon, OSD and radosgw detached (logs in STATE_DIR/log, "PID STARTTIME" in
# STATE_DIR/run), waits for each, creates the test user (S3 keys + Swift subuser), does a
# PUT/DELETE, writes STATE_DIR/env.sh and prints it on stdout (progress on stderr). If the
# same configuration is already up it only prints env.sh again; otherwise it restarts on the
# existing data. Stop: ceph-stop.sh [--purge] [STATE_DIR].
#
# Environment (see README.md): CEPH_RGW_PORT=7480, CEPH_MON_PORT=3300 and CEPH_OSD_SIZE_GB=10
# (both fixed when STATE_DIR is created), CEPH_S3_ACCESS_KEY, CEPH_S3_SECRET_KEY,
# CEPH_SWIFT_KEY, CEPH_START_TIMEOUT=180, CEPH_RGW_PART_LIMIT=8 (rgw_multipart_part_upload_limit:
# low, so that the tests take barge's path that grows parts to fit --max-parts with
# objects of tens of MiB; radosgw's own default is 10000).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TAG=ceph
STATE=${1:-/tmp/barge-ceph}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
RUN=$STATE/run LOGD=$STATE/log CONF=$STATE/ceph.conf
# shellcheck source=common.sh
. "$HERE/common.sh"

RGW_PORT=${CEPH_RGW_PORT:-7480}
AK=${CEPH_S3_ACCESS_KEY:-BARGETESTACCESSKEY01}
SK=${CEPH_S3_SECRET_KEY:-bargetestsecretkey0000000000000000000001}
SWK=${CEPH_SWIFT_KEY:-bargeswiftkey000000000000000000000000001}
PART_LIMIT=${CEPH_RGW_PART_LIMIT:-8}
RGW_USER="test"
IP=127.0.0.1

apt_install ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl
# the start timeout counts from here, after any package install
DEADLINE=$(( $(date +%s) + ${CEPH_START_TIMEOUT:-180} ))

mkdir -p "$RUN" "$LOGD" "$STATE/mon" "$STATE/osd" "$STATE/rgw" "$STATE/crash"
# what the on-disk state depends on is fixed at creation (the monmap holds the mon port)
if [ ! -s "$STATE/settings" ]; then
    printf 'FSID=%s\nMON_PORT=%s\nOSD_SIZE_GB=%s\n' "$(uuidgen)" "${CEPH_MON_PORT:-3300}" \
        "${CEPH_OSD_SIZE_GB:-10}" >"$STATE/settings"
fi
# shellcheck disable=SC1091
. "$STATE/settings"
if [ "${CEPH_MON_PORT:-$MON_PORT}" != "$MON_PORT" ] || [ "${CEPH_OSD_SIZE_GB:-$OSD_SIZE_GB}" != "$OSD_SIZE_GB" ]; then
    die "$STATE was created with mon port $MON_PORT and a $OSD_SIZE_GB GiB OSD; purge it to change them"
fi

# $name and $id are expanded by Ceph, not by this shell
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_host = v2:$IP:$MON_PORT
public_network = 127.0.0.0/8
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# radosgw would default to "secure" mode towards the mon, which needs cephx: it then
# waits 300 s and exits. crc works without authentication.
ms_mon_client_mode = crc
ms_client_mode = crc
# one OSD: one replica, failure domain "osd", few placement groups
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
# the mon stops itself when its disk has < 5% free by default; a test box may be fuller
mon_data_avail_warn = 2
mon_data_avail_crit = 1
run_dir = $RUN
admin_socket = $RUN/\$name.asok
crash_dir = $STATE/crash
log_file = $LOGD/\$name.log
rados_mon_op_timeout = 60
rados_osd_op_timeout = 60

[mon]
mon_data = $STATE/mon/\$id
log_file = $LOGD/mon.log
# each osdmap change (rgw creates ~7 pools) otherwise waits ~1 s for paxos
paxos_propose_interval = 0.05

[osd]
osd_data = $STATE/osd/\$id
log_file = $LOGD/osd.log
public_addr = $IP
cluster_addr = $IP
osd_objectstore = bluestore
bluestore_block_path = $STATE/osd/\$id/block.file
bluestore_block_create = true
bluestore_block_size = $(( OSD_SIZE_GB << 30 ))
bluestore_block_db_create = false
bluestore_block_wal_create = false
osd_memory_target = 1073741824

[client.rgw.a]
rgw_frontends = beast endpoint=$IP:$RGW_PORT
rgw_data = $STATE/rgw
log_file = $LOGD/rgw.log
rgw_enable_usage_log = false
rgw_multipart_part_upload_limit = $PART_LIMIT
EOF

SIG="$(md5sum <"$CONF" | cut -c1-32) $AK $SK $SWK"
E=http://$IP:$RGW_PORT
healthy() { curl -fs -m 3 -o /dev/null "$E/"; }   # radosgw answers
print_env() { cat "$STATE/env.sh"; log "Ceph ready: radosgw $E (state $STATE, logs $LOGD)"; }
NAMES=(mon osd rgw)
reuse_or_restart "$MON_PORT" "$RGW_PORT"

cephq() { timeout 30 ceph -c "$CONF" --connect-timeout 15 "$@"; }

# ---- monitor
if [ ! -e "$STATE/mon/a/done" ]; then
    rm -rf "$STATE/mon/a" "$STATE/osd/0" "$STATE/osd-uuid"
    monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:$IP:$MON_PORT]" "$STATE/monmap" >/dev/null
    ceph-mon -c "$CONF" -i a --mkfs --monmap "$STATE/monmap" >>"$LOGD/mkfs.log" 2>&1 ||
        { tail -n 20 "$LOGD/mkfs.log" >&2; die "ceph-mon --mkfs failed"; }
    touch "$STATE/mon/a/done"
    log "monitor created"
fi
launch mon ceph-mon -c "$CONF" -i a -f
wait_for "the monitor" cephq mon stat
log "monitor up"

# ---- OSD (the uuid is kept so that a retry after a failed mkfs gets id 0 again)
if [ ! -e "$STATE/osd/0/done" ]; then
    [ -s "$STATE/osd-uuid" ] || uuidgen >"$STATE/osd-uuid"
    id=$(cephq osd new "$(cat "$STATE/osd-uuid")") || die "ceph osd new failed"
    [ "$id" = 0 ] || die "got OSD id '$id', expected 0; purge $STATE"
    rm -rf "$STATE/osd/0" && mkdir -p "$STATE/osd/0"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$(cat "$STATE/osd-uuid")" >>"$LOGD/mkfs.log" 2>&1 ||
        { tail -n 20 "$LOGD/mkfs.log" >&2; die "ceph-osd --mkfs failed"; }
    touch "$STATE/osd/0/done"
    log "OSD created (bluestore, sparse ${OSD_SIZE_GB} GiB file)"
fi
launch osd ceph-osd -c "$CONF" -i 0 -f
osd_up() { cephq osd dump | grep -q '^osd\.0 up'; }
wait_for "osd.0 up" osd_up
log "OSD up"

# ---- radosgw (creates its pools on first start)
launch rgw radosgw -c "$CONF" -n client.rgw.a -f
wait_for "radosgw on $E" healthy
log "radosgw answers"

# ---- test user: S3 keys, and a Swift subuser USER:swift
rgwadm() { timeout 60 radosgw-admin -c "$CONF" "$@"; }
info=$(rgwadm user info --uid="$RGW_USER" 2>/dev/null) || info=
if [ -z "$info" ]; then
    rgwadm user create --uid="$RGW_USER" --display-name="barge test" \
        --access-key="$AK" --secret-key="$SK" >/dev/null || die "radosgw-admin user create failed"
    rgwadm subuser create --uid="$RGW_USER" --subuser="$RGW_USER:swift" --access=full \
        --key-type=swift --secret-key="$SWK" >/dev/null || die "radosgw-admin subuser create failed"
    log "user $RGW_USER created"
else
    # the keys asked for are not those of the existing user: add them
    if ! grep -q "\"access_key\": \"$AK\"" <<<"$info" || ! grep -q "\"secret_key\": \"$SK\"" <<<"$info"; then
        rgwadm key create --uid="$RGW_USER" --key-type=s3 --access-key="$AK" --secret-key="$SK" >/dev/null
    fi
    if ! grep -q "\"secret_key\": \"$SWK\"" <<<"$info"; then
        rgwadm subuser create --uid="$RGW_USER" --subuser="$RGW_USER:swift" --access=full >/dev/null 2>&1 || true
        rgwadm key create --subuser="$RGW_USER:swift" --key-type=swift --secret-key="$SWK" >/dev/null
    fi
fi

# ---- smoke test over S3 (curl 7.88 needs the payload hash header set by hand)
s3=(-sS -m 20 -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK"
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
s3req() {  # s3req METHOD URL [curl args]: expect 2xx
    local code
    code=$(curl "${s3[@]}" -X "$1" "${@:2}") || code=000
    case $code in 2??) ;; *) tail_log rgw; die "smoke: $1 $2 answered $code" ;; esac
}
b=$E/barge-smoke-$$
s3req PUT "$b"
s3req PUT "$b/obj" --data-binary smoke
s3req DELETE "$b/obj"
s3req DELETE "$b"
log "smoke PUT/DELETE ok"

cat >"$STATE/env.sh" <<EOF
# Ceph radosgw (ceph-start.sh $STATE). Source it: . $STATE/env.sh
export CEPH_DIR=$STATE
export CEPH_CONF=$CONF
export CEPH_S3_ENDPOINT=$E
export CEPH_S3_ACCESS_KEY=$AK
export CEPH_S3_SECRET_KEY=$SK
export CEPH_S3_REGION=us-east-1
export CEPH_SWIFT_AUTH_URL=$E/auth/1.0
export CEPH_SWIFT_USER=$RGW_USER:swift
export CEPH_SWIFT_KEY=$SWK
export CEPH_SWIFT_STORAGE_URL=$E/swift/v1
export ST_AUTH=$E/auth/1.0
export ST_USER=$RGW_USER:swift
export ST_KEY=$SWK
export AWS_ENDPOINT_URL=$E
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
EOF
started
