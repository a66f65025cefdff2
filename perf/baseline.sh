#!/usr/bin/env bash
# The performance baseline of issue 3, on this machine, in one run:
#   1. the machine's limits: loopback TCP bandwidth (iperf3) and sequential disk writes (dd);
#   2. produce throughput, acks=1, 100 B and 1 KiB records (skein bench);
#   3. fetch throughput of the same data, after dropping the page cache (so from disk);
#   4. end-to-end latency at half the measured 100 B produce rate;
#   5. the same produce workload driven by confluent-kafka's Python producer.
# Scenarios: SHARDS=1 (default: broker pinned to core 1, generator to core 0) or SHARDS=2 (broker
# on both cores, generator unpinned). JSON reports and logs go to perf/results/<date>-<shards>/.
# Starts its own 1-node ZooKeeper and broker on fixed loopback ports (perf/lib.sh) and stops both
# by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
SHARDS=${SHARDS:-1}
RECORDS_100=${RECORDS_100:-10000000}
RECORDS_1K=${RECORDS_1K:-2000000}
SKEIN=target/release/skein
OUT=perf/results/$(date +%Y%m%d-%H%M)-${SHARDS}shard
mkdir -p "$OUT"
source perf/lib.sh

section "Machine limits"
command -v iperf3 >/dev/null || apt_install iperf3
iperf3 -s -B 127.0.0.1 -p 25201 -1 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
iperf3 -c 127.0.0.1 -p 25201 -t 5 | grep -E "receiver" | tee "$OUT/loopback.txt"
perf/disk_write.sh "$(dirname "$WORK")" | tee "$OUT/disk.txt"

section "ZooKeeper and broker ($SHARDS shard(s))"
cargo build --release --bins
if [[ $SHARDS == 1 ]]; then
    tuning=$PWD/perf/tuning-broker-core1
    GEN_CORES=(--cores 0)
else
    tuning=$PWD/tuning/laptop-2core
    GEN_CORES=()
fi
perf_start_zookeeper "$OUT"
perf_start_broker "$OUT" "$SHARDS" "$tuning"

bench() { "$SKEIN" bench "$@" "${GEN_CORES[@]}" --quiet; }
# Every scenario starts with no dirty page-cache data left by the one before, so a burst is measured
# as a burst; what the disk absorbs when writes never stop is perf/writeback.sh's subject.
settle() { sync; }

section "Produce 100 B, acks=1"
settle
bench produce --bootstrap $B --topic p100 --create-topic 2:1 --records "$RECORDS_100" --record-size 100 \
    --acks 1 --report "$OUT/produce-100.json" --plot "$OUT/produce-100.svg"
section "Produce 1 KiB, acks=1"
settle
bench produce --bootstrap $B --topic p1k --create-topic 2:1 --records "$RECORDS_1K" --record-size 1024 \
    --acks 1 --report "$OUT/produce-1k.json" --plot "$OUT/produce-1k.svg"

section "Fetch from disk (page cache dropped first)"
sync
echo 3 >/proc/sys/vm/drop_caches || echo "(cannot drop caches: fetch may come from the page cache)"
bench consume --bootstrap $B --topic p100 --report "$OUT/fetch-100.json"
echo 3 >/proc/sys/vm/drop_caches || true
bench consume --bootstrap $B --topic p1k --report "$OUT/fetch-1k.json"

section "End-to-end latency at half the 100 B produce rate"
max_rate=$(python3 -c "import json; print(int(json.load(open('$OUT/produce-100.json'))['records_per_s']))")
half=$((max_rate / 2))
echo "measured max $max_rate records/s; e2e at $half records/s for 30 s"
settle
bench e2e --bootstrap $B --topic e2e --create-topic 2:1 --rate "$half" --duration 30 --record-size 100 --linger-ms 0 \
    --acks 1 --report "$OUT/e2e-half.json" --plot "$OUT/e2e-half.svg"

# Half the produce-only maximum also has to carry the same rate of fetches on the same cores, so
# lower fixed rates show where the latency targets hold.
for rate in ${E2E_RATES:-2000000 1000000 250000 10000}; do
    section "End-to-end latency at $rate records/s"
    settle
    bench e2e --bootstrap $B --topic "e2e-$rate" --create-topic 2:1 --rate "$rate" --duration 20 --record-size 100 --linger-ms 0 \
        --acks 1 --report "$OUT/e2e-$rate.json"
done

section "The same produce workload from confluent-kafka (Python)"
"$SKEIN" topics create --bootstrap $B --topic py100 --partitions 2
.venv/bin/python perf/client_throughput.py --bootstrap $B --topic py100 --records 2000000 --record-size 100 \
    --partitions 2 | tee "$OUT/confluent-python-100.json"

section "Summary"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
names = ["produce-100", "produce-1k", "fetch-100", "fetch-1k", "e2e-half"]
names += sorted((p.stem for p in out.glob("e2e-[0-9]*.json")), key=lambda n: -int(n.split("-")[1]))
for name in names:
    r = json.loads((out / f"{name}.json").read_text())
    l = r["latency_us"]
    print(f"{name:12} {r['records_per_s']:>12,.0f} rec/s {r['mb_per_s']:>8.1f} MB/s  errors {r['errors']}  "
          f"p50 {l['p50']}us p99 {l['p99']}us p99.9 {l['p999']}us max {l['max']}us")
PY
echo "results in $OUT"
