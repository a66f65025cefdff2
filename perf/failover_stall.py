#!/usr/bin/env python3
"""Measures the longest produce stall when a partition's leader is SIGKILLed: an idempotent
acks=all confluent-kafka producer sends RATE records/s to TOPIC for DURATION seconds; after
KILL_AT seconds the leader of partition 0 (looked up in the cluster metadata) is killed with
SIGKILL using the broker-id -> pid map given. Reports the worst per-record delivery latency, the
longest gap between deliveries to partition 0, and whether every record was acknowledged.

usage: failover_stall.py BOOTSTRAP TOPIC RATE DURATION_S KILL_AT_S ID=PID [ID=PID...] [--json FILE]
"""
import json
import os
import signal
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    if out in args:
        args.remove(out)
    bootstrap, topic, rate, duration, kill_at = args[:5]
    rate, duration, kill_at = int(rate), float(duration), float(kill_at)
    pids = {int(k): int(v) for k, v in (a.split("=") for a in args[5:])}
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "message.timeout.ms": 60000,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        for future in admin.create_topics([NewTopic(topic, 6, 3)]).values():
            future.result(timeout=30)
        time.sleep(1)
    latencies = []
    p0_deliveries = []
    failed = [0]

    def delivered(err, msg, sent=None):
        now = time.monotonic()
        if err is not None:
            failed[0] += 1
            return
        latencies.append(now - sent)
        if msg.partition() == 0:
            p0_deliveries.append(now)

    start = time.monotonic()
    killed = None
    sent = 0
    while True:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= duration:
            break
        if killed is None and elapsed >= kill_at:
            leader = admin.list_topics(topic, timeout=5).topics[topic].partitions[0].leader
            os.kill(pids[leader], signal.SIGKILL)
            killed = (leader, time.monotonic())
        due = int(elapsed * rate)
        while sent < due:
            t = time.monotonic()
            try:
                producer.produce(topic, value=b"x" * 100, partition=sent % 6,
                                 on_delivery=lambda e, m, t=t: delivered(e, m, t))
                sent += 1
            except BufferError:
                producer.poll(0.01)
                break
        producer.poll(0.001)
    producer.flush(60)
    gaps = [b - a for a, b in zip(p0_deliveries, p0_deliveries[1:])]
    result = {
        "sent": sent,
        "acknowledged": len(latencies),
        "failed": failed[0],
        "killed_broker": killed[0] if killed else None,
        "max_delivery_latency_s": round(max(latencies), 3) if latencies else None,
        "longest_partition0_gap_s": round(max(gaps), 3) if gaps else None,
    }
    print(json.dumps(result))
    if out:
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
