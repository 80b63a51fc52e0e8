#!/usr/bin/env bash
# Builds the bootable barge node image: Debian 12 (bookworm) from the same mirror the
# host's apt uses, barge installed with its systemd units, on a GPT disk:
#
#   p1  ESP, FAT32, 256 MiB: systemd-boot (EFI/BOOT/BOOTX64.EFI), loader entry, kernel, initrd
#   p2  root, ext4 "bargeroot" (fixed UUID, root=UUID=… on the kernel command line)
#   p3  state, ext4 "bargestate", mounted at /var/lib/barge (the daemon's catalog and keys)
#
# No loop device and no mount of the image: the root and state file systems are filled
# with `mkfs.ext4 -d`, the ESP with mtools, the GPT written by sfdisk into a plain file.
#
#   image/build.sh                     -> $OUT/disk.raw (+ vmlinuz, initrd.img, cmdline)
#   OUT=dir BARGE_BIN=path image/build.sh
#
# Environment:
#   OUT          output directory (default $CARGO_TARGET_DIR/image or target/image)
#   BARGE_BIN    the barge binary to install (default: cargo build --bin barge, then stripped)
#   CACHE        where the package-installed root tree is cached as a tarball, keyed by
#                suite, mirror and package list (default /var/tmp/barge-image-cache)
#   MIRROR       Debian mirror (default: the first URI of the host's apt sources)
# Needs root (debootstrap, chroot with /proc, /sys and /dev bound into the tree).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/image}
CACHE=${CACHE:-/var/tmp/barge-image-cache}
SUITE=bookworm
ROOT_UUID=5b0a2c1e-7e3d-4b8a-9f00-6261726765aa
STATE_UUID=5b0a2c1e-7e3d-4b8a-9f00-6261726765bb
ESP_MB=256
STATE_MB=768
CMDLINE="root=UUID=$ROOT_UUID rw console=tty1 console=ttyS0,115200n8 systemd.show_status=1 quiet loglevel=3"
# Kernel, systemd, udev, the EFI loader, and what barge links against or calls; lvm2 so
# that an operator's volume groups on the node's drives are active, and seen in use.
PKGS=(linux-image-amd64 initramfs-tools zstd systemd systemd-sysv udev dbus systemd-boot-efi lvm2
  e2fsprogs util-linux kmod procps iproute2 nvme-cli less ncurses-base librocksdb7.8)

T0=$(date +%s)
say() { echo "[image +$(($(date +%s) - T0))s] $*"; }

[ "$(id -u)" = 0 ] || { echo "image/build.sh must run as root" >&2; exit 1; }
for t in debootstrap mkfs.ext4 mkfs.vfat mcopy mmd sfdisk strip; do
  command -v "$t" >/dev/null || {
    echo "missing $t: scripts/deps.sh test installs it" >&2
    exit 1
  }
done

mirror() {
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources | grep -v -- '-security' | head -n1)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(mirror)}
SECURITY=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

# ---- the barge binary
if [ -z "${BARGE_BIN:-}" ]; then
  say "cargo build --bin barge"
  (cd "$ROOT" && cargo build --locked --bin barge)
  BARGE_BIN=$TARGET/debug/barge
fi
[ -x "$BARGE_BIN" ] || { echo "no barge binary at $BARGE_BIN" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/barge-image.XXXXXX")
TREE=$WORK/root
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT" "$CACHE" "$TREE"

bind_into() {
  for m in proc sys dev dev/pts; do mkdir -p "$TREE/$m"; done
  mount -t proc proc "$TREE/proc" && MOUNTS+=("$TREE/proc")
  mount -t sysfs sys "$TREE/sys" && MOUNTS+=("$TREE/sys")
  mount --bind /dev "$TREE/dev" && MOUNTS+=("$TREE/dev")
}
unbind() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  MOUNTS=()
}
in_tree() { LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$TREE" "$@"; }

# ---- 1. the Debian tree with packages, cached by what goes into it
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "${PKGS[@]}" "layout-1" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$KEY.tar
if [ -f "$BASE" ]; then
  say "cached Debian tree $BASE"
  tar -C "$TREE" -xpf "$BASE"
else
  say "debootstrap $SUITE from $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$TREE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log"; exit 1; }
  cat >"$TREE/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
  cat >"$TREE/etc/dpkg/dpkg.cfg.d/01-barge-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n' \
    >"$TREE/etc/apt/apt.conf.d/90barge"
  printf '#!/bin/sh\nexit 101\n' >"$TREE/usr/sbin/policy-rc.d"
  chmod +x "$TREE/usr/sbin/policy-rc.d"
  mkdir -p "$TREE/etc/initramfs-tools/conf.d"
  echo 'COMPRESS=zstd' >"$TREE/etc/initramfs-tools/conf.d/barge"
  bind_into
  say "apt-get install ${PKGS[*]}"
  in_tree apt-get update -qq >"$WORK/apt.log" 2>&1
  in_tree apt-get install -y -qq "${PKGS[@]}" >>"$WORK/apt.log" 2>&1 ||
    { tail -n 40 "$WORK/apt.log"; exit 1; }
  in_tree apt-get clean
  unbind
  rm -rf "$TREE"/var/lib/apt/lists/* "$TREE"/var/cache/apt/*.bin "$TREE"/usr/sbin/policy-rc.d
  tar -C "$TREE" -cpf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
  # Older cache entries (another package list) are not needed any more.
  find "$CACHE" -name 'base-*.tar' ! -name "base-$KEY.tar" -delete
fi

# ---- 2. the node: barge, its units, its configuration
say "installing barge ($(du -h "$BARGE_BIN" | cut -f1) before strip)"
strip -o "$TREE/usr/bin/barge" "$BARGE_BIN"
chmod 0755 "$TREE/usr/bin/barge"
cp -a "$HERE/rootfs/." "$TREE/"
# The node's configuration may hold credentials (job ends, passphrases): root's only.
# mkfs.ext4 -d copies owner and mode from this tree.
chown -R 0:0 "$TREE/etc/barge"
chmod 0700 "$TREE/etc/barge"
chmod 0600 "$TREE/etc/barge/barge.env"
install -D -m 0644 "$ROOT/README.md" "$TREE/usr/share/doc/barge/README.md"
echo barge-node >"$TREE/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 barge-node\n' >"$TREE/etc/hosts"
cat >"$TREE/etc/fstab" <<EOF
UUID=$ROOT_UUID / ext4 defaults,errors=remount-ro 0 1
UUID=$STATE_UUID /var/lib/barge ext4 defaults,nofail 0 2
EOF
mkdir -p "$TREE/var/lib/barge"
: >"$TREE/etc/machine-id"
rm -f "$TREE/var/lib/dbus/machine-id"
bind_into
# The console shows the dashboard, not a login prompt. Root's password is locked, so no
# login prompt anywhere takes it: the serial console (ttyS0, which a BMC's serial-over-LAN
# reaches) has no getty at all, only kernel and systemd messages. A crash cart at the
# node's own screen gets a root shell on tty2 (Alt+F2, autologin there only, see
# rootfs/etc/systemd/system/getty@tty2.service.d/); ROOT_PASSWORD_HASH (a crypt(3)
# hash, e.g. from `openssl passwd -6`) sets a password instead of the lock.
if [ -n "${ROOT_PASSWORD_HASH:-}" ]; then
  in_tree usermod -p "$ROOT_PASSWORD_HASH" root
else
  in_tree passwd -l root >/dev/null
fi
in_tree systemctl enable barge-prepare.service barge.service barge-tui.service getty@tty2.service \
  >/dev/null 2>&1
in_tree systemctl mask getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service \
  apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
unbind

KVER=$(ls "$TREE/lib/modules" | sort -V | tail -n1)
cp "$TREE/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$TREE/boot/initrd.img-$KVER" "$OUT/initrd.img"
echo "$CMDLINE" >"$OUT/cmdline"

# ---- 3. file systems and the disk
ROOT_MB=$(($(du -sxm "$TREE" | cut -f1) * 12 / 10 + 128))
say "root.img ${ROOT_MB} MiB, state.img ${STATE_MB} MiB (mkfs.ext4 -d)"
mkfs.ext4 -q -F -L bargeroot -U "$ROOT_UUID" -d "$TREE" -E root_owner=0:0 "$WORK/root.img" "${ROOT_MB}M" >/dev/null
mkfs.ext4 -q -F -L bargestate -U "$STATE_UUID" "$WORK/state.img" "${STATE_MB}M" >/dev/null

say "esp.img ${ESP_MB} MiB (FAT32 via mtools, systemd-boot)"
mkfs.vfat -F 32 -n ESP -C "$WORK/esp.img" $((ESP_MB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/barge
mcopy -i "$WORK/esp.img" "$TREE/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$WORK/esp.img" "$OUT/vmlinuz" ::/barge/vmlinuz
mcopy -i "$WORK/esp.img" "$OUT/initrd.img" ::/barge/initrd.img
printf 'default barge.conf\ntimeout 0\nconsole-mode keep\n' >"$WORK/loader.conf"
printf 'title barge node (Debian %s, %s)\nlinux /barge/vmlinuz\ninitrd /barge/initrd.img\noptions %s\n' \
  "$SUITE" "$KVER" "$CMDLINE" >"$WORK/barge.conf"
mcopy -i "$WORK/esp.img" "$WORK/loader.conf" ::/loader/loader.conf
mcopy -i "$WORK/esp.img" "$WORK/barge.conf" ::/loader/entries/barge.conf

DISK=$OUT/disk.raw
rm -f "$DISK"
truncate -s $(((1 + ESP_MB + ROOT_MB + STATE_MB + 1) * 1024 * 1024)) "$DISK"
sfdisk -q "$DISK" <<EOF
label: gpt
start=1MiB, size=${ESP_MB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"
start=$((1 + ESP_MB))MiB, size=${ROOT_MB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="bargeroot"
start=$((1 + ESP_MB + ROOT_MB))MiB, size=${STATE_MB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="bargestate"
EOF
dd if="$WORK/esp.img" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$DISK" bs=1M seek=$((1 + ESP_MB)) conv=notrunc,sparse status=none
dd if="$WORK/state.img" of="$DISK" bs=1M seek=$((1 + ESP_MB + ROOT_MB)) conv=notrunc,sparse status=none
say "done: $DISK ($(du -h --apparent-size "$DISK" | cut -f1) apparent, $(du -h "$DISK" | cut -f1) allocated), kernel $KVER"
