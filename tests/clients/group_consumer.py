#!/usr/bin/env python3
"""A consumer in a consumer group (subscribe, not assign), with one real client.

    group_consumer.py --bootstrap HOST:PORT --topic T --group G
                      [--client confluent|kafka-python|aiokafka] [--instance-id ID]
                      [--session-timeout-ms MS] [--seconds S] [--max-records N]
                      [--stop-when-idle S]

Reads from the earliest offset when the group has no commit, and commits synchronously after
every batch it has handled. Prints one JSON line per event on stdout, flushed at once, so a test
can follow it while it runs (and see everything it did even if it is SIGKILLed):
    {"ev": "assign", "partitions": [0, 3]}       the assignment changed
    {"ev": "rec", "p": 0, "o": 17, "v": "..."}    a record was consumed
    {"ev": "commit", "offsets": {"0": 18}}        offsets were committed (next offset to read)
    {"ev": "done", "records": N, ...}             it stopped (SIGTERM, --seconds, --max-records or
                                                  --stop-when-idle); it left the group first
Exits 0 unless the client failed.
"""

import argparse
import asyncio
import json
import signal
import sys
import time

from common import log

stopping = False


def on_sigterm(_signum, _frame):
    global stopping
    stopping = True


def emit(event):
    print(json.dumps(event, sort_keys=True), flush=True)


class Run:
    """Counts, stop conditions and the events every client reports the same way."""

    def __init__(self, args):
        self.args = args
        self.records = 0
        self.assignment = None
        self.started = time.monotonic()
        self.last_record = None

    def assigned(self, partitions):
        partitions = sorted(partitions)
        if partitions != self.assignment:
            self.assignment = partitions
            emit({"ev": "assign", "partitions": partitions})

    def record(self, partition, offset, value):
        self.records += 1
        self.last_record = time.monotonic()
        emit({"ev": "rec", "p": partition, "o": offset, "v": value.decode("utf-8", "replace")})

    def committed(self, offsets):
        if offsets:
            emit({"ev": "commit", "offsets": {str(p): o for p, o in sorted(offsets.items())}})

    def should_stop(self):
        a = self.args
        now = time.monotonic()
        if stopping or now - self.started >= a.seconds:
            return True
        if a.max_records and self.records >= a.max_records:
            return True
        if a.stop_when_idle and self.last_record is not None:
            return now - self.last_record >= a.stop_when_idle
        return False

    def done(self):
        emit({"ev": "done", "records": self.records, "assignment": self.assignment or []})


def run_confluent(args, run):
    from confluent_kafka import Consumer, KafkaException

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": max(100, args.session_timeout_ms // 6),
        "client.id": "skein-test-group-confluent",
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)

    def on_assign(c, partitions):
        # The callback sees the new assignment; c.assignment() does not hold it yet.
        run.assigned([p.partition for p in partitions])

    def on_revoke(c, partitions):
        run.assigned([])

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not run.should_stop():
            messages = consumer.consume(num_messages=100, timeout=0.2)
            if not messages:
                continue
            latest = {}
            for m in messages:
                if m.error():
                    log("consumer error:", m.error())
                    continue
                run.record(m.partition(), m.offset(), m.value() or b"")
                latest[m.partition()] = m.offset() + 1
            if latest:
                try:
                    consumer.commit(asynchronous=False)
                    run.committed(latest)
                except KafkaException as e:
                    log("commit failed:", e)
    finally:
        consumer.close()
    run.done()


def run_kafka_python(args, run):
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.errors import CommitFailedError

    kwargs = {}
    if args.instance_id:
        kwargs["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=max(100, args.session_timeout_ms // 6),
        client_id="skein-test-group-kafka-python",
        **kwargs,
    )
    try:
        while not run.should_stop():
            batches = consumer.poll(timeout_ms=200)
            run.assigned([tp.partition for tp in consumer.assignment()])
            latest = {}
            for tp, records in batches.items():
                for r in records:
                    run.record(tp.partition, r.offset, r.value or b"")
                    latest[tp.partition] = r.offset + 1
            if latest:
                offsets = {
                    TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in latest.items()
                }
                try:
                    consumer.commit(offsets)
                    run.committed(latest)
                except CommitFailedError as e:
                    log("commit failed:", e)
    finally:
        consumer.close()
    run.done()


def run_aiokafka(args, run):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import CommitFailedError

    async def main():
        consumer = AIOKafkaConsumer(
            args.topic,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=max(100, args.session_timeout_ms // 6),
            client_id="skein-test-group-aiokafka",
        )
        await consumer.start()
        try:
            while not run.should_stop():
                batches = await consumer.getmany(timeout_ms=200)
                run.assigned([tp.partition for tp in consumer.assignment()])
                latest = {}
                for tp, records in batches.items():
                    for r in records:
                        run.record(tp.partition, r.offset, r.value or b"")
                        latest[tp.partition] = r.offset + 1
                if latest:
                    offsets = {TopicPartition(args.topic, p): o for p, o in latest.items()}
                    try:
                        await consumer.commit(offsets)
                        run.committed(latest)
                    except CommitFailedError as e:
                        log("commit failed:", e)
        finally:
            await consumer.stop()

    asyncio.run(main())
    run.done()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--client", default="confluent",
                        choices=["confluent", "kafka-python", "aiokafka"])
    parser.add_argument("--instance-id")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--max-records", type=int, default=0)
    parser.add_argument("--stop-when-idle", type=float, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    run = Run(args)
    {"confluent": run_confluent, "kafka-python": run_kafka_python,
     "aiokafka": run_aiokafka}[args.client](args, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
