#!/usr/bin/env bash
# One-node OpenStack Swift ("SAIO") on 127.0.0.1 from Debian bookworm's swift 2.30 packages,
# without systemd: memcached, account/container/object servers, a container-updater loop
# and the proxy (tempauth, s3api, slo, dlo, bulk, ratelimit, quotas, copy, ...).
#
#   scripts/servers/saio-start.sh [STATE_DIR]        (default /tmp/barge-saio)
#
# Installs missing packages, writes the configs into STATE_DIR/etc, builds the rings, starts
# every server detached (logs in STATE_DIR/log, "PID STARTTIME" in STATE_DIR/run), waits for
# health, does a PUT/DELETE, writes STATE_DIR/env.sh and prints it on stdout (progress goes
# to stderr). If the same configuration is already up it only prints env.sh again; if the
# configuration differs it restarts (data is kept). Stop: saio-stop.sh [--purge] [STATE_DIR].
#
# Environment (see README.md): SAIO_PORT=8080, SAIO_ACCOUNT_PORT=6212,
# SAIO_CONTAINER_PORT=6211, SAIO_OBJECT_PORT=6210, SAIO_MEMCACHED_PORT=11311,
# SAIO_RATELIMIT_OBJ_WRITES=0, SAIO_RATELIMIT_CONT_WRITES=0, SAIO_RATELIMIT_MAX_SLEEP=60,
# SAIO_RATELIMIT_BUFFER=5, SAIO_STORAGE=auto|shm|disk, SAIO_UPDATER=1, SAIO_START_TIMEOUT=90,
# SAIO_SLO_MAX_SEGMENTS=16 (segments per SLO manifest: low, so that the tests take barge's
# path that grows segments to fit the limit with objects of tens of MiB),
# SAIO_PROXY_WORKERS=0 (0: the proxy serves every request in one process, as the tests
# run it; N: N worker processes, as a production proxy would, for benches/listing.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TAG=saio
STATE=${1:-/tmp/barge-saio}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
ETC=$STATE/etc RUN=$STATE/run LOGD=$STATE/log
# shellcheck source=common.sh
. "$HERE/common.sh"

PORT=${SAIO_PORT:-8080}
ACC_PORT=${SAIO_ACCOUNT_PORT:-6212}
CON_PORT=${SAIO_CONTAINER_PORT:-6211}
OBJ_PORT=${SAIO_OBJECT_PORT:-6210}
MC_PORT=${SAIO_MEMCACHED_PORT:-11311}
RL_OBJ=${SAIO_RATELIMIT_OBJ_WRITES:-0}
RL_CON=${SAIO_RATELIMIT_CONT_WRITES:-0}
RL_SLEEP=${SAIO_RATELIMIT_MAX_SLEEP:-60}
RL_BUFFER=${SAIO_RATELIMIT_BUFFER:-5}
UPDATER=${SAIO_UPDATER:-1}
PROXY_WORKERS=${SAIO_PROXY_WORKERS:-0}
SLO_MAX_SEGMENTS=${SAIO_SLO_MAX_SEGMENTS:-16}
for v in "$PORT" "$ACC_PORT" "$CON_PORT" "$OBJ_PORT" "$MC_PORT" "$RL_BUFFER"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a whole number: '$v' (check the SAIO_* variables)"
done
for v in "$RL_OBJ" "$RL_CON" "$RL_SLEEP"; do
    [[ $v =~ ^[0-9]*\.?[0-9]+$ ]] || die "not a number: '$v' (check the SAIO_RATELIMIT_* variables)"
done
IP=127.0.0.1
PY=/usr/bin/python3     # Debian's, which has the swift modules (a pyenv python3 may shadow it)

apt_install swift swift-proxy swift-account swift-container swift-object \
    python3-swift python3-swiftclient memcached curl
# the start timeout counts from here, after any package install
DEADLINE=$(( $(date +%s) + ${SAIO_START_TIMEOUT:-90} ))

# ---- where the single device "d1" lives. The object server keeps metadata in user xattrs;
# tmpfs has them (kernel >= 6.6), without an ext4-like ~4 KB limit, and is much faster
# (no fsync to disk), but the data is in RAM. auto = shm when it works, else STATE_DIR/node.
SHM=/dev/shm/barge-saio-$(printf %s "$STATE" | md5sum | cut -c1-12)
xattr_ok() {
    mkdir -p "$1" && "$PY" - "$1" 2>/dev/null <<'PY'
import os, sys
p = os.path.join(sys.argv[1], '.xattr-probe')
open(p, 'w').close()
try:
    os.setxattr(p, 'user.swift.probe', b'x' * 8000)
finally:
    os.unlink(p)
PY
}
case ${SAIO_STORAGE:-auto} in
    shm) DEVICES=$SHM ;;
    disk) DEVICES=$STATE/node ;;
    auto) if xattr_ok "$SHM/d1"; then DEVICES=$SHM; else rm -rf "$SHM"; DEVICES=$STATE/node; fi ;;
    *) die "SAIO_STORAGE must be auto, shm or disk" ;;
esac
mkdir -p "$ETC" "$RUN" "$LOGD" "$STATE/cache" "$DEVICES/d1"
xattr_ok "$DEVICES/d1" || log "warning: $DEVICES/d1 refuses 8 KB xattrs; objects with large metadata will fail"
echo "$DEVICES" >"$STATE/devices.path"      # saio-stop.sh --purge removes it

# ---- swift.conf is the one file Swift 2.30 reads from a fixed path, /etc/swift/swift.conf
# (hash prefix/suffix, policies). Debian ships a usable one; write one only if it is missing.
if ! grep -qE '^[[:space:]]*swift_hash_path_(prefix|suffix)[[:space:]]*=' /etc/swift/swift.conf 2>/dev/null; then
    mkdir -p /etc/swift
    printf '[swift-hash]\nswift_hash_path_prefix = barge\nswift_hash_path_suffix = barge\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' \
        >/etc/swift/swift.conf
    log "wrote /etc/swift/swift.conf"
fi

# ---- configs
backend_conf() {  # backend_conf KIND PORT [extra sections]
    cat <<EOF
[DEFAULT]
bind_ip = $IP
bind_port = $2
workers = 0
user = $(id -un)
swift_dir = $ETC
devices = $DEVICES
mount_check = false
recon_cache_path = $STATE/cache
log_name = $1-server
log_level = INFO

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$1

[filter:healthcheck]
use = egg:swift#healthcheck

[$1-replicator]
[$1-auditor]
${3:-}
EOF
}
backend_conf account "$ACC_PORT" "[account-reaper]" >"$ETC/account-server.conf"
backend_conf container "$CON_PORT" "[container-updater]
interval = 2
concurrency = 1
log_level = WARNING" >"$ETC/container-server.conf"
backend_conf object "$OBJ_PORT" "[object-updater]" >"$ETC/object-server.conf"

rl_limits=""
[ "$RL_OBJ" != 0 ] && rl_limits+="container_ratelimit_0 = $RL_OBJ"$'\n'
[ "$RL_CON" != 0 ] && rl_limits+="account_ratelimit = $RL_CON"$'\n'
# Filters are listed once each below; the pipeline puts ratelimit after s3api and tempauth
# so that S3 requests are throttled too. account_autocreate: the first PUT creates AUTH_x.
cat >"$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = $IP
bind_port = $PORT
workers = $PROXY_WORKERS
user = $(id -un)
swift_dir = $ETC
log_name = proxy-server
log_level = INFO
expose_info = true

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl s3api tempauth ratelimit copy container-quotas account-quotas slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
node_timeout = 10
conn_timeout = 2

[filter:tempauth]
use = egg:swift#tempauth
reseller_prefix = AUTH
token_life = 86400
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
user_test_tester3 = testing3

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false
dns_compliant_bucket_names = true
min_segment_size = 5242880
max_upload_part_num = 10000

[filter:ratelimit]
use = egg:swift#ratelimit
max_sleep_time_seconds = $RL_SLEEP
rate_buffer_seconds = $RL_BUFFER
log_sleep_time_seconds = 0
$rl_limits
[filter:cache]
use = egg:swift#memcache
memcache_servers = $IP:$MC_PORT

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
allow_object_versioning = true

[filter:slo]
use = egg:swift#slo
max_manifest_segments = $SLO_MAX_SEGMENTS
EOF
# the remaining filters need no options: "section:egg" where the two names differ
for f in catch_errors gatekeeper healthcheck proxy-logging:proxy_logging listing_formats bulk \
         tempurl copy container-quotas:container_quotas account-quotas:account_quotas dlo symlink; do
    printf '\n[filter:%s]\nuse = egg:swift#%s\n' "${f%%:*}" "${f##*:}"
done >>"$ETC/proxy-server.conf"

NAMES=(memcached account container object proxy)
[ "$UPDATER" = 1 ] && NAMES+=(updater)
SIG="$(cat "$ETC"/*.conf | md5sum | cut -c1-32) ports=$ACC_PORT/$CON_PORT/$OBJ_PORT/$MC_PORT updater=$UPDATER"

print_env() { cat "$STATE/env.sh"; log "SAIO ready: proxy http://$IP:$PORT (state $STATE, logs $LOGD)"; }
healthy() { curl -fsS -m 3 "http://$IP:$PORT/healthcheck" 2>/dev/null | grep -qx OK; }

# ---- already up with this configuration? then only print; else (re)start
reuse_or_restart "$PORT" "$ACC_PORT" "$CON_PORT" "$OBJ_PORT" "$MC_PORT"

# ---- rings: 1 replica, 2^10 partitions, device d1; rebuilt only when the ports change
RING_SIG="$IP $ACC_PORT $CON_PORT $OBJ_PORT"
if [ "$(cat "$ETC/ring.sig" 2>/dev/null)" != "$RING_SIG" ] || [ ! -s "$ETC/object.ring.gz" ]; then
    rm -rf "$ETC"/*.builder "$ETC"/*.ring.gz "$ETC/backups"
    # what `swift-ring-builder NAME.builder create 10 1 1; add ...; rebalance` does,
    # three times, in one interpreter start instead of nine
    "$PY" - "$ETC" "$IP" "$ACC_PORT" "$CON_PORT" "$OBJ_PORT" <<'PY' || die "building the rings failed"
import sys
from swift.common.ring import RingBuilder
etc, ip, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:6]]
for kind, port in zip(("account", "container", "object"), ports):
    rb = RingBuilder(10, 1, 1)
    rb.add_dev({"id": 0, "region": 1, "zone": 1, "ip": ip, "port": port, "device": "d1",
                "weight": 100.0, "replication_ip": ip, "replication_port": port, "meta": ""})
    rb.rebalance()
    rb.save(f"{etc}/{kind}.builder")
    rb.get_ring().save(f"{etc}/{kind}.ring.gz")
PY
    echo "$RING_SIG" >"$ETC/ring.sig"
    log "rings built"
fi

# ---- start. memcached is private (tempauth tokens, ratelimit counters, info cache), no UDP.
mc_user=(); [ "$(id -u)" = 0 ] && mc_user=(-u root)
launch memcached /usr/bin/memcached -l "$IP" -p "$MC_PORT" -U 0 -m 64 -t 2 "${mc_user[@]}"
# --verbose sends the log to stdout (there is no /dev/log here), i.e. to LOGD/NAME.log
for k in account container object; do
    launch "$k" "/usr/bin/swift-$k-server" "$ETC/$k-server.conf" --verbose
done
launch proxy /usr/bin/swift-proxy-server "$ETC/proxy-server.conf" --verbose
if [ "$UPDATER" = 1 ]; then
    # Account stats (object count, bytes) come from the container updater. The stock daemon
    # forks a child per partition per sweep, each redoing eventlet's monkey patching
    # (~0.7 CPU-s each): a core stays busy. One process calling run_once() costs ~nothing.
    cat >"$STATE/updater.py" <<'PY'
import sys, time
from swift.common.utils import readconf, get_logger, eventlet_monkey_patch
from swift.container.updater import ContainerUpdater
conf = readconf(sys.argv[1], "container-updater")
eventlet_monkey_patch()
updater = ContainerUpdater(conf, logger=get_logger(conf, log_route="container-updater", log_to_console=True))
while True:
    updater.run_once()
    time.sleep(float(conf.get("interval", 2)))
PY
    launch updater "$PY" "$STATE/updater.py" "$ETC/container-server.conf"
fi

mc_ok() { (exec 3<>"/dev/tcp/$IP/$MC_PORT" && printf 'version\r\n' >&3 && read -r -t 2 l <&3 && [[ $l == VERSION* ]]); }
wait_for memcached mc_ok
for p in "$ACC_PORT" "$CON_PORT" "$OBJ_PORT"; do
    wait_for "backend :$p" curl -fs -m 2 -o /dev/null "http://$IP:$p/healthcheck"
done
wait_for "proxy healthcheck" healthy
log "healthy"

# ---- smoke test: tempauth login, container + object PUT, then DELETE both
hdr=$(curl -fsS -m 10 -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
      "http://$IP:$PORT/auth/v1.0" | tr -d '\r') || die "tempauth login failed (log: $LOGD/proxy.log)"
token=$(awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' <<<"$hdr")
surl=$(awk -F': ' 'tolower($1) == "x-storage-url" {print $2}' <<<"$hdr")
c=$surl/barge-smoke-$$
req() {  # req METHOD URL [curl args]: expect 2xx; a 498 from a throttling config is retried
    local code i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $token" -X "$1" "${@:2}") || code=000
        case $code in 2??) return 0 ;; 498) sleep 1 ;; *) break ;; esac
    done
    die "smoke: $1 $2 answered $code (log: $LOGD/proxy.log)"
}
req PUT "$c"
req PUT "$c/obj" --data-binary smoke
req DELETE "$c/obj"
req DELETE "$c"
log "smoke PUT/DELETE ok"

E=http://$IP:$PORT
cat >"$STATE/env.sh" <<EOF
# Swift SAIO (saio-start.sh $STATE). Source it: . $STATE/env.sh
export SAIO_DIR=$STATE
export SAIO_SWIFT_AUTH_URL=$E/auth/v1.0
export SAIO_SWIFT_USER=test:tester
export SAIO_SWIFT_KEY=testing
export SAIO_SWIFT_STORAGE_URL=$E/v1/AUTH_test
export SAIO_S3_ENDPOINT=$E
export SAIO_S3_ACCESS_KEY=test:tester
export SAIO_S3_SECRET_KEY=testing
export SAIO_S3_REGION=us-east-1
export ST_AUTH=$E/auth/v1.0
export ST_USER=test:tester
export ST_KEY=testing
export AWS_ENDPOINT_URL=$E
export AWS_ACCESS_KEY_ID=test:tester
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
EOF
started
