# shellcheck shell=bash
# Helpers shared by the saio-, ceph- and keystone- start and stop scripts; sourced, never
# run. The caller sets TAG (log prefix), STATE, RUN (pid files) and LOGD (logs) first.
# A pid file RUN/NAME.pid holds "PID STARTTIME"; STARTTIME is field 22 of /proc/PID/stat,
# so a PID the kernel has since handed to another process is never taken for ours.

T0=$(date +%s%3N)
STARTED=()          # names launched by this run (stopped again if the run fails)
STOP_WAIT=${STOP_WAIT:-10}

log() { printf '[%s +%ss] %s\n' "$TAG" "$(secs)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
secs() { local ms=$(( $(date +%s%3N) - T0 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# starttime PID: prints the start time of a live process; fails for a gone or zombie PID
# (PID 1 here is slow to reap orphans, so a stopped daemon can linger as a zombie a while).
starttime() {
    local line f
    line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -r -a f <<<"${line##*) }"          # after "PID (comm) ": f[0]=state ... f[19]=starttime
    case ${f[0]} in Z|X|x) return 1 ;; esac
    echo "${f[19]}"
}

running() {  # running NAME: the recorded process is still the one we started
    local pid st now
    [ -s "$RUN/$1.pid" ] || return 1
    read -r pid st <"$RUN/$1.pid" || true
    [ -n "${pid:-}" ] && [ -n "${st:-}" ] || return 1
    now=$(starttime "$pid") && [ "$now" = "$st" ]
}

launch() {  # launch NAME CMD...: own session, stdin /dev/null, output to LOGD/NAME.log
    local name=$1; shift
    setsid "$@" </dev/null >>"$LOGD/$name.log" 2>&1 &
    echo "$! $(starttime $! || true)" >"$RUN/$name.pid"
    STARTED+=("$name")
}

stop_names() {  # stop_names NAME...: SIGTERM the recorded processes, SIGKILL after STOP_WAIT s
    local n pid st live=() i
    for n; do
        if running "$n"; then
            read -r pid st <"$RUN/$n.pid"
            kill -TERM "$pid" 2>/dev/null && live+=("$n") && log "SIGTERM $n (pid $pid)"
        else
            rm -f "$RUN/$n.pid"
        fi
    done
    for (( i = 0; i < STOP_WAIT * 10; i++ )); do
        local left=()
        for n in "${live[@]}"; do running "$n" && left+=("$n"); done
        live=("${left[@]}")
        [ ${#live[@]} = 0 ] && break
        sleep 0.1
    done
    for n in "${live[@]}"; do
        # re-check right before the signal: only our process, never a reused PID
        running "$n" || continue
        read -r pid st <"$RUN/$n.pid"
        log "$n (pid $pid) ignored SIGTERM for ${STOP_WAIT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    done
    for (( i = 0; i < 20; i++ )); do
        local any=0
        for n in "${live[@]}"; do running "$n" && any=1; done
        [ $any = 0 ] && break
        sleep 0.1
    done
    for n; do running "$n" || rm -f "$RUN/$n.pid"; done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESC CMD...: poll CMD until it succeeds; fail with the log tail if one of the
# processes of this run died, or when DEADLINE (epoch seconds) has passed.
wait_for() {
    local desc=$1 n; shift
    until "$@" >/dev/null 2>&1; do
        for n in "${STARTED[@]}"; do
            running "$n" || { tail_log "$n"; die "$n exited while waiting for $desc"; }
        done
        if [ "$(date +%s)" -ge "$DEADLINE" ]; then
            for n in "${STARTED[@]}"; do tail_log "$n"; done
            die "timed out waiting for $desc"
        fi
        sleep 0.2
    done
}
tail_log() { echo "---- last lines of $LOGD/$1.log" >&2; tail -n 25 "$LOGD/$1.log" >&2 2>/dev/null || true; }

# on a failed start, stop whatever this run launched (the logs stay)
stop_on_failure() {
    local rc=$?
    if [ $rc != 0 ] && [ ${#STARTED[@]} -gt 0 ]; then
        log "start failed: stopping what this run started (logs in $LOGD)"
        local i rev=()
        for (( i = ${#STARTED[@]} - 1; i >= 0; i-- )); do rev+=("${STARTED[$i]}"); done
        stop_names "${rev[@]}"
    fi
    return $rc
}

apt_install() {  # apt_install PKG...: installs those not installed yet
    local p missing=() logf=$STATE/apt.log own_policy=0 rc=0
    for p; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "not root; install first: apt-get install --no-install-recommends ${missing[*]}"
    log "installing ${missing[*]} (apt log: $logf)"
    # without systemd, maintainer scripts could start stray daemons (memcached): forbid it
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends install)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >"$logf" 2>&1; then
        log "apt-get install failed; running apt-get update and trying again"
        apt-get -o DPkg::Lock::Timeout=600 -q update >>"$logf" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >>"$logf" 2>&1 || rc=1
    fi
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || { tail -n 20 "$logf" >&2; die "apt-get install failed (see $logf)"; }
    log "packages installed"
}

# reuse_or_restart PORT...: for the start scripts, once NAMES (the processes), SIG (the
# configuration's signature), healthy() and print_env() are defined. When every one of
# NAMES is ours and running with this signature and healthy() answers, prints env.sh and
# exits. Otherwise stops what an earlier start left (TAG-stop.sh: another configuration,
# a crashed member), arms stop_on_failure and checks that no other process holds a PORT.
reuse_or_restart() {
    local n p up=1
    for n in "${NAMES[@]}"; do running "$n" || up=0; done
    if [ $up = 1 ] && [ "$(cat "$RUN/config.sig" 2>/dev/null)" = "$SIG" ] &&
       [ -s "$STATE/env.sh" ] && healthy; then
        log "already running with this configuration"
        print_env
        exit 0
    fi
    "$HERE/$TAG-stop.sh" "$STATE" >&2
    rm -f "$RUN/config.sig" "$STATE/env.sh"
    trap stop_on_failure EXIT
    for p; do
        port_busy "$p" && die "port 127.0.0.1:$p is used by another process"
    done
    return 0
}

# started: the end of a start script: records the signature and prints env.sh.
started() {
    echo "$SIG" >"$RUN/config.sig"
    trap - EXIT
    print_env
}

# purge_state [DIR...]: for --purge in the stop scripts, after stopping: refuses system
# directories and a state whose processes still run, then deletes the DIRs given (data
# kept outside STATE) and STATE itself.
purge_state() {
    local busy d
    case $STATE in /|/tmp|/root|/home|/usr|/etc|/var) die "refusing to purge $STATE" ;; esac
    busy=$(ls "$RUN"/*.pid 2>/dev/null || true)
    [ -z "$busy" ] || die "not purging, still running: $busy"
    for d; do rm -rf "$d" && log "removed $d"; done
    rm -rf "$STATE" && log "removed $STATE"
}
