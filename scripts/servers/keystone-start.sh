#!/usr/bin/env bash
# OpenStack Keystone (Debian bookworm's keystone 22, SQLite, Fernet tokens) on 127.0.0.1,
# and a second Swift proxy in front of a running SAIO that takes Keystone tokens
# (authtoken + keystoneauth instead of tempauth), so that Keystone v3 password login is
# tested against the real thing. Same storage and rings as the SAIO; accounts are
# AUTH_<project id>.
#
#   scripts/servers/keystone-start.sh [STATE_DIR]      (default /tmp/barge-keystone)
#
# Needs the SAIO up (saio-start.sh; its state dir in KEYSTONE_SAIO_DIR, default
# /tmp/barge-saio). Installs missing packages, bootstraps Keystone once (admin user in
# project admin, an object-store endpoint pointing at the Keystone proxy), starts Keystone
# and the proxy detached, checks a token login and a PUT through the proxy, writes
# STATE_DIR/env.sh (OS_* variables) and prints it on stdout. If both are already up with
# this configuration it only prints env.sh. Stop: keystone-stop.sh [--purge] [STATE_DIR].
#
# Environment: KEYSTONE_PORT=5000, KEYSTONE_SWIFT_PORT=8085, KEYSTONE_PASSWORD=barge-admin,
# KEYSTONE_SAIO_DIR=/tmp/barge-saio, KEYSTONE_START_TIMEOUT=90.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TAG=keystone
STATE=${1:-/tmp/barge-keystone}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
ETC=$STATE/etc RUN=$STATE/run LOGD=$STATE/log
# shellcheck source=common.sh
. "$HERE/common.sh"
mkdir -p "$ETC" "$RUN" "$LOGD"

IP=127.0.0.1
KS_PORT=${KEYSTONE_PORT:-5000}
PX_PORT=${KEYSTONE_SWIFT_PORT:-8085}
PASSWORD=${KEYSTONE_PASSWORD:-barge-admin}
SAIO=${KEYSTONE_SAIO_DIR:-/tmp/barge-saio}
for v in "$KS_PORT" "$PX_PORT"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a port number: '$v' (check the KEYSTONE_* variables)"
done
[ -s "$SAIO/etc/proxy-server.conf" ] || die "no SAIO in $SAIO: run saio-start.sh first"

PY=/usr/bin/python3     # Debian's, which has the keystone modules
apt_install keystone python3-keystonemiddleware python3-keystoneclient curl
DEADLINE=$(( $(date +%s) + ${KEYSTONE_START_TIMEOUT:-90} ))
KS=http://$IP:$KS_PORT

cat >"$ETC/keystone.conf" <<EOF
[DEFAULT]
log_dir = $LOGD
[database]
connection = sqlite:///$STATE/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $STATE/fernet-keys
[fernet_receipts]
key_repository = $STATE/fernet-receipts
[credential]
key_repository = $STATE/credential-keys
EOF

# The SAIO's proxy with Keystone in place of tempauth (and without s3api, which would need
# s3token), on its own port, sharing the SAIO's rings, devices and memcached.
sed -e "s/^bind_port = .*/bind_port = $PX_PORT/" \
    -e "s/^log_name = .*/log_name = proxy-keystone/" \
    -e "/^pipeline = /s/ s3api tempauth / authtoken keystoneauth /" \
    "$SAIO/etc/proxy-server.conf" >"$ETC/proxy-server.conf"
grep -q ' authtoken keystoneauth ' "$ETC/proxy-server.conf" || die "unexpected SAIO pipeline in $SAIO/etc/proxy-server.conf"
cat >>"$ETC/proxy-server.conf" <<EOF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KS
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = admin
username = admin
password = $PASSWORD
delay_auth_decision = True

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
EOF

NAMES=(keystone proxy)
SIG="$(cat "$ETC"/*.conf | md5sum | cut -c1-32) ports=$KS_PORT/$PX_PORT"
print_env() { cat "$STATE/env.sh"; log "Keystone ready: $KS/v3, Swift proxy http://$IP:$PX_PORT (state $STATE)"; }
healthy() {
    curl -fsS -m 3 "$KS/v3" >/dev/null 2>&1 &&
        curl -fsS -m 3 "http://$IP:$PX_PORT/healthcheck" 2>/dev/null | grep -qx OK
}
reuse_or_restart "$KS_PORT" "$PX_PORT"

km() { keystone-manage --config-file "$ETC/keystone.conf" "$@" >>"$LOGD/keystone-manage.log" 2>&1; }
if [ ! -s "$STATE/bootstrapped" ]; then
    rm -rf "$STATE/keystone.db" "$STATE"/fernet-* "$STATE/credential-keys"
    km db_sync || die "keystone-manage db_sync failed (log: $LOGD/keystone-manage.log)"
    km fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" || die "fernet_setup failed"
    km credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" || die "credential_setup failed"
    km bootstrap --bootstrap-password "$PASSWORD" --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "$KS/v3/" --bootstrap-public-url "$KS/v3/" \
        --bootstrap-internal-url "$KS/v3/" || die "keystone-manage bootstrap failed"
    log "bootstrapped"
fi
# The object-store service and its endpoints, written before Keystone serves requests:
# through the REST API a write could meet a read lock the idle test server holds on its
# SQLite database and fail with "database is locked" (scripts/servers/README.md).
"$PY" "$HERE/keystone-catalog.py" "$ETC/keystone.conf" \
    "http://$IP:$PX_PORT/v1/AUTH_\$(project_id)s" RegionOne >>"$LOGD/keystone-manage.log" 2>&1 ||
    die "registering the object-store endpoints failed (log: $LOGD/keystone-manage.log)"
log "object-store endpoints http://$IP:$PX_PORT/v1/AUTH_<project> registered"
# keystone's own test server (wsgiref): enough for one client on loopback
launch keystone /usr/bin/keystone-wsgi-public --host "$IP" --port "$KS_PORT" -- --config-file "$ETC/keystone.conf"
wait_for "keystone $KS/v3" curl -fsS -m 3 "$KS/v3"

token_body() {
    printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' "$PASSWORD"
}
# login: a fresh admin token on stdout (tokens may live only seconds), the token
# document in STATE/token.json
login() {
    curl -fsS -m 20 -D - -o "$STATE/token.json" -H 'Content-Type: application/json' \
        -d "$(token_body)" "$KS/v3/auth/tokens" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "x-subject-token" {print $2}'
}
tok=$(login) || die "admin login failed"
[ -n "$tok" ] || die "admin login returned no token"
project=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"]["project"]["id"])' "$STATE/token.json")
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]))["token"]["catalog"]; sys.exit(0 if any(s["type"]=="object-store" and s["endpoints"] for s in c) else 1)' \
    "$STATE/token.json" || die "the admin token's catalog has no object-store endpoint ($STATE/token.json)"
echo "$project" >"$STATE/bootstrapped"

launch proxy /usr/bin/swift-proxy-server "$ETC/proxy-server.conf" --verbose
wait_for "Keystone proxy healthcheck" curl -fsS -m 3 "http://$IP:$PX_PORT/healthcheck"

# ---- smoke test: a fresh token, container + object PUT through the proxy, then DELETE
tok=$(login) || die "admin login failed"
c=http://$IP:$PX_PORT/v1/AUTH_$project/barge-smoke-$$
for step in "PUT $c" "PUT $c/obj" "DELETE $c/obj" "DELETE $c"; do
    code=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $tok" -X ${step%% *} \
           --data-binary smoke "${step#* }") || code=000
    case $code in 2??) ;; *) tail_log proxy; die "smoke: $step answered $code" ;; esac
done
log "smoke PUT/DELETE with a Keystone token ok"

cat >"$STATE/env.sh" <<EOF
# Keystone + Swift proxy (keystone-start.sh $STATE). Source it: . $STATE/env.sh
export KEYSTONE_DIR=$STATE
export OS_AUTH_URL=$KS/v3
export OS_USERNAME=admin
export OS_PASSWORD=$PASSWORD
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export KEYSTONE_SWIFT_STORAGE_URL=http://$IP:$PX_PORT/v1/AUTH_$project
EOF
started
