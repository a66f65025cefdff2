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
WORK=$(mktemp -d /tmp/skein-perf-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A clean broker stop fsyncs gigabytes of dirty data here: give it time before SIGKILL.
    for _ in $(seq 1 100); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ $SKEIN == target/release/skein ]]; then cargo build --release --bins; fi
mkdir -p "$WORK/zk"
cat >"$WORK/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$WORK/zk
clientPort=25181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
CFG
java -Xmx256m -cp "$(skein_zk_classpath)" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zk/zoo.cfg" \
    >"$OUT/zookeeper.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/broker.toml" <<CFG
broker.id = 1
listeners = "PLAINTEXT://127.0.0.1:25092"
log.dirs = "$WORK/data"
zookeeper.connect = "127.0.0.1:25181"
num.shards = 1
tuning.dir = "$PWD/perf/tuning-broker-core1"
CFG
sleep 2
"$SKEIN" broker --config "$WORK/broker.toml" >"$OUT/broker.log" 2>&1 &
PIDS+=($!)
B=127.0.0.1:25092
for _ in $(seq 1 100); do "$SKEIN" topics list --bootstrap $B >/dev/null 2>&1 && break; sleep 0.2; done
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
