#!/usr/bin/env bash
# Captures the request frames real clients send (kcat, confluent-kafka, kafka-python, aiokafka)
# into fuzz/corpus/clients/, as seeds for tests/fuzz_requests.rs. Starts its own ZooKeeper and
# broker on loopback (see perf/lib.sh); the broker advertises a relay (fuzz/capture_proxy.py) so
# that every connection, after bootstrap too, goes through it. Run by hand after scripts/test has
# built skein and the venv: fuzz/capture.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/setup.sh
source perf/lib.sh
SKEIN=${SKEIN:-target/release/skein}
PY=.venv/bin/python
OUT=fuzz/corpus/clients
RELAY=25093
mkdir -p "$OUT" "$WORK/logs"

perf_start_zookeeper "$WORK/logs"
cat >"$WORK/broker.toml" <<CFG
broker.id = 1
listeners = "PLAINTEXT://$B"
advertised.listeners = "PLAINTEXT://127.0.0.1:$RELAY"
log.dirs = "$WORK/data"
zookeeper.connect = "127.0.0.1:25181"
num.shards = 2
CFG
"$SKEIN" broker --config "$WORK/broker.toml" >"$WORK/logs/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do "$SKEIN" topics list --bootstrap $B >/dev/null 2>&1 && break; sleep 0.2; done

capture() {
    local name=$1
    shift
    $PY fuzz/capture_proxy.py --listen $RELAY --broker $B --out "$OUT" --prefix "$name" &
    local relay=$!
    sleep 0.5
    "$@" >/dev/null 2>&1 || echo "note: $name exited with $?" >&2
    kill $relay
    wait $relay 2>/dev/null || true
}

"$SKEIN" topics create --bootstrap $B --topic corpus --partitions 2 >/dev/null
R=127.0.0.1:$RELAY
capture kcat sh -c "seq 20 | kcat -b $R -t corpus -P -z lz4 && kcat -b $R -t corpus -C -e -o beginning && kcat -b $R -L"
for client in confluent kafka-python aiokafka; do
    for compression in none zstd; do
        "$SKEIN" topics create --bootstrap $B --topic "corpus-$client-$compression" --partitions 2 >/dev/null
        capture "$client-$compression" $PY tests/clients/produce_consume.py --bootstrap $R \
            --topic "corpus-$client-$compression" --partitions 2 --count 50 --client "$client" \
            --compression "$compression"
    done
done
# Consumer groups: each client subscribes, consumes and commits (group.initial.rebalance.delay.ms
# is the broker default here, so each run waits ~3 s for its first assignment).
for client in confluent kafka-python aiokafka; do
    capture "$client-group" $PY tests/clients/group_consumer.py --bootstrap $R \
        --topic "corpus-$client-none" --group "corpus-$client" --client "$client" \
        --max-records 50 --seconds 30
done
capture kcat-group kcat -b $R -G corpus-kcat -X auto.offset.reset=earliest -c 20 -q corpus
capture admin $PY tests/clients/admin.py create --bootstrap $R --topic corpus-admin --partitions 3 \
    --config retention.ms=1000
echo "captured $(ls "$OUT" | wc -l) distinct frames in $OUT"
