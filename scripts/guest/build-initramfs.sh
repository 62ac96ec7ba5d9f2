#!/usr/bin/env bash
# Builds the test guest's initramfs: busybox, the Debian kernel's virtio-blk and ext4 modules
# (with their dependencies, in load order), the host's mke2fs/e2fsck/blkdiscard with the
# libraries they link, and scripts/guest/guest-init.sh as /init.
#
#   scripts/guest/build-initramfs.sh OUT.cpio.gz
#
# Beside OUT it writes OUT.kernel (the vmlinuz the modules belong to: boot that one) and
# OUT.key (a hash of every input). When OUT.key matches the inputs, nothing is rebuilt.
# VCP_GUEST_KERNEL=VERSION picks a kernel; default: the newest /boot/vmlinuz-* that has
# /lib/modules/VERSION.
set -euo pipefail

die() { echo "build-initramfs: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT.cpio.gz"
out=$1
here=$(cd "$(dirname "$0")" && pwd)
init_script="$here/guest-init.sh"
[ -f "$init_script" ] || die "missing $init_script"

for tool in busybox cpio gzip modinfo sha256sum ldd flock; do
  command -v "$tool" >/dev/null || die "needs '$tool' on the host (it is missing)"
done

# The kernel: a vmlinuz under /boot whose modules are installed.
pick_kernel() {
  local v
  if [ -n "${VCP_GUEST_KERNEL:-}" ]; then
    echo "$VCP_GUEST_KERNEL"
    return
  fi
  for v in $(find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -rV); do
    if [ -d "/lib/modules/$v" ]; then
      echo "$v"
      return
    fi
  done
}
kver=$(pick_kernel)
[ -n "$kver" ] || die "no /boot/vmlinuz-VERSION with /lib/modules/VERSION (install linux-image-amd64)"
kernel="/boot/vmlinuz-$kver"
[ -r "$kernel" ] || die "$kernel is missing or unreadable"
[ -d "/lib/modules/$kver" ] || die "/lib/modules/$kver is missing"

# Modules the guest loads, in this order; each one's own dependencies (modinfo -F depends)
# are put before it, so a kernel that splits a module further still loads.
wanted=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
        crc16 mbcache jbd2 crc32c_generic ext4)
ordered=()
declare -A seen=()
add_module() {
  local m=$1 dep deps
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  deps=$(modinfo -k "$kver" -F depends "$m" 2>/dev/null) || die "module $m not found for kernel $kver"
  for dep in ${deps//,/ }; do
    add_module "$dep"
  done
  ordered+=("$m")
}
for m in "${wanted[@]}"; do
  add_module "$m"
done

module_files=()
for m in "${ordered[@]}"; do
  f=$(modinfo -k "$kver" -n "$m") || die "module $m has no file for kernel $kver"
  [ "$f" != "(builtin)" ] || die "module $m is built in: this script expects it as a module"
  module_files+=("$f")
done

# Host binaries the guest runs next to busybox: a real mkfs.ext4 and e2fsck (busybox only makes
# ext2) and util-linux blkdiscard (busybox's has no -z for zero-out).
host_bins=(/usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/blkdiscard)
for b in "${host_bins[@]}"; do
  [ -x "$b" ] || die "needs $b on the host (packages e2fsprogs, util-linux)"
done
busybox=$(command -v busybox)
case $(ldd "$busybox" 2>&1 || true) in
  *'not a dynamic executable'*) ;;
  *) die "$busybox is not static (install busybox-static)" ;;
esac

# Shared libraries of the host binaries, by the absolute paths the dynamic loader will look for.
libs=()
while read -r lib; do
  libs+=("$lib")
done < <(for b in "${host_bins[@]}"; do ldd "$b"; done \
           | sed -nE 's/.*=> (\/[^ ]+) .*/\1/p; s/^[[:space:]]*(\/[^ ]+) \(0x.*/\1/p' | sort -u)
[ ${#libs[@]} -gt 0 ] || die "could not find the libraries of ${host_bins[*]}"

# Content key: every input file, this script, the init script and the module order.
key=$( {
  sha256sum "$0" "$init_script" "$kernel" "$busybox" "${host_bins[@]}" "${libs[@]}" \
    "${module_files[@]}" /etc/mke2fs.conf
  printf '%s\n' "$kver" "${ordered[@]}"
} | sha256sum | cut -d' ' -f1)

mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [ -f "$out" ] && [ -f "$out.key" ] && [ "$(cat "$out.key")" = "$key" ] \
   && [ "$(cat "$out.kernel" 2>/dev/null)" = "$kernel" ]; then
  exit 0
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/vcp-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,tmp,mnt,lib/modules/vcp}

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for b in "${host_bins[@]}"; do
  cp "$b" "$root/sbin/"
done
ln -s mke2fs "$root/sbin/mkfs.ext4"
for lib in "${libs[@]}"; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
ln -s /proc/mounts "$root/etc/mtab"

# Modules as plain .ko (busybox insmod takes no compressed ones), named NN-name.ko.
i=0
for f in "${module_files[@]}"; do
  name=$(printf '%02d-%s.ko' "$i" "${ordered[$i]}")
  case "$f" in
    *.ko) cp "$f" "$root/lib/modules/vcp/$name" ;;
    *.ko.xz) command -v xz >/dev/null || die "$f is xz-compressed and xz is missing"
             xz -dc "$f" >"$root/lib/modules/vcp/$name" ;;
    *.ko.zst) command -v zstd >/dev/null || die "$f is zstd-compressed and zstd is missing"
              zstd -qdc "$f" >"$root/lib/modules/vcp/$name" ;;
    *.ko.gz) gzip -dc "$f" >"$root/lib/modules/vcp/$name" ;;
    *) die "unknown module file type: $f" ;;
  esac
  i=$((i + 1))
done

cp "$init_script" "$root/init"
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 -n >"$stage/initramfs.cpio.gz"
mv -f "$stage/initramfs.cpio.gz" "$out"
echo "$kernel" >"$out.kernel"
echo "$key" >"$out.key"
