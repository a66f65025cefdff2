#!/usr/bin/env python3
"""Produce and fetch throughput of one skein broker, driven by a real client (confluent-kafka).

    perf/client_throughput.py --bootstrap 127.0.0.1:9092 --topic perf --records 2000000 --record-size 100

Produces --records records of --record-size bytes (acks=1, no compression, 1 MiB batches) as fast
as librdkafka will take them, waits for every delivery report, then consumes the whole topic from
the beginning. Prints one JSON line with records/s and MB/s for both phases. The topic must exist.
This measures the broker *and* the Python client; `skein bench` (issue 3) will measure the broker
alone.
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()

    payload = b"x" * args.record_size
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "1",
        "enable.idempotence": False,
        "linger.ms": 5,
        "batch.size": 1_048_576,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "compression.type": "none",
    })
    failed = 0

    def report(err, _msg):
        nonlocal failed
        if err is not None:
            failed += 1

    started = time.monotonic()
    for i in range(args.records):
        while True:
            try:
                producer.produce(args.topic, payload, partition=i % args.partitions, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    produce_s = time.monotonic() - started
    if remaining or failed:
        sys.exit(f"produce: {remaining} undelivered, {failed} failed")

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "unused",  # assign() below: no group protocol is used
        "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "fetch.wait.max.ms": 100,
    })
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(args.partitions)])
    consumed = 0
    started = time.monotonic()
    deadline = started + 300
    while consumed < args.records and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error() is None:
                consumed += 1
    fetch_s = time.monotonic() - started
    consumer.close()
    if consumed != args.records:
        sys.exit(f"fetch: consumed {consumed} of {args.records}")

    mb = args.records * args.record_size / 1e6
    print(json.dumps({
        "records": args.records,
        "record_size": args.record_size,
        "produce_records_per_s": round(args.records / produce_s),
        "produce_mb_per_s": round(mb / produce_s, 1),
        "fetch_records_per_s": round(args.records / fetch_s),
        "fetch_mb_per_s": round(mb / fetch_s, 1),
    }))


if __name__ == "__main__":
    main()
