#!/usr/bin/env bash
# Buffered (page cache) against O_DIRECT sequential writes on the disk that holds log.dirs, at a
# produce-batch size (16 KiB) and at 1 MiB, each followed by one fdatasync so the buffered figure
# includes getting the data to the device; then a buffered sequential read of the last file with
# the page cache dropped first (what a fetch from disk can get at most: sendfile reads through the
# page cache with readahead). Usage: perf/disk_write.sh [DIR] (default /tmp).
set -euo pipefail
dir=${1:-/tmp}
file=$(mktemp "$dir/skein-disk-XXXXXX")
trap 'rm -f "$file"' EXIT
total_mb=1024
run() {
    local label=$1 bs=$2; shift 2
    local count=$((total_mb * 1024 * 1024 / bs))
    rm -f "$file"
    local out
    out=$(dd if=/dev/zero of="$file" bs="$bs" count="$count" "$@" 2>&1 | tail -n 1)
    printf '%-28s %s\n' "$label" "${out##*, }"
}
run "buffered 16 KiB + fdatasync" 16384 conv=fdatasync
run "O_DIRECT 16 KiB" 16384 oflag=direct
run "buffered 1 MiB + fdatasync" 1048576 conv=fdatasync
run "O_DIRECT 1 MiB" 1048576 oflag=direct
sync
if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    out=$(dd if="$file" of=/dev/null bs=1048576 2>&1 | tail -n 1)
    printf '%-28s %s\n' "read, page cache dropped" "${out##*, }"
else
    echo "read, page cache dropped    (skipped: cannot drop caches without root)"
fi
