#!/usr/bin/env bash
# Runs a command with TMPDIR on a fresh ext4 filesystem with a journal, made
# in a sparse file on the same disk and removed afterwards.
#
# Why: this machine's root filesystem is ext4 without a journal. There ext4
# skips, when it allocates an inode, every inode deleted in the last 60 s
# (300 s while its inode table block is dirty), scanning past each one: right
# after a 1 GiB base's 57,000 files were deleted, extracting it again costs
# several times more system time (measured: the put's layer-store write
# 22.9 s, user 5.4 s, system 31.5 s; on a journaled ext4 on the same disk
# 4.9 s, system 3.2 s). A benchmark that deletes and writes bases over and
# over measures that, not the resource. Workers' disks have journals.
#
# BENCH_FS=root runs the command unchanged.
set -euo pipefail
if [ "${BENCH_FS:-journal}" = root ]; then exec "$@"; fi
size=${BENCH_FS_SIZE:-40G}
img=$(mktemp /var/tmp/bench-fs.XXXXXX.img)
mnt=$(mktemp -d /mnt/bench-fs.XXXXXX)
cleanup() {
  umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  rm -f "$img"
}
trap cleanup EXIT
truncate -s "$size" "$img"
mkfs.ext4 -q -F -O has_journal "$img"
mount -o loop "$img" "$mnt"
chmod 1777 "$mnt"
echo "journaled-fs: TMPDIR=$mnt (ext4 with a journal, $size sparse file $img)" >&2
TMPDIR=$mnt BENCH_FS_NOTE="work folders on a fresh ext4 with a journal (scripts/journaled-fs.sh; the root filesystem has none)" "$@"
