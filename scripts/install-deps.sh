#!/usr/bin/env bash
# Installs every Debian package vcp needs to build, test and run its demo. Idempotent: it only
# calls apt-get when something is missing, and runs `apt-get update` once before installing.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  liburing-dev libisal-dev libseccomp-dev libfuse3-dev nettle-dev
  libcli11-dev libtomlplusplus-dev libfmt-dev libspdlog-dev
)
# Real peers and guest pieces used by the integration tests and the demo.
PEER_PKGS=(
  qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio e2fsprogs
  tgt libiscsi-bin libnbd-bin fio iproute2 util-linux kmod qemu-block-extra
  python3 nftables
)

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" != "--build-only" ]; then want+=("${PEER_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
