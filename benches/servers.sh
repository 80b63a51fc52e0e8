# Sourced by the benches that run against the project's test servers (scripts/servers/).
# The servers share the machine's cores with the tool measured, so where their CPU goes
# says as much as the tool's own rate.

# srv_cpu [RUN_DIR...]: CPU seconds (user + system) so far of every server process the
# start scripts recorded under RUN_DIR (default: the SAIO's and Ceph's) and of their
# children (a proxy with workers forks them).
srv_cpu() {
  local f pid c line t=0 tck dirs=("$@"); tck=$(getconf CLK_TCK)
  [ ${#dirs[@]} -gt 0 ] || dirs=(/tmp/barge-saio/run /tmp/barge-ceph/run)
  for d in "${dirs[@]}"; do
    for f in "$d"/*.pid; do
      read -r pid _ <"$f" 2>/dev/null || continue
      for c in $pid $(pgrep -P "$pid" || true); do
        line=$(cat "/proc/$c/stat" 2>/dev/null) || continue
        read -r -a a <<<"${line##*) }"
        t=$((t + a[11] + a[12]))
      done
    done
  done
  python3 -c "print($t / $tck)"
}

# saio_requests [LOG]: requests clients have made of the SAIO's proxy so far, from its
# access log (the proxy's own subrequests, logged with client "-", left out).
saio_requests() {
  awk '$1 == "proxy-server:" && $2 != "-" && $5 ~ /^[A-Z]+$/' \
    "${1:-/tmp/barge-saio/log/proxy.log}" 2>/dev/null | wc -l
}
