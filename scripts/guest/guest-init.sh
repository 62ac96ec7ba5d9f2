#!/bin/sh
# PID 1 of the test guest (build-initramfs.sh puts it in the initramfs as /init): tests the
# virtio-blk disk /dev/vda and powers off. Busybox sh, plus the host's mke2fs, e2fsck and
# util-linux blkdiscard.
#
# Kernel command line:
#   vcptest=all|raw|fs|smoke|migrate|resize  what to run (default all)
#     smoke: modules, device, queues
#     migrate: smoke + reads of a known pattern verified in a loop for vcpmigrate_s seconds,
#            while the host migrates the guest (tests/integration/migration_test.sh)
#     resize: smoke + the disk grows to vcpresize_to sectors while the guest reads block 0 in a
#            loop (tests/integration/resize_test.sh grows it on the host); the new end is
#            written and read back, the old data checked
#     raw:   smoke + O_DIRECT patterns at several offsets, discard/zero-out, parallel load
#     fs:    smoke + ext4: write files, sync, umount, drop caches, remount, verify, fstrim, e2fsck
#     all:   raw + fs
#   vcpqueues=N        the number of request queues /sys/block/vda/mq must show (default 1)
#   vcpdiscard=yes|no  yes: the device must offer discard and write-zeroes, and both are tested
#   vcpwatchdog=S      fail (with the state of the in-flight requests) after S seconds
#   vcpmigrate_s=S     how long the migrate test reads (default 40)
#   vcpresize_to=N     resize: the size in 512-byte sectors the disk must grow to
#   vcpresize_s=S      resize: how long to wait for it (default 60)
#   vcpresize_reads=yes|no  resize: read block 0 every 0.2 s while waiting (default yes); no:
#                      the guest does no I/O until the disk has grown
#
# Serial console markers: "VCPTEST: step NAME ok (Ts)" per step, then exactly one of
# "VCPTEST: PASS" or "VCPTEST: FAIL <why>".
PATH=/sbin:/bin
export PATH

/bin/mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

TEST=all
QUEUES=1
DISCARD=yes
WATCHDOG=100
MIGRATE_S=40
RESIZE_TO=0
RESIZE_S=60
RESIZE_READS=yes
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case $arg in
    vcptest=*) TEST=${arg#vcptest=} ;;
    vcpqueues=*) QUEUES=${arg#vcpqueues=} ;;
    vcpdiscard=*) DISCARD=${arg#vcpdiscard=} ;;
    vcpwatchdog=*) WATCHDOG=${arg#vcpwatchdog=} ;;
    vcpmigrate_s=*) MIGRATE_S=${arg#vcpmigrate_s=} ;;
    vcpresize_to=*) RESIZE_TO=${arg#vcpresize_to=} ;;
    vcpresize_s=*) RESIZE_S=${arg#vcpresize_s=} ;;
    vcpresize_reads=*) RESIZE_READS=${arg#vcpresize_reads=} ;;
  esac
done

DEV=/dev/vda
QDIR=/sys/block/vda/queue
MIB=1048576

finish() {
  sleep 1  # let the serial port drain the last lines before the machine goes away
  poweroff -f
  sleep 10
}

# What the kernel and the block layer know about a stuck or failed request.
diagnostics() {
  echo "--- diagnostics (step: $(cat /tmp/step 2>/dev/null))"
  [ -r /sys/block/vda/inflight ] && echo "vda inflight (reads writes): $(cat /sys/block/vda/inflight)"
  for f in /sys/kernel/debug/block/vda/hctx*/busy /sys/kernel/debug/block/vda/hctx*/dispatch \
           /sys/kernel/debug/block/vda/hctx*/state; do
    # debugfs files show size 0: read them to know whether they are empty.
    c=$(cat "$f" 2>/dev/null) && [ -n "$c" ] && printf '%s:\n%s\n' "$f" "$c"
  done
  grep virtio /proc/interrupts
  echo w >/proc/sysrq-trigger 2>/dev/null
  echo "--- tasks blocked (sysrq w):"
  dmesg | grep -E 'task:.*state:D' | sed 's/ stack:.*//'
  echo "--- kernel messages about the disk and its file system:"
  dmesg | grep -i -E 'vda|virtio|blk_|I/O error|EXT4|jbd2|hung' | tail -n 40
  echo "--- end of diagnostics"
}

fail() {
  echo "VCPTEST: FAIL $*"
  diagnostics
  finish
}

# why MESSAGE: the reason a step function gives before it returns 1.
why() { echo "$*" >>/tmp/why; }

now() { cut -d' ' -f1 /proc/uptime; }

# step NAME FUNCTION: runs it, prints the marker, or fails the whole test with its reason.
step() {
  name=$1
  shift
  echo "$name" >/tmp/step
  : >/tmp/why
  t0=$(now)
  if "$@"; then
    echo "VCPTEST: step $name ok ($(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s)"
  else
    fail "step $name: $(cat /tmp/why)"
  fi
}

md5() { md5sum "$1" | cut -d' ' -f1; }

# dev_write FILE OFFSET BS / dev_read OFFSET LENGTH BS OUT: O_DIRECT, offsets in bytes.
dev_write() {
  dd if="$1" of=$DEV bs="$3" seek="$2" oflag=direct,seek_bytes conv=notrunc status=none
}
dev_read() {
  dd if=$DEV of="$4" bs="$3" skip="$1" count="$2" iflag=direct,skip_bytes,count_bytes status=none
}

# same_bytes A B WHAT: the two files are equal, or why() names the first difference.
same_bytes() {
  [ "$(md5 "$1")" = "$(md5 "$2")" ] && return 0
  why "$3: read back differs from what was written: $(cmp "$1" "$2" 2>&1 | head -n 1)"
  return 1
}

# slice FILE OFFSET LENGTH OUT (MiB units)
slice() { dd if="$1" of="$4" bs=$MIB skip="$2" count="$3" status=none; }

step_modules() {
  for ko in /lib/modules/vcp/*.ko; do
    insmod "$ko" 2>/tmp/insmod.err || { why "insmod $ko: $(cat /tmp/insmod.err)"; return 1; }
  done
}

step_device() {
  i=0
  while [ ! -b $DEV ]; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
      why "no $DEV after 10 s (virtio devices: $(ls /sys/bus/virtio/devices 2>/dev/null))"
      return 1
    fi
    sleep 0.1
  done
  SIZE=$(($(cat /sys/block/vda/size) * 512))
  LBS=$(cat $QDIR/logical_block_size)
  echo "vda: $SIZE bytes, logical block $LBS, max_sectors_kb $(cat $QDIR/max_sectors_kb)," \
       "max_segments $(cat $QDIR/max_segments), discard_max_bytes $(cat $QDIR/discard_max_bytes)," \
       "write_zeroes_max_bytes $(cat $QDIR/write_zeroes_max_bytes), ro $(cat /sys/block/vda/ro)"
  echo "vda virtio features: $(cat /sys/block/vda/device/features)"
  # The device's serial (virtio GET_ID), which udev names /dev/disk/by-id/virtio-SERIAL after.
  echo "VCPTEST: serial '$(cat /sys/block/vda/serial 2>/dev/null)'"
  # The physical block the device names (virtio-blk topology), which file systems align to.
  echo "VCPTEST: physical block $(cat $QDIR/physical_block_size), minimum I/O $(cat $QDIR/minimum_io_size)"
  [ "$(cat /sys/block/vda/ro)" = 0 ] || { why "$DEV is read-only"; return 1; }
  [ "$SIZE" -ge $((128 * MIB)) ] || { why "$DEV has $SIZE bytes: the test needs at least 128 MiB"; return 1; }
}

step_queues() {
  n=$(find /sys/block/vda/mq -mindepth 1 -maxdepth 1 | wc -l)
  echo "vda: $n request queue(s) for $(nproc) CPU(s)"
  [ "$n" -eq "$QUEUES" ] || { why "/sys/block/vda/mq has $n queue(s), expected $QUEUES"; return 1; }
}

# O_DIRECT patterns at the start, at odd sector offsets, across a MiB boundary, in the middle
# with one large request, and at the very end; all written first, then all read back.
step_raw() {
  half=$(((SIZE / 2) / MIB * MIB))
  # offset length write-bs read-bs
  set -- \
    0 4096 4096 4096 \
    $((8192 + 3 * LBS)) $((7 * LBS)) $((7 * LBS)) "$LBS" \
    $((MIB - 4096)) $MIB 128k 64k \
    $((half + 12288)) $((4 * MIB + 4096)) $((4 * MIB + 4096)) 4096 \
    $((SIZE - 65536)) 65536 65536 8192
  n=0
  while [ $# -ge 4 ]; do
    head -c "$2" /dev/urandom >/tmp/raw.$n
    dev_write /tmp/raw.$n "$1" "$3" || { why "O_DIRECT write of $2 bytes at offset $1 failed"; return 1; }
    echo "$1 $2 $4" >>/tmp/raw.list
    n=$((n + 1))
    shift 4
  done
  n=0
  while read -r off len rbs; do
    dev_read "$off" "$len" "$rbs" /tmp/raw.back || { why "O_DIRECT read of $len bytes at offset $off failed"; return 1; }
    same_bytes /tmp/raw.$n /tmp/raw.back "$len bytes at offset $off" || return 1
    n=$((n + 1))
  done </tmp/raw.list
  rm -f /tmp/raw.*
}

# check_punched HOW OFFSET_MIB: 3 MiB of data at OFFSET, HOW ("discard" or "zero-out") on the
# middle MiB: it must read as zeros and the MiB either side must be intact.
# Virtio does not promise zeros after a plain discard; vcp's backends (ram: pages given back,
# file: a punched hole) and qemu-storage-daemon with discard=unmap give them, and this holds
# them to it.
check_punched() {
  head -c $((3 * MIB)) /dev/urandom >/tmp/punch.data
  dev_write /tmp/punch.data $(($2 * MIB)) 1M || { why "$1: writing the data failed"; return 1; }
  if [ "$1" = discard ]; then
    /sbin/blkdiscard -f -o $((($2 + 1) * MIB)) -l $MIB $DEV 2>/tmp/bd.err
  else
    /sbin/blkdiscard -f -z -o $((($2 + 1) * MIB)) -l $MIB $DEV 2>/tmp/bd.err
  fi || { why "blkdiscard ($1) of 1 MiB at $(($2 + 1)) MiB failed: $(cat /tmp/bd.err)"; return 1; }
  dev_read $(($2 * MIB)) $((3 * MIB)) 64k /tmp/punch.back || { why "$1: read back failed"; return 1; }
  for part in 0 2; do
    slice /tmp/punch.data $part 1 /tmp/punch.a
    slice /tmp/punch.back $part 1 /tmp/punch.b
    same_bytes /tmp/punch.a /tmp/punch.b "$1: the MiB at $(($2 + part)) MiB (beside the $1 region)" || return 1
  done
  slice /tmp/punch.back 1 1 /tmp/punch.b
  head -c $MIB /dev/zero >/tmp/punch.zero
  same_bytes /tmp/punch.zero /tmp/punch.b "$1: the $1 region at $(($2 + 1)) MiB (must read as zeros)" || return 1
  rm -f /tmp/punch.*
}

step_discard() {
  dmax=$(cat $QDIR/discard_max_bytes)
  zmax=$(cat $QDIR/write_zeroes_max_bytes)
  [ "$dmax" -gt 0 ] || { why "the device offers no discard (queue/discard_max_bytes is 0) and the test was asked to check it"; return 1; }
  [ "$zmax" -gt 0 ] || { why "the device offers no write-zeroes (queue/write_zeroes_max_bytes is 0) and the test was asked to check it"; return 1; }
  echo "discard: granularity $(cat $QDIR/discard_granularity), max $dmax; write zeroes max $zmax"
  check_punched discard 8 && check_punched zero-out 16
}

# queue_interrupts: "NAME TOTAL" per virtio request queue vector, summed over the CPUs.
queue_interrupts() {
  grep 'virtio.*-req' /proc/interrupts | awk -v n="$(nproc)" '{ s = 0; for (i = 2; i <= n + 1; i++) s += $i; print $NF, s }'
}

# One dd per job, each pinned to its CPU, writing then reading its own 8 MiB with O_DIRECT, all
# jobs at once; then every request queue must have signalled completions.
step_parallel() {
  ncpu=$(nproc)
  jobs=$QUEUES
  [ "$jobs" -ge "$ncpu" ] || jobs=$ncpu
  base=$((32 * MIB))
  [ $((base + jobs * 8 * MIB)) -le "$SIZE" ] || { why "$jobs jobs of 8 MiB from 32 MiB do not fit in $SIZE bytes"; return 1; }
  j=0
  while [ $j -lt "$jobs" ]; do
    head -c $((8 * MIB)) /dev/urandom >/tmp/par.$j
    j=$((j + 1))
  done
  queue_interrupts >/tmp/irq.before
  for phase in write read; do
    pids=""
    j=0
    while [ $j -lt "$jobs" ]; do
      off=$((base + j * 8 * MIB))
      if [ $phase = write ]; then
        taskset -c $((j % ncpu)) dd if=/tmp/par.$j of=$DEV bs=64k seek=$off oflag=direct,seek_bytes conv=notrunc status=none &
      else
        taskset -c $((j % ncpu)) dd if=$DEV of=/tmp/par.back.$j bs=64k skip=$off count=$((8 * MIB)) iflag=direct,skip_bytes,count_bytes status=none &
      fi
      pids="$pids $!"
      j=$((j + 1))
    done
    j=0
    for pid in $pids; do
      wait "$pid" || { why "parallel $phase job $j (CPU $((j % ncpu))) failed"; return 1; }
      j=$((j + 1))
    done
  done
  j=0
  while [ $j -lt "$jobs" ]; do
    same_bytes /tmp/par.$j /tmp/par.back.$j "parallel job $j: 8 MiB at offset $((base + j * 8 * MIB))" || return 1
    j=$((j + 1))
  done
  rm -f /tmp/par.*
  # Each request virtqueue has its own MSI-X vector, named virtioN-req.Q: every one of them
  # must have signalled completions during this step.
  queue_interrupts >/tmp/irq.after
  nq=$(wc -l </tmp/irq.after)
  [ "$nq" -eq "$QUEUES" ] || { why "/proc/interrupts has $nq virtio request vectors, expected $QUEUES"; return 1; }
  while read -r q total; do
    before=$(awk -v q="$q" '$1 == q { print $2 }' /tmp/irq.before)
    echo "queue $q: $((total - before)) interrupts in this step"
    [ $((total - before)) -gt 0 ] || { why "request queue $q signalled no completion during the parallel load"; return 1; }
  done </tmp/irq.after
}

write_files() {
  mkdir -p /mnt/big /mnt/small || return 1
  for size in $MIB $((3 * MIB + 123)) $((7 * MIB)) 1; do
    head -c "$size" /dev/urandom >"/mnt/big/f$size" || return 1
  done
  d=0
  while [ $d -lt 10 ]; do
    mkdir -p /mnt/small/d$d || return 1
    i=0
    while [ $i -lt 25 ]; do
      head -c $(((d * 25 + i) * 7919 % 20000 + 1)) /dev/urandom >/mnt/small/d$d/f$i || return 1
      i=$((i + 1))
    done
    d=$((d + 1))
  done
}

# verify_files LIST: every file in LIST (md5sum format, relative to /mnt) reads back the same.
verify_files() {
  (cd /mnt && md5sum -c "$1") >/tmp/verify.out 2>&1 && return 0
  why "checksums differ after remount: $(grep -v ': OK$' /tmp/verify.out | head -n 5 | tr '\n' ' ')"
  return 1
}

step_fs() {
  /sbin/mkfs.ext4 -F -q -L vcptest $DEV >/tmp/mkfs.out 2>&1 || { why "mkfs.ext4: $(cat /tmp/mkfs.out)"; return 1; }
  mount -t ext4 $DEV /mnt 2>/tmp/mount.err || { why "mount -t ext4: $(cat /tmp/mount.err)"; return 1; }
  write_files || { why "writing the files failed"; return 1; }
  (cd /mnt && find . -type f | sort | xargs md5sum) >/tmp/fs.md5
  echo "fs: $(wc -l </tmp/fs.md5) files, $(du -sk /mnt | cut -f1) KiB"
  sync
  umount /mnt || { why "umount failed"; return 1; }
  echo 3 >/proc/sys/vm/drop_caches
  mount -t ext4 $DEV /mnt 2>/tmp/mount.err || { why "remount: $(cat /tmp/mount.err)"; return 1; }
  verify_files /tmp/fs.md5 || return 1
  # Delete half, give the space back to the device, write more, and check it all again.
  rm -rf /mnt/small/d0 /mnt/small/d1 /mnt/small/d2 /mnt/small/d3 /mnt/small/d4 /mnt/big/f$MIB
  grep -v -e '/small/d[0-4]/' -e "/big/f$MIB\$" /tmp/fs.md5 >/tmp/fs2.md5
  if [ "$DISCARD" = yes ]; then
    fstrim -v /mnt 2>&1 || { why "fstrim failed"; return 1; }
  fi
  head -c $((2 * MIB)) /dev/urandom >/mnt/big/after || return 1
  (cd /mnt && md5sum ./big/after) >>/tmp/fs2.md5
  sync
  umount /mnt || { why "second umount failed"; return 1; }
  /sbin/e2fsck -fn $DEV >/tmp/fsck.out 2>&1 || { why "e2fsck -fn: $(tail -n 5 /tmp/fsck.out | tr '\n' ' ')"; return 1; }
  echo 3 >/proc/sys/vm/drop_caches
  mount -t ext4 -o ro $DEV /mnt 2>/tmp/mount.err || { why "read-only remount: $(cat /tmp/mount.err)"; return 1; }
  verify_files /tmp/fs2.md5 || return 1
  umount /mnt || { why "final umount failed"; return 1; }
}

# The guest moves to another host while this runs. Two readers loop over their own 64 MiB (a
# 16 MiB random pattern four times), each round one dd reading it O_DIRECT in 64 KiB pieces
# into the same buffer (the device writes it; the CPU only reads it, into the checksum's pipe),
# so one dd outlives the migration's passes. A page the VCP wrote after the migration copied it
# and did not mark in the dirty log reaches the destination stale: a wrong sum there. A lost
# used-ring update: a read that never completes (the watchdog).
step_migrate() {
  head -c $((16 * MIB)) /dev/urandom >/tmp/pat
  for i in 0 1 2 3 4 5 6 7; do
    dev_write /tmp/pat $((i * 16 * MIB)) $MIB || { why "writing the pattern failed"; return 1; }
  done
  want=$(cat /tmp/pat /tmp/pat /tmp/pat /tmp/pat | md5sum | cut -d' ' -f1)
  echo "VCPTEST: migrate ready"
  end=$(($(cut -d. -f1 /proc/uptime) + MIGRATE_S))
  pids=""
  for r in 0 1; do
    (
      n=0
      while [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do
        got=$(dd if=$DEV bs=64k skip=$((r * 1024)) count=1024 iflag=direct status=none | md5sum | cut -d' ' -f1)
        if [ "$got" != "$want" ]; then
          echo "reader $r round $n: read $got, wrote $want" >/tmp/migrate$r
          exit 1
        fi
        n=$((n + 1))
      done
      echo "reader $r: $n rounds" >/tmp/migrate$r
    ) &
    pids="$pids $!"
  done
  rc=0
  for p in $pids; do wait "$p" || rc=1; done
  for r in 0 1; do echo "VCPTEST: migrate $(cat /tmp/migrate$r 2>/dev/null)"; done
  grep -q rounds /tmp/migrate0 && grep -q rounds /tmp/migrate1 && [ $rc = 0 ] && return 0
  why "$(cat /tmp/migrate0 /tmp/migrate1 | grep -v rounds)"
  return 1
}

# The disk grows under the guest, nothing restarted: the host grows the image and tells the
# server (vcp serve: SIGHUP; through iSCSI: the target, whose next answer to the initiator is a
# CAPACITY DATA HAS CHANGED unit attention), the server tells QEMU (CONFIG_CHANGE_MSG on the
# vhost-user back-end channel), QEMU interrupts the guest and virtio_blk reads the new capacity.
# A read of block 0 every 0.2 s meanwhile (vcpresize_reads=yes): a command the iSCSI initiator
# can learn it from; without them, its own idle TEST UNIT READY has to.
step_resize() {
  old=$(cat /sys/block/vda/size)
  [ "$RESIZE_TO" -gt "$old" ] || { why "vcpresize_to=$RESIZE_TO is not larger than the disk ($old sectors)"; return 1; }
  head -c $MIB /dev/urandom >/tmp/oldend
  dev_write /tmp/oldend $((old * 512 - MIB)) $MIB || { why "writing the old last MiB failed"; return 1; }
  echo "VCPTEST: resize ready at $old sectors"
  end=$(($(cut -d. -f1 /proc/uptime) + RESIZE_S))
  while size=$(cat /sys/block/vda/size) && [ "$size" = "$old" ]; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt $end ] || { why "still $old sectors after ${RESIZE_S}s"; return 1; }
    if [ "$RESIZE_READS" = yes ]; then
      dd if=$DEV of=/dev/null bs=4k count=1 iflag=direct status=none || { why "reading block 0 failed while waiting"; return 1; }
    fi
    sleep 0.2
  done
  [ "$size" = "$RESIZE_TO" ] || { why "grew to $size sectors, not $RESIZE_TO"; return 1; }
  echo "VCPTEST: resize seen: $(dmesg | grep -i 'new size' | tail -n 1)"
  head -c $MIB /dev/urandom >/tmp/newend
  dev_write /tmp/newend $((size * 512 - MIB)) $MIB || { why "writing the new last MiB failed"; return 1; }
  dev_read $((size * 512 - MIB)) $MIB $MIB /tmp/newend.back || { why "reading the new last MiB failed"; return 1; }
  dev_read $((old * 512 - MIB)) $MIB $MIB /tmp/oldend.back || { why "reading the old last MiB failed"; return 1; }
  cmp -s /tmp/newend /tmp/newend.back || { why "the new last MiB read back differs"; return 1; }
  cmp -s /tmp/oldend /tmp/oldend.back || { why "the old last MiB changed"; return 1; }
}

echo "VCPTEST: start test=$TEST queues=$QUEUES discard=$DISCARD kernel=$(uname -r) cpus=$(nproc)"
case $TEST in all | raw | fs | smoke | migrate | resize) ;; *) fail "unknown vcptest=$TEST" ;; esac
case $DISCARD in yes | no) ;; *) fail "vcpdiscard must be yes or no, not '$DISCARD'" ;; esac
(
  sleep "$WATCHDOG"
  fail "watchdog: step '$(cat /tmp/step)' still running after ${WATCHDOG}s in the guest"
) &

step modules step_modules
step device step_device
step queues step_queues
if [ "$TEST" = all ] || [ "$TEST" = raw ]; then
  step raw step_raw
  if [ "$DISCARD" = yes ]; then
    step discard step_discard
  else
    echo "VCPTEST: discard and write-zeroes not checked (vcpdiscard=no)"
  fi
  step parallel step_parallel
fi
if [ "$TEST" = all ] || [ "$TEST" = fs ]; then
  step fs step_fs
fi
if [ "$TEST" = migrate ]; then
  step migrate step_migrate
fi
if [ "$TEST" = resize ]; then
  step resize step_resize
fi
echo "VCPTEST: PASS"
finish
