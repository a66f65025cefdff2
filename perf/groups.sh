#!/usr/bin/env bash
# Issue 8's consumer-group figures, on one broker of one shard (pinned to core 1,
# perf/tuning-broker-core1; the generator pinned to core 0) with group.initial.rebalance.delay.ms=0:
#   (a) time from 10 consumers subscribing to a stable group (skein bench consume --group);
#   (b) OffsetCommit throughput (skein bench commit), P partitions per request, P=1 too;
#   (c) reading the produce benchmark's data (10 M x 100 B, 2 partitions) through a group,
#       against plain assign()-based consumption of the same data, runs interleaved.
# Every figure is measured ROUNDS times (default 3; (c), whose runs last about a second, twice
# as often). JSON reports and logs go to perf/results/<date>-groups/; a summary is printed.
#   perf/groups.sh [ROUNDS]
# Knobs: RECORDS (10000000), COMMIT_SECS (10), COMMIT_PARTITIONS (100), COMMIT_P ("1 10 100"),
# COMMIT_IN_FLIGHT (64), PROFILE=1: afterwards, one more (unrecorded) run of each under
# `perf record -e cpu-clock -g -p <broker>`, its report in OUT/*.perf.txt (the profiler costs the
# broker a quarter of its speed, so profiled runs are never the measured ones).
# Each partition offset committed appends a ~100-byte record to __consumer_offsets (no compaction
# yet), so (b) writes gigabytes: it runs last, after a `sync`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
ROUNDS=${1:-3}
RECORDS=${RECORDS:-10000000}
COMMIT_SECS=${COMMIT_SECS:-10}
COMMIT_PARTITIONS=${COMMIT_PARTITIONS:-100}
COMMIT_P=${COMMIT_P:-1 10 100}
COMMIT_IN_FLIGHT=${COMMIT_IN_FLIGHT:-64}
SKEIN=${SKEIN:-target/release/skein}
OUT=perf/results/$(date +%Y%m%d-%H%M)-groups
mkdir -p "$OUT"
source perf/lib.sh

# perf_start_broker with the group setting this scenario needs.
start_broker() {
    cat >"$WORK/broker.toml" <<CFG
broker.id = 1
listeners = "PLAINTEXT://$B"
log.dirs = "$WORK/data"
zookeeper.connect = "127.0.0.1:25181"
num.shards = 1
tuning.dir = "$PWD/perf/tuning-broker-core1"
group.initial.rebalance.delay.ms = 0
CFG
    "$SKEIN" broker --config "$WORK/broker.toml" >"$OUT/broker.log" 2>&1 &
    PIDS+=($!)
    BROKER=$!
    for _ in $(seq 1 100); do "$SKEIN" topics list --bootstrap $B >/dev/null 2>&1 && return; sleep 0.2; done
    echo "the broker did not answer; see $OUT/broker.log" >&2
    exit 1
}

bench() { "$SKEIN" bench "$@" --bootstrap $B --cores 0 --quiet; }
profiled() { # profiled NAME COMMAND...: COMMAND with the broker under perf record
    perf record -e cpu-clock -g -p "$BROKER" -o "$WORK/$1.perf.data" >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.5
    "${@:2}" >/dev/null
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    {
        echo "## by thread and object"
        perf report -i "$WORK/$1.perf.data" --no-children --sort comm,dso --stdio 2>/dev/null \
            | grep -E '^ +[0-9]' | head -12
        echo "## self time by symbol"
        perf report -i "$WORK/$1.perf.data" --no-children --sort symbol --percent-limit 1 \
            -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
        echo "## with callees (children)"
        perf report -i "$WORK/$1.perf.data" --children --sort symbol --percent-limit 3 \
            -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -60
    } | sed -E 's/ +- +- *$//; s/ +$//' >"$OUT/$1.perf.txt" || true
}

perf_start_zookeeper "$OUT"
start_broker

section "Data: $RECORDS x 100 B in 2 partitions, 10 partitions for the rebalance, $COMMIT_PARTITIONS for commits"
bench produce --topic p100 --create-topic 2:1 --records "$RECORDS" --record-size 100 --acks 1 \
    --report "$OUT/produce-100.json"
bench produce --topic ten --create-topic 10:1 --records 1000000 --record-size 100 --acks 1 \
    --report "$OUT/produce-ten.json"
"$SKEIN" topics create --bootstrap $B --topic offsets-src --partitions "$COMMIT_PARTITIONS"
sync

# (c) first, before the commits' gigabytes of __consumer_offsets writes: one unrecorded pass
# warms the page cache, then plain and group runs alternate, each going first in turn.
section "(c) plain and group consumption of the produce data"
bench consume --topic p100 --consumers 2 >/dev/null
consume_plain() {
    sync
    bench consume --topic p100 --consumers 2 --report "$OUT/consume-plain-$1.json"
}
consume_group() {
    sync
    bench consume --topic p100 --group "readers-$1" --consumers 2 \
        --report "$OUT/consume-group-$1.json"
}
for round in $(seq 1 $((2 * ROUNDS))); do
    if (( round % 2 )); then
        consume_plain "$round"; consume_group "$round"
    else
        consume_group "$round"; consume_plain "$round"
    fi
done

section "(a) 10 consumers to a stable group"
for round in $(seq 1 "$ROUNDS"); do
    bench consume --topic ten --group "rebalance-$round" --consumers 10 \
        --report "$OUT/rebalance-10-$round.json"
done

section "(b) OffsetCommit throughput"
for round in $(seq 1 "$ROUNDS"); do
    for p in $COMMIT_P; do
        sync
        bench commit --topic offsets-src --group "commit-p$p-$round" --partitions-per-commit "$p" \
            --max-in-flight "$COMMIT_IN_FLIGHT" --duration "$COMMIT_SECS" \
            --report "$OUT/commit-p$p-$round.json"
    done
done

if [[ ${PROFILE:-0} == 1 ]]; then
    section "Profiles (unrecorded runs)"
    profiled consume-plain bench consume --topic p100 --consumers 2
    profiled consume-group bench consume --topic p100 --group readers-profiled --consumers 2
    for p in $COMMIT_P; do
        sync
        profiled "commit-p$p" bench commit --topic offsets-src --group "commit-p$p-profiled" \
            --partitions-per-commit "$p" --max-in-flight "$COMMIT_IN_FLIGHT" --duration 5
    done
fi

section "Summary"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def runs(pattern):
    return [json.loads(p.read_text()) for p in sorted(out.glob(pattern))]
def errors(rs):
    return sum(r["errors"] for r in rs)
rs = runs("rebalance-10-*.json")
print("(a) 10 consumers to a stable group, ms:",
      " / ".join(f"{r['group']['rebalance_ms']:.1f}" for r in rs),
      "| rebalances:", " / ".join(str(r["group"]["rebalances"]) for r in rs), "| errors", errors(rs))
ps = sorted({p.name.split("-")[1] for p in out.glob("commit-p*-*.json")}, key=lambda s: int(s[1:]))
for p in ps:
    rs = runs(f"commit-{p}-*.json")
    print(f"(b) commit {p}: partition commits/s",
          " / ".join(f"{r['commit']['partition_commits_per_s']:,.0f}" for r in rs),
          "| requests/s", " / ".join(f"{r['commit']['requests_per_s']:,.0f}" for r in rs),
          "| p50/p99/p99.9 us", " / ".join(
              f"{r['latency_us']['p50']}/{r['latency_us']['p99']}/{r['latency_us']['p999']}" for r in rs),
          "| errors", errors(rs))
for kind in ["plain", "group"]:
    rs = runs(f"consume-{kind}-*.json")
    extra = ""
    if kind == "group":
        extra = " | stable after ms " + " / ".join(f"{r['group']['rebalance_ms']:.1f}" for r in rs)
    print(f"(c) consume {kind}: M rec/s", " / ".join(f"{r['records_per_s'] / 1e6:.2f}" for r in rs),
          "| MB/s", " / ".join(f"{r['mb_per_s']:.0f}" for r in rs), "| s",
          " / ".join(f"{r['duration_s']:.2f}" for r in rs), extra, "| errors", errors(rs))
PY
echo "results in $OUT"
