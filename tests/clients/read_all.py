#!/usr/bin/env python3
"""Read every partition of a topic from its start up to its high watermark (confluent-kafka,
assign, no consumer group), for tests that check what survived broker failures.

    read_all.py --bootstrap B --topic T [--out FILE] [--timeout 60] [--linger S]

Finds the partitions in metadata, asks each for its watermarks (ListOffsets, read_uncommitted, so
the high watermark itself), assigns them all from the low watermark and reads until every
partition's position reaches the high watermark it was given. With --linger S it goes on fetching
for S more seconds afterwards: whatever arrives then (offsets at or past the high watermark) is
listed under beyond_high_watermark, which must stay empty for a test that produced nothing
acknowledged-by-the-ISR meanwhile.

--out FILE gets {"topic", "partitions": {"<p>": [[offset, value], ...]}, "low_watermarks",
"high_watermarks", "beyond_high_watermark": {"<p>": [[offset, value], ...]}} (values decoded as
UTF-8, null for a null value). The last stdout line is a JSON summary: records and watermarks
per partition, how many records past the high watermark were seen, and errors. Exits 1 when it
cannot read up to every high watermark within --timeout, or offsets go backwards.
"""

import argparse
import json
import sys
import time

from common import Deadline, fail, finish, log


def decode(value):
    return None if value is None else value.decode("utf-8", errors="replace")


def partitions_of(consumer, topic, deadline):
    """The topic's partition ids from metadata, retried until the deadline."""
    last = None
    while not deadline.expired():
        try:
            md = consumer.list_topics(topic, timeout=min(5.0, max(0.5, deadline.left())))
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                return sorted(t.partitions)
            last = t.error if t is not None else "not in metadata"
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.2)
    fail("topic %s: no partitions in metadata within %ss (last: %s)" % (topic, deadline.seconds, last),
         topic=topic)


def watermarks(consumer, tp, deadline):
    last = None
    while not deadline.expired():
        try:
            return consumer.get_watermark_offsets(tp, timeout=min(5.0, max(0.5, deadline.left())), cached=False)
        except Exception as e:  # noqa: BLE001 - e.g. no leader right after a failover; retried
            last = e
        time.sleep(0.2)
    fail("topic %s partition %d: no watermarks within %ss (last: %r)" % (tp.topic, tp.partition, deadline.seconds, last),
         topic=tp.topic)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", metavar="FILE", help="write every record read here (JSON)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole read")
    parser.add_argument("--linger", type=float, default=0.0,
                        help="seconds to go on fetching after reaching every high watermark")
    args = parser.parse_args()

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    deadline = Deadline(args.timeout)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "skein-test-read-all",
        "client.id": "skein-test-read-all",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_uncommitted",
        "enable.partition.eof": True,
        "check.crcs": True,
        "fetch.wait.max.ms": 100,
    })
    errors = []
    try:
        ids = partitions_of(consumer, args.topic, deadline)
        low, high = {}, {}
        for p in ids:
            low[p], high[p] = watermarks(consumer, TopicPartition(args.topic, p), deadline)
        records = {p: [] for p in ids}
        beyond = {p: [] for p in ids}
        next_offset = dict(low)
        redelivered = 0
        done = {p for p in ids if high[p] <= low[p]}
        consumer.assign([TopicPartition(args.topic, p, low[p]) for p in ids])

        linger_end = None
        while True:
            if len(done) == len(ids) and linger_end is None:
                linger_end = time.monotonic() + args.linger
            if linger_end is not None and time.monotonic() >= linger_end:
                break
            if deadline.expired():
                for p in ids:
                    if p not in done:
                        errors.append("partition %d: read up to offset %d of high watermark %d within %ss"
                                      % (p, next_offset[p], high[p], args.timeout))
                break
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            p = msg.partition()
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if p in high and msg.offset() >= high[p]:
                        done.add(p)
                else:
                    log("consumer error: %s" % msg.error())
                continue
            offset = msg.offset()
            if offset < next_offset[p]:
                # The client fetched a range again (e.g. after a leader change): not the broker's log.
                redelivered += 1
                continue
            next_offset[p] = offset + 1
            if offset < high[p]:
                records[p].append([offset, decode(msg.value())])
            else:
                beyond[p].append([offset, decode(msg.value())])
            if next_offset[p] >= high[p]:
                done.add(p)
    finally:
        consumer.close()

    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump({
                "topic": args.topic,
                "partitions": {str(p): records[p] for p in ids},
                "low_watermarks": {str(p): low[p] for p in ids},
                "high_watermarks": {str(p): high[p] for p in ids},
                "beyond_high_watermark": {str(p): beyond[p] for p in ids},
            }, out)
    summary = {
        "topic": args.topic,
        "records": {str(p): len(records[p]) for p in ids},
        "low_watermarks": {str(p): low[p] for p in ids},
        "high_watermarks": {str(p): high[p] for p in ids},
        "beyond_high_watermark": sum(len(b) for b in beyond.values()),
        "redelivered": redelivered,
    }
    log("read %d records from %d partitions of %s" % (sum(len(r) for r in records.values()), len(ids), args.topic))
    finish(summary, errors)


if __name__ == "__main__":
    sys.exit(main())
