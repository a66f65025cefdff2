#!/usr/bin/env bash
# Sustained writes beyond what the disk absorbs: does the broker stay responsive while the kernel
# throttles page-cache writers (balance_dirty_pages)?
#   - a produce+consume flood (skein bench e2e at RATE records/s of 100 B, DURATION s) pushes dirty
#     page-cache data past the kernel's throttling threshold (on this 24 GiB VM after ~2 GB);
#   - perf/stall_probe.py meanwhile sends an ApiVersions request every 10 ms on its own connection
#     and reports the round trips: a shard whose executor sleeps in the kernel shows up as stalls;
#   - Dirty/Writeback from /proc/meminfo are logged every second.
# Broker: one shard pinned to core 1 (perf/tuning-broker-core1), generator on core 0.
# SKEIN=path/to/skein compares another build. Results in perf/results/<date>-writeback/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
RATE=${RATE:-2500000}
DURATION=${DURATION:-40}
SKEIN=${SKEIN:-target/release/skein}
OUT=perf/results/$(date +%Y%m%d-%H%M)-writeback
mkdir -p "$OUT"
source perf/lib.sh

if [[ $SKEIN == target/release/skein ]]; then cargo build --release --bins; fi
perf_start_zookeeper "$OUT"
perf_start_broker "$OUT" 1 "$PWD/perf/tuning-broker-core1"
sync
echo 3 >/proc/sys/vm/drop_caches || echo "(cannot drop caches)"

section "Flood: e2e at $RATE x 100 B records/s for $DURATION s, probe every 10 ms"
(for _ in $(seq 1 $((DURATION + 5))); do
    echo "$(date +%s) $(grep -E '^(Dirty|Writeback):' /proc/meminfo | awk '{printf "%s %d MB  ", $1, $2/1024}')"
    sleep 1
done) >"$OUT/dirty.log" &
PIDS+=($!)
python3 perf/stall_probe.py $B "$DURATION" 0.01 --json "$OUT/probe.json" | tee "$OUT/probe.txt" &
probe=$!
"$SKEIN" bench e2e --bootstrap $B --topic flood --create-topic 2:1 --rate "$RATE" --duration "$DURATION" \
    --record-size 100 --acks 1 --linger-ms 0 --cores 0 --quiet --report "$OUT/e2e.json" \
    --plot "$OUT/e2e.svg" | tee "$OUT/e2e.txt" || true
wait $probe || true
echo "peak dirty: $(awk '{print $3}' "$OUT/dirty.log" | sort -n | tail -1) MB"
echo "results in $OUT"
