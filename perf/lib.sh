# Shared by the perf scenarios (sourced after scripts/lib/setup.sh): a scratch directory, a 1-node
# ZooKeeper and one broker on fixed loopback ports (ZooKeeper 25181, Kafka 25092), all stopped by
# pid when the script exits.
#   perf_start_zookeeper OUT            ZooKeeper, log in OUT/zookeeper.log
#   perf_start_broker OUT SHARDS TUNING the broker ($SKEIN) with SHARDS shards and tuning profile
#                                       TUNING; log in OUT/broker.log; waits until it answers
WORK=$(mktemp -d /tmp/skein-perf-XXXXXX)
PIDS=()
B=127.0.0.1:25092

perf_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A clean broker stop may fsync gigabytes of dirty data: give it time before SIGKILL.
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap perf_cleanup EXIT

perf_start_zookeeper() {
    local out=$1
    mkdir -p "$WORK/zk"
    cat >"$WORK/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$WORK/zk
clientPort=25181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
CFG
    java -Xmx256m -cp "$(skein_zk_classpath)" org.apache.zookeeper.server.quorum.QuorumPeerMain \
        "$WORK/zk/zoo.cfg" >"$out/zookeeper.log" 2>&1 &
    PIDS+=($!)
    sleep 2
}

perf_start_broker() {
    local out=$1 shards=$2 tuning=$3
    cat >"$WORK/broker.toml" <<CFG
broker.id = 1
listeners = "PLAINTEXT://$B"
log.dirs = "$WORK/data"
zookeeper.connect = "127.0.0.1:25181"
num.shards = $shards
tuning.dir = "$tuning"
CFG
    "$SKEIN" broker --config "$WORK/broker.toml" >"$out/broker.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do "$SKEIN" topics list --bootstrap $B >/dev/null 2>&1 && return; sleep 0.2; done
    echo "the broker did not answer; see $out/broker.log" >&2
    exit 1
}
