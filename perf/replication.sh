#!/usr/bin/env bash
# Issue 9's figures on this machine: three brokers (one shard each) and a 1-node ZooKeeper on
# loopback, all started here and stopped by pid.
#   1. produce, replication factor 3, acks=all, 100 B records (skein bench);
#   2. the same with acks=1, and acks=1 on a replication-factor-1 topic of one broker, to show
#      what replication costs;
#   3. end-to-end latency at 100 k records/s, replication factor 3, acks=all;
#   4. the longest produce stall when a partition's leader is SIGKILLed (perf/failover_stall.py,
#      confluent-kafka, idempotent acks=all) with zookeeper.session.timeout.ms=2000.
# JSON reports and logs go to perf/results/<date>-replication/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
RECORDS=${RECORDS:-5000000}
# SESSION_MS, FETCH_WAIT_MS: the brokers' zookeeper.session.timeout.ms (2000) and
# replica.fetch.wait.max.ms (500); STALL_ONLY=1 runs only the failover measurement; E2E_ONLY=1
# only end-to-end latency, at replication factor 3 with acks=all and acks=1 and at 1 with acks=1;
# LINGER_MS: the e2e runs' --linger-ms (0).
SKEIN=target/release/skein
OUT=perf/results/$(date +%Y%m%d-%H%M)-replication
mkdir -p "$OUT"
source perf/lib.sh
BOOT=127.0.0.1:25092,127.0.0.1:25093,127.0.0.1:25094
declare -A BROKER_PID

start_broker() {
    local id=$1 port=$((25091 + $1))
    cat >"$WORK/broker-$id.toml" <<CFG
broker.id = $id
listeners = "PLAINTEXT://127.0.0.1:$port"
log.dirs = "$WORK/data-$id"
zookeeper.connect = "127.0.0.1:25181"
zookeeper.session.timeout.ms = ${SESSION_MS:-2000}
replica.lag.time.max.ms = 10000
replica.fetch.wait.max.ms = ${FETCH_WAIT_MS:-500}
num.shards = 1
tuning.dir = "$PWD/tuning/laptop-2core"
CFG
    "$SKEIN" broker --config "$WORK/broker-$id.toml" >>"$OUT/broker-$id.log" 2>&1 &
    PIDS+=($!)
    BROKER_PID[$id]=$!
    for _ in $(seq 1 100); do "$SKEIN" topics list --bootstrap "127.0.0.1:$port" >/dev/null 2>&1 && return; sleep 0.2; done
    echo "broker $id did not answer; see $OUT/broker-$id.log" >&2
    exit 1
}

section "ZooKeeper and three brokers"
cargo build --release --bins
perf_start_zookeeper "$OUT"
for id in 1 2 3; do start_broker "$id"; done
sleep 1

bench() {
    local name=$1
    shift
    echo "--- $name: skein bench $*"
    "$SKEIN" bench --bootstrap "$BOOT" --quiet --report "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
}

if [[ -n ${E2E_ONLY:-} ]]; then
    section "End to end at 100 k records/s: rf 3 acks=all, rf 3 acks=1, rf 1 acks=1"
    bench e2e-rf3-all e2e --topic e3a --create-topic 6:3 --records 1000000 --rate 100000 --acks all --linger-ms "${LINGER_MS:-0}"
    bench e2e-rf3-1 e2e --topic e31 --create-topic 6:3 --records 1000000 --rate 100000 --acks 1 --linger-ms "${LINGER_MS:-0}"
    bench e2e-rf1-1 e2e --topic e11 --create-topic 6:1 --records 1000000 --rate 100000 --acks 1 --linger-ms "${LINGER_MS:-0}"
    echo "reports in $OUT"
    exit 0
fi
if [[ -z ${STALL_ONLY:-} ]]; then
section "Produce, replication factor 3, acks=all, 100 B"
bench rf3-acks-all produce --topic rf3a --create-topic 6:3 --records "$RECORDS" --acks all --producers 3
section "Produce, replication factor 3, acks=1, 100 B"
bench rf3-acks-1 produce --topic rf3b --create-topic 6:3 --records "$RECORDS" --acks 1 --producers 3
section "Produce, replication factor 1 (spread over the three brokers), acks=1, 100 B"
bench rf1-acks-1 produce --topic rf1 --create-topic 6:1 --records "$RECORDS" --acks 1 --producers 3
section "End to end at 100 k records/s, replication factor 3, acks=all"
bench rf3-e2e e2e --topic rf3e --create-topic 6:3 --records 2000000 --rate 100000 --acks all --linger-ms "${LINGER_MS:-0}"

fi

section "Longest produce stall when a leader is SIGKILLed (session timeout ${SESSION_MS:-2000} ms)"
skein_setup_venv
.venv/bin/python perf/failover_stall.py "$BOOT" stall 20000 20 6 \
    1="${BROKER_PID[1]}" 2="${BROKER_PID[2]}" 3="${BROKER_PID[3]}" --json "$OUT/failover-stall.json"
echo "reports in $OUT"
