#!/usr/bin/env bash
# Boots the node image (image/build.sh) in qemu the way a rack boots it: UEFI (OVMF) ->
# systemd-boot -> Debian, with two emulated, file-backed NVMe data drives, and watches the
# serial console. It passes when, before the timeout:
#   * barge-prepare listed both NVMe drives by serial with their health read through the
#     NVMe admin ioctl (SMART log: temperature, spare, percentage used),
#   * both were prepared as raw staging drives (not erased: the image's default
#     settings erase nothing), recorded by their /dev/disk/by-id name,
#   * a third NVMe drive reporting a critical warning (qemu's smart_critical_warning)
#     was listed unhealthy and refused with the reason,
#   * a controller with two namespaces, the first holding an ext4 filesystem the node
#     mounts at boot (/mnt/ns1, through its fstab), had that namespace listed mounted and
#     refused as in use, and only the blank second one prepared,
#   * a drive with a GPT partition table (not mounted) was refused naming it,
#   * a drive that is an LVM physical volume, whose logical volume the node activates
#     and mounts at boot (/mnt/keep), was refused as held by device-mapper,
#   * after the guest stopped, both ext4 filesystems (with their marker files), the LVM
#     label and volume group, and the partition table are on the image files unchanged.
# The two mounts are an operator's own: this script adds them to /etc/fstab of a private
# copy of the image (with debugfs, no mount) and writes the volume group with the host's
# lvm2 through a loop device.
#   * the daemon reported ready,
#   * the daemon's self-test migration ended with "self-test: verify DONE",
#   * no systemd unit failed.
# The console log is kept as an artifact ($ARTIFACTS/boot-console.log). Only the qemu this
# script started is killed. KVM is used only when it is hardware-backed (kvm_intel or
# kvm_amd loaded); otherwise TCG. Under TCG with two vCPUs, qemu now and then livelocks
# the guest (the kernel reports a soft lockup of both CPUs and nothing moves again; seen
# once in about 25 boots here, a known TCG hazard): a guest whose CPU has been stuck for
# LOCKUP_SECS is booted again from scratch, at most once, and says so (the stuck
# attempt's console is kept as boot-console.attempt1.log).
#
#   image/test-boot.sh                 (after image/build.sh)
#   OUT=dir TIMEOUT=600 ARTIFACTS=dir ACCEL=auto|kvm|tcg image/test-boot.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/image}
ARTIFACTS=${ARTIFACTS:-$TARGET/artifacts}
TIMEOUT=${TIMEOUT:-600}
LOCKUP_SECS=${LOCKUP_SECS:-90}
ACCEL=${ACCEL:-auto}
SERIALS=(BARGENVME0001 BARGENVME0002)
# A third drive whose controller reports a critical warning (reliability degraded):
# it must be listed unhealthy and refused.
SICK=BARGENVME0666
# One controller, two namespaces: nsid 1 holds an ext4 filesystem, nsid 2 is blank.
MULTI=BARGENVME0003
# A drive with a GPT partition table and no filesystem mounted from it.
PARTED=BARGENVME0004
# An LVM physical volume of volume group $VG, whose logical volume "keep" is mounted.
LVMPV=BARGENVME0005
VG=bargekeep
LOG=$ARTIFACTS/boot-console.log

command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: scripts/deps.sh test" >&2; exit 2; }
[ -f "$OUT/disk.raw" ] || { echo "no $OUT/disk.raw: run image/build.sh first" >&2; exit 2; }
CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$CODE" ] || { echo "no OVMF firmware ($CODE): scripts/deps.sh test" >&2; exit 2; }
for t in debugfs losetup pvcreate; do
  command -v "$t" >/dev/null || { echo "$t missing: scripts/deps.sh test" >&2; exit 2; }
done

RUN=$(mktemp -d "${TMPDIR:-/var/tmp}/barge-boot.XXXXXX")
QPID=""
stop_qemu() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
}
cleanup() {
  stop_qemu
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

hw_kvm() {
  [ -r /dev/kvm ] && [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }
}
if [ "$ACCEL" = auto ]; then
  if hw_kvm; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case "$ACCEL" in
  kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
  tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
  *) echo "ACCEL must be auto, kvm or tcg" >&2; exit 2 ;;
esac

Q=(qemu-system-x86_64 "${ACCEL_ARGS[@]}" -machine q35 -m 2048 -smp 2
  -nographic -no-reboot -nodefaults -serial stdio -monitor none
  -device VGA -qmp "unix:$RUN/qmp.sock,server=on,wait=off"
  -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0
  -drive "if=pflash,format=raw,unit=0,readonly=on,file=$CODE"
  -drive "if=pflash,format=raw,unit=1,file=$RUN/vars.fd"
  -drive "file=$RUN/disk.raw,if=none,id=os,format=raw,cache=unsafe"
  -device "virtio-blk-pci,drive=os,bootindex=0")
for i in "${!SERIALS[@]}"; do
  Q+=(-drive "file=$RUN/nvme$i.img,if=none,id=nvm$i,format=raw,cache=unsafe"
    -device "nvme,serial=${SERIALS[$i]},drive=nvm$i")
done
Q+=(-drive "file=$RUN/sick.img,if=none,id=sick,format=raw,cache=unsafe"
  -device "nvme,serial=$SICK,drive=sick,smart_critical_warning=4")
Q+=(-device "nvme,id=multi,serial=$MULTI"
  -drive "file=$RUN/ns1.img,if=none,id=ns1,format=raw,cache=unsafe"
  -device "nvme-ns,drive=ns1,bus=multi,nsid=1"
  -drive "file=$RUN/ns2.img,if=none,id=ns2,format=raw,cache=unsafe"
  -device "nvme-ns,drive=ns2,bus=multi,nsid=2")
Q+=(-drive "file=$RUN/parted.img,if=none,id=parted,format=raw,cache=unsafe"
  -device "nvme,serial=$PARTED,drive=parted")
Q+=(-drive "file=$RUN/lvm.img,if=none,id=lvm,format=raw,cache=unsafe"
  -device "nvme,serial=$LVMPV,drive=lvm")

# The lvm2 commands below see only the loop device they are given, and leave the host's
# own LVM configuration (devices file, caches) alone; --driverloaded n: the host needs no
# device-mapper to write a volume group.
LVMCONF='devices { use_devicesfile = 0 }'
lvm_q() { "$@" --config "$LVMCONF" --driverloaded n -q >/dev/null 2>&1; }

# lvm_drive IMG: an LVM physical volume of volume group $VG holding one logical volume
# "keep" (256 MiB, its first extents) with an ext4 filesystem and a marker file. Sets
# LV_OFFSET, where the logical volume starts in IMG.
lvm_drive() {
  local img=$1 loop ok=1
  LV_OFFSET=""
  loop=$(losetup -f --show "$img") || { echo "[boot-test] no loop device for the LVM drive" >&2; return 1; }
  lvm_q pvcreate "$loop" && lvm_q vgcreate "$VG" "$loop" &&
    lvm_q lvcreate -an -Zn -L 256M -n keep "$VG" || ok=""
  [ -z "$ok" ] || LV_OFFSET=$(pvs --config "$LVMCONF" --driverloaded n --noheadings --units b \
    --nosuffix -o pe_start "$loop" 2>/dev/null | tr -d ' ')
  losetup -d "$loop"
  [ -n "$ok" ] && [ -n "$LV_OFFSET" ] || { echo "[boot-test] lvm2 could not write $VG on $img" >&2; return 1; }
  mkfs.ext4 -q -F -E "offset=$LV_OFFSET" -d "$RUN/marker" "$img" 256M
}

# node_image: a private copy of the image whose fstab mounts namespace 1 (by its label)
# and the logical volume at boot, as an operator's fstab would.
node_image() {
  cp --sparse=always "$OUT/disk.raw" "$RUN/disk.raw"
  local start root
  start=$(sfdisk -J "$RUN/disk.raw" | python3 -c 'import json, sys
print(next(p["start"] for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "bargeroot"))')
  root="$RUN/disk.raw?offset=$((start * 512))"
  debugfs -R "cat /etc/fstab" "$root" 2>/dev/null >"$RUN/fstab"
  grep -q " / ext4 " "$RUN/fstab" || { echo "[boot-test] no fstab read from the image's root" >&2; return 1; }
  printf '%s\n' "LABEL=bargens1 /mnt/ns1 ext4 defaults,x-systemd.device-timeout=60s 0 2" \
    "/dev/$VG/keep /mnt/keep ext4 defaults,x-systemd.device-timeout=60s 0 2" >>"$RUN/fstab"
  printf '%s\n' "rm /etc/fstab" "write $RUN/fstab /etc/fstab" >"$RUN/fstab.cmds"
  debugfs -w -f "$RUN/fstab.cmds" "$root" >/dev/null 2>&1
  debugfs -R "cat /etc/fstab" "$root" 2>/dev/null | grep "/mnt/keep" >/dev/null ||
    { echo "[boot-test] could not write the image copy's fstab" >&2; return 1; }
}

# boot: fresh firmware variables and blank (sparse) drives, then qemu in the background.
boot() {
  cp "$VARS" "$RUN/vars.fd"
  for i in "${!SERIALS[@]}"; do rm -f "$RUN/nvme$i.img"; truncate -s 4G "$RUN/nvme$i.img"; done
  rm -f "$RUN/sick.img"; truncate -s 4G "$RUN/sick.img"
  rm -rf "$RUN/ns1.img" "$RUN/ns2.img" "$RUN/parted.img" "$RUN/lvm.img" "$RUN/marker"
  mkdir "$RUN/marker"; echo "kept by barge" >"$RUN/marker/marker.txt"
  truncate -s 4G "$RUN/ns1.img" "$RUN/ns2.img" "$RUN/parted.img" "$RUN/lvm.img"
  mkfs.ext4 -q -F -L bargens1 -d "$RUN/marker" "$RUN/ns1.img"
  lvm_drive "$RUN/lvm.img"
  node_image
  printf 'label: gpt\n,512MiB\n,\n' | sfdisk -q "$RUN/parted.img"
  sfdisk -d "$RUN/parted.img" >"$RUN/parted.before"
  : >"$LOG"   # exists before the first look at it (qemu starts in the background)
  START=$(date +%s)
  "${Q[@]}" </dev/null >"$LOG" 2>&1 &
  QPID=$!
}

mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS/boot-console.attempt1.log"   # a stuck attempt of an earlier run
echo "[boot-test] accel=$ACCEL timeout=${TIMEOUT}s drives=${SERIALS[*]} (and $SICK, unhealthy; $MULTI, two namespaces, one with ext4 mounted; $PARTED, partitioned; $LVMPV, LVM with a mounted LV) console=$LOG"

# Without -q: grep -q stops at the first match, tr then dies of SIGPIPE and, under
# pipefail, a line that is there reads as missing (a CI failure that came and went).
seen() { tr -d '\r' <"$LOG" | grep -a -E "$1" >/dev/null; }
checks=(
  "daemon ready|barge daemon ready"
  "self-test DONE|self-test: verify DONE"
)
for s in "${SERIALS[@]}"; do
  checks+=("$s listed with health ok| nvme[0-9]+n1 +$s .* nvme +ok ")
  checks+=("$s health via ioctl|\"controller\":\\{[^}]*\"serial\":\"$s\"[^}]*\\}[^{}]*\"smart\":\\{[^}]*\"critical_warning\":0,[^}]*\"temperature_kelvin\":[1-9]")
  checks+=("$s prepared by serial, not erased|by-id/nvme-[^ ]*$s[^ ]* serial $s health ok: prepared as drive #[0-9]")
done
checks+=("$SICK listed unhealthy| nvme[0-9]+n1 +$SICK .* nvme +critical warning: reliability degraded")
checks+=("$SICK refused with the reason|serial $SICK health critical warning: reliability degraded \\(media or internal errors\\): refused: unhealthy: critical warning: reliability degraded")
checks+=("$MULTI namespace 1 listed as mounted| nvme[0-9]+n1 +$MULTI .* mounted /mnt/ns1")
checks+=("$MULTI mounted namespace refused naming its mount|_${MULTI}_1 serial $MULTI health ok: refused: .*mounted filesystem \\(/mnt/ns1\\)")
checks+=("$MULTI blank namespace prepared, not erased|serial $MULTI health ok: prepared as drive #[0-9]")
checks+=("$PARTED partitioned drive refused|serial $PARTED health ok: refused: holds GPT partition table")
checks+=("$LVMPV logical volume mounted at boot|Mounted .*/mnt/keep")
checks+=("$LVMPV LVM drive refused as held by device-mapper, named by serial|by-id/nvme-[^ ]*${LVMPV}[^ ]* serial $LVMPV health ok: refused: held by dm-[0-9]+")
# The rack's own tty2 has its getty (started alongside the serial getty there was), and
# the serial console offers no login (checked below: a BMC's serial-over-LAN reaches it).
checks+=("tty2 getty started|Started .*getty@tty2")
# A guest CPU reported stuck for at least LOCKUP_SECS (a whole boot takes about 40 s).
stuck() {
  local most
  most=$(tr -d '\r' <"$LOG" | grep -a -oE "soft lockup - CPU#[0-9]+ stuck for [0-9]+s" |
    grep -oE "[0-9]+s$" | tr -d s | sort -n | tail -n 1 || true)
  [ -n "$most" ] && [ "$most" -ge "$LOCKUP_SECS" ]
}
attempt=1
while :; do
  boot
  ok="" locked=""
  while :; do
    all=1
    for c in "${checks[@]}"; do seen "${c#*|}" || { all=""; break; }; done
    if [ -n "$all" ]; then ok=1; break; fi
    if seen "self-test failed|self-test: NOT DONE|Failed to start|Kernel panic"; then break; fi
    if [ "$ACCEL" = tcg ] && stuck; then locked=1; break; fi
    kill -0 "$QPID" 2>/dev/null || break
    [ $(($(date +%s) - START)) -lt "$TIMEOUT" ] || break
    sleep 1
  done
  [ -n "$locked" ] && [ "$attempt" = 1 ] || break
  echo "[boot-test] attempt 1: the emulated CPUs locked up after $(($(date +%s) - START))s (kernel soft lockup under TCG, nothing moving); booting again from scratch"
  stop_qemu
  cp "$LOG" "$ARTIFACTS/boot-console.attempt1.log"
  attempt=2
done
# A little longer for late unit failures to show.
[ -n "$ok" ] && sleep 3
ELAPSED=$(($(date +%s) - START))

# Verdict lines are printed last, after any console excerpt, so that the tail of the
# output (all a CI summary may keep) says what failed.
verdict=()
rc=0
for c in "${checks[@]}"; do
  if seen "${c#*|}"; then verdict+=("[boot-test] ok: ${c%%|*}"); else verdict+=("[boot-test] MISSING: ${c%%|*}"); rc=1; fi
done
failed_units=$(tr -d '\r' <"$LOG" | grep -a -E "Failed to start|FAILED|Failed with result|Kernel panic" || true)
[ -z "$failed_units" ] || rc=1
serial_login=$(tr -d '\r' <"$LOG" | grep -a -E "serial-getty@ttyS0|login: *$" || true)
if [ -n "$serial_login" ]; then
  verdict+=("[boot-test] FOUND: a login on the serial console: ${serial_login%%$'\n'*}")
  rc=1
else
  verdict+=("[boot-test] ok: no login on the serial console")
fi
# The console as an operator sees it (tty1: the dashboard), through QMP screendump.
if [ -S "$RUN/qmp.sock" ] && kill -0 "$QPID" 2>/dev/null; then
  python3 - "$RUN/qmp.sock" "$ARTIFACTS/console.png" <<'PY' || echo "[boot-test] (no console screenshot)"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ({"execute": "qmp_capabilities"},
            {"execute": "screendump", "arguments": {"filename": sys.argv[2], "format": "png"}}):
    f.write(json.dumps(cmd) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            break
    if "error" in r:
        sys.exit(r["error"]["desc"])
PY
  if [ -f "$ARTIFACTS/console.png" ]; then echo "[boot-test] console screenshot: $ARTIFACTS/console.png"; fi
fi
# What the guest must not have written: the ext4 filesystems of namespace 1 and of the
# logical volume, the LVM label and metadata, and the partition table, read from the
# image files once qemu has stopped.
alive=""
kill -0 "$QPID" 2>/dev/null && alive=1
stop_qemu
if debugfs -R "cat /marker.txt" "$RUN/ns1.img" 2>/dev/null | grep "kept by barge" >/dev/null; then
  verdict+=("[boot-test] ok: $MULTI namespace 1 ext4 filesystem intact")
else
  verdict+=("[boot-test] MISSING: $MULTI namespace 1 ext4 filesystem intact"); rc=1
fi
if [ -n "${LV_OFFSET:-}" ] &&
  debugfs -R "cat /marker.txt" "$RUN/lvm.img?offset=$LV_OFFSET" 2>/dev/null | grep "kept by barge" >/dev/null &&
  dd if="$RUN/lvm.img" bs=512 skip=1 count=1 status=none | grep -a LABELONE >/dev/null &&
  dd if="$RUN/lvm.img" bs=1M count=1 status=none | grep -a "$VG" >/dev/null; then
  verdict+=("[boot-test] ok: $LVMPV LVM label, volume group $VG and its ext4 filesystem intact")
else
  verdict+=("[boot-test] MISSING: $LVMPV LVM label, volume group $VG and its ext4 filesystem intact"); rc=1
fi
if sfdisk -d "$RUN/parted.img" 2>/dev/null | cmp -s - "$RUN/parted.before"; then
  verdict+=("[boot-test] ok: $PARTED partition table intact")
else
  verdict+=("[boot-test] MISSING: $PARTED partition table intact"); rc=1
fi
if [ "$rc" = 0 ]; then
  tr -d '\r' <"$LOG" | grep -a -E "daemon ready|self-test:|prepared as drive|refused| nvme[0-9]+n1 |/mnt/" | sed 's/^/[guest] /'
  printf '%s\n' "${verdict[@]}"
  echo "[boot-test] PASS after ${ELAPSED}s ($ACCEL); console log: $LOG"
else
  why="checks missing"
  [ -z "$failed_units" ] || why="a unit failed"
  [ -n "$alive" ] || why="$why; qemu exited"
  [ -z "$locked" ] || why="$why; the emulated CPUs locked up twice"
  echo "[boot-test] last console lines:"
  tail -n 60 "$LOG" | tr -d '\r' | cut -c1-400 | sed 's/^/[console] /'
  if [ -n "$failed_units" ]; then
    echo "[boot-test] failures on the console:"
    printf '%s\n' "$failed_units" | cut -c1-400 | sed 's/^/[console] /'
  fi
  printf '%s\n' "${verdict[@]}"
  echo "[boot-test] FAIL after ${ELAPSED}s ($ACCEL; $why); console log: $LOG"
fi
exit $rc
