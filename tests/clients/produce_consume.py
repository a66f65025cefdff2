#!/usr/bin/env python3
"""Produce keyed messages with one real client, then read them all back and check them.

    produce_consume.py --bootstrap HOST:PORT --topic T --partitions N --count M
                       [--client confluent|kafka-python|aiokafka]
                       [--compression none|gzip|snappy|lz4|zstd] [--keys K] [--value-bytes B]

The topic must exist with N partitions and be empty. Produces M messages (keys k0..k{K-1}, values
'<key>:<seq>:...' with a per-key sequence number), waits for every ack (acks=all), then assigns all
partitions (no group), reads from the beginning up to the high watermarks and checks:
- as many records came back as were produced;
- each partition's offsets strictly increase (no duplicates);
- every key lives in one partition and its sequence numbers come back 0, 1, 2, ... in order;
- every produced value came back, at the offset its ack reported.
Prints a JSON summary; exits 1 on any failed check.
"""

import argparse
import asyncio
import sys
import time
from collections import defaultdict

from common import Deadline, fail, finish, log, message, parse_value

COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]


def kafka_python_version(args):
    """kafka-python probes the broker's version unless told one (--api-version 2.8)."""
    if not args.api_version:
        return {}
    return {"api_version": tuple(int(part) for part in args.api_version.split("."))}


# --- producers: each returns {(key, seq): (partition, offset)} and a list of errors ---------------

def produce_confluent(args, messages):
    from confluent_kafka import Producer

    acks, errors = {}, []
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "compression.type": args.compression,
        "acks": "all",
        "enable.idempotence": args.idempotence,
        "linger.ms": 5,
        "message.timeout.ms": int(args.timeout * 1000),
        "client.id": "skein-test-confluent",
    })

    def on_delivery(err, msg):
        ident = parse_value(msg.value())
        if err is not None:
            errors.append("delivery of %s failed: %s" % (ident, err))
        else:
            acks[ident] = (msg.partition(), msg.offset())

    for key, value in messages:
        while True:
            try:
                producer.produce(args.topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(args.timeout)
    if remaining:
        errors.append("%d messages still unacknowledged after %ss" % (remaining, args.timeout))
    return acks, errors


def produce_kafka_python(args, messages):
    from kafka import KafkaProducer

    acks, errors = {}, []
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        compression_type=None if args.compression == "none" else args.compression,
        acks="all",
        linger_ms=5,
        client_id="skein-test-kafka-python",
        request_timeout_ms=int(args.timeout * 1000),
        **kafka_python_version(args),
    )
    try:
        futures = [(parse_value(value), producer.send(args.topic, key=key, value=value))
                   for key, value in messages]
        producer.flush(timeout=args.timeout)
        for ident, future in futures:
            try:
                metadata = future.get(timeout=args.timeout)
                acks[ident] = (metadata.partition, metadata.offset)
            except Exception as e:  # noqa: BLE001 - any client error is a failed delivery
                errors.append("delivery of %s failed: %r" % (ident, e))
    finally:
        producer.close(timeout=10)
    return acks, errors


async def produce_aiokafka_async(args, messages):
    from aiokafka import AIOKafkaProducer

    acks, errors = {}, []
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        compression_type=None if args.compression == "none" else args.compression,
        acks="all",
        enable_idempotence=args.idempotence,
        linger_ms=5,
        client_id="skein-test-aiokafka",
        request_timeout_ms=int(args.timeout * 1000),
    )
    await asyncio.wait_for(producer.start(), args.timeout)
    try:
        pending = []
        for key, value in messages:
            pending.append((parse_value(value), await producer.send(args.topic, key=key, value=value)))
        for ident, future in pending:
            try:
                metadata = await asyncio.wait_for(future, args.timeout)
                acks[ident] = (metadata.partition, metadata.offset)
            except Exception as e:  # noqa: BLE001
                errors.append("delivery of %s failed: %r" % (ident, e))
    finally:
        await producer.stop()
    return acks, errors


def produce_aiokafka(args, messages):
    return asyncio.run(produce_aiokafka_async(args, messages))


# --- consumers: each returns [(partition, offset, key, value)] and a list of errors --------------

def consume_confluent(args, deadline):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    records, errors = [], []
    # confluent-kafka insists on a group.id, but assign() never joins the group and nothing is
    # committed, so only fetching is exercised.
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "skein-test-assign-only",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "client.id": "skein-test-confluent",
    })
    try:
        ends = {}
        for p in range(args.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p),
                                                       timeout=deadline.left(), cached=False)
            ends[p] = high
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
        positions = {p: 0 for p in ends}
        while any(positions[p] < ends[p] for p in ends) and not deadline.expired():
            for msg in consumer.consume(num_messages=1000, timeout=min(1.0, deadline.left())):
                if msg.error():
                    errors.append("consume error: %s" % msg.error())
                    continue
                records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                positions[msg.partition()] = msg.offset() + 1
        lagging = {p: (positions[p], ends[p]) for p in ends if positions[p] < ends[p]}
        if lagging:
            errors.append("timed out before reaching the high watermark: {partition: (position, end)} %s" % lagging)
    finally:
        consumer.close()
    return records, errors, ends


def consume_kafka_python(args, deadline):
    from kafka import KafkaConsumer, TopicPartition

    records, errors = [], []
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="skein-test-kafka-python",
        **kafka_python_version(args),
    )
    try:
        partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
        positions = {p: 0 for p in ends}
        while any(positions[p] < ends[p] for p in ends) and not deadline.expired():
            batches = consumer.poll(timeout_ms=int(min(1.0, deadline.left()) * 1000), max_records=1000)
            for tp, msgs in batches.items():
                for msg in msgs:
                    records.append((tp.partition, msg.offset, msg.key, msg.value))
                    positions[tp.partition] = msg.offset + 1
        lagging = {p: (positions[p], ends[p]) for p in ends if positions[p] < ends[p]}
        if lagging:
            errors.append("timed out before reaching the high watermark: {partition: (position, end)} %s" % lagging)
    finally:
        consumer.close()
    return records, errors, ends


async def consume_aiokafka_async(args, deadline):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    records, errors = [], []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="skein-test-aiokafka",
    )
    await asyncio.wait_for(consumer.start(), deadline.left())
    try:
        partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
        positions = {p: 0 for p in ends}
        while any(positions[p] < ends[p] for p in ends) and not deadline.expired():
            batches = await consumer.getmany(timeout_ms=int(min(1.0, deadline.left()) * 1000), max_records=1000)
            for tp, msgs in batches.items():
                for msg in msgs:
                    records.append((tp.partition, msg.offset, msg.key, msg.value))
                    positions[tp.partition] = msg.offset + 1
        lagging = {p: (positions[p], ends[p]) for p in ends if positions[p] < ends[p]}
        if lagging:
            errors.append("timed out before reaching the high watermark: {partition: (position, end)} %s" % lagging)
    finally:
        await consumer.stop()
    return records, errors, ends


def consume_aiokafka(args, deadline):
    return asyncio.run(consume_aiokafka_async(args, deadline))


CLIENTS = {
    "confluent": (produce_confluent, consume_confluent),
    "kafka-python": (produce_kafka_python, consume_kafka_python),
    "aiokafka": (produce_aiokafka, consume_aiokafka),
}


def check(args, acks, records):
    """Every check on the consumed records; returns a list of errors."""
    errors = []
    expected = {parse_value(message(i, args.keys, 0)[1]) for i in range(args.count)}

    if len(records) != args.count:
        errors.append("consumed %d records, produced %d" % (len(records), args.count))

    last_offset = {}
    key_partition = {}
    next_seq = defaultdict(int)
    seen = set()
    for partition, offset, key, value in records:
        if partition in last_offset and offset <= last_offset[partition]:
            errors.append("partition %d: offset %d after %d (duplicate or reordered)"
                          % (partition, offset, last_offset[partition]))
        last_offset[partition] = offset
        try:
            value_key, seq = parse_value(value)
        except (ValueError, UnicodeDecodeError):
            errors.append("partition %d offset %d: unparseable value %r" % (partition, offset, value[:60]))
            continue
        if key is None or key.decode() != value_key:
            errors.append("partition %d offset %d: key %r does not match value %r" % (partition, offset, key, value[:60]))
        ident = (value_key, seq)
        if ident in seen:
            errors.append("partition %d offset %d: %s received twice" % (partition, offset, ident))
        seen.add(ident)
        if key_partition.setdefault(value_key, partition) != partition:
            errors.append("key %s in partitions %d and %d" % (value_key, key_partition[value_key], partition))
        if seq != next_seq[value_key]:
            errors.append("key %s: got seq %d, expected %d (per-key order broken)" % (value_key, seq, next_seq[value_key]))
        next_seq[value_key] = seq + 1
        if ident in acks and acks[ident] != (partition, offset):
            errors.append("%s acked at (partition, offset) %s but read at %s" % (ident, acks[ident], (partition, offset)))

    missing = expected - seen
    if missing:
        errors.append("%d produced values never consumed, e.g. %s" % (len(missing), sorted(missing)[:5]))
    unexpected = seen - expected
    if unexpected:
        errors.append("%d consumed values never produced, e.g. %s" % (len(unexpected), sorted(unexpected)[:5]))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="confluent")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none")
    parser.add_argument("--partitions", type=int, required=True, help="the topic's partition count")
    parser.add_argument("--count", type=int, default=1000, help="messages to produce")
    parser.add_argument("--keys", type=int, default=10, help="distinct keys")
    parser.add_argument("--value-bytes", type=int, default=0, help="pad each value to this size")
    parser.add_argument("--idempotence", action="store_true",
                        help="enable idempotence for confluent/aiokafka (kafka-python 3.x has it on by default)")
    parser.add_argument("--api-version", default=None,
                        help="kafka-python only: skip version probing and assume this broker version, e.g. 2.8")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for each phase")
    args = parser.parse_args()
    if args.partitions < 1 or args.count < 0 or args.keys < 1:
        parser.error("--partitions and --keys must be >= 1, --count >= 0")

    summary = {"client": args.client, "compression": args.compression, "topic": args.topic,
               "partitions": args.partitions, "produced": args.count}
    produce, consume = CLIENTS[args.client]
    messages = [message(i, args.keys, args.value_bytes) for i in range(args.count)]

    started = time.monotonic()
    try:
        acks, errors = produce(args, messages)
    except Exception as e:  # noqa: BLE001 - report any client failure as JSON
        fail("produce with %s raised %r" % (args.client, e), **summary)
    summary["acked"] = len(acks)
    summary["produce_seconds"] = round(time.monotonic() - started, 3)
    if errors or len(acks) != args.count:
        errors.append("%d of %d messages acknowledged" % (len(acks), args.count))
        finish(summary, errors)
    log("produced %d messages with %s (%s)" % (args.count, args.client, args.compression))

    started = time.monotonic()
    try:
        records, errors, ends = consume(args, Deadline(args.timeout))
    except Exception as e:  # noqa: BLE001
        fail("consume with %s raised %r" % (args.client, e), **summary)
    summary["consume_seconds"] = round(time.monotonic() - started, 3)
    summary["consumed"] = len(records)
    summary["high_watermarks"] = {str(p): end for p, end in sorted(ends.items())}
    per_partition = defaultdict(int)
    for partition, *_ in records:
        per_partition[partition] += 1
    summary["per_partition"] = {str(p): n for p, n in sorted(per_partition.items())}
    errors += check(args, acks, records)
    finish(summary, errors)


if __name__ == "__main__":
    sys.exit(main())
