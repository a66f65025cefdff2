#!/usr/bin/env bash
# A/B of two skein builds on the same machine in the same hour, rounds interleaved (A, B, A, B,
# ...), so the VM's drift hits both alike:
#   perf/ab.sh BIN_A BIN_B [ROUNDS]
# Each round starts a fresh one-shard broker (pinned to core 1, perf/tuning-broker-core1; the
# generator on core 0) and runs produce 10 M x 100 B acks=1 and e2e at 250 k records/s for 20 s,
# as perf/baseline.sh does. JSON reports go to perf/results/<date>-ab/; a summary is printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
A=$(realpath "$1")
B_BIN=$(realpath "$2")
ROUNDS=${3:-3}
OUT=perf/results/$(date +%Y%m%d-%H%M)-ab
mkdir -p "$OUT"
source perf/lib.sh
SKEIN=$A # the generator: one build drives both, so only the broker differs
perf_start_zookeeper "$OUT"

run() {
    local label=$1 bin=$2 round=$3
    rm -rf "$WORK/data"
    SKEIN=$bin perf_start_broker "$OUT" 1 "$PWD/perf/tuning-broker-core1"
    local broker=${PIDS[-1]}
    sync
    "$A" bench produce --bootstrap $B --topic p100 --create-topic 2:1 --records 10000000 \
        --record-size 100 --acks 1 --cores 0 --quiet --report "$OUT/$label-produce-$round.json"
    sync
    "$A" bench e2e --bootstrap $B --topic e2e --create-topic 2:1 --rate 250000 --duration 20 \
        --record-size 100 --linger-ms 0 --acks 1 --cores 0 --quiet \
        --report "$OUT/$label-e2e-$round.json"
    kill "$broker"
    for _ in $(seq 1 100); do kill -0 "$broker" 2>/dev/null || break; sleep 0.2; done
}

for round in $(seq 1 "$ROUNDS"); do
    run A "$A" "$round"
    run B "$B_BIN" "$round"
done

python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for label in "AB":
    produce = [json.loads(p.read_text()) for p in sorted(out.glob(f"{label}-produce-*.json"))]
    e2e = [json.loads(p.read_text()) for p in sorted(out.glob(f"{label}-e2e-*.json"))]
    rates = [r["records_per_s"] / 1e6 for r in produce]
    p99 = [r["latency_us"]["p99"] / 1000 for r in e2e]
    p999 = [r["latency_us"]["p999"] / 1000 for r in e2e]
    print(f"{label}: produce 100 B M rec/s {' / '.join(f'{x:.2f}' for x in rates)} "
          f"(median {statistics.median(rates):.2f}); e2e 250 k/s p99 ms "
          f"{' / '.join(f'{x:.2f}' for x in p99)} (median {statistics.median(p99):.2f}), "
          f"p99.9 ms {' / '.join(f'{x:.2f}' for x in p999)}")
PY
echo "results in $OUT"
