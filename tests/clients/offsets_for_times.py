#!/usr/bin/env python3
"""ListOffsets by timestamp and by earliest/latest, checked against what was produced.

    offsets_for_times.py --bootstrap B --topic T [--partitions N] [--batches 5] [--per-batch 20]
                         [--value-bytes B]

The topic must exist with N partitions and be empty. Into every partition, produces --batches
batches (flushed one by one, so each is its own record batch) of messages with explicit
CreateTime timestamps: pairs of messages share a timestamp, and timestamps step 1 s, starting an
hour ago. Then checks, per partition:
- get_watermark_offsets gives (first acked offset, last acked offset + 1);
- offsets_for_times(t) is the first offset whose timestamp >= t, for t before the first message,
  equal to a shared timestamp (must give the first of the pair), between two timestamps, equal to
  the last, and after the last (must give -1, Kafka's "no such offset");
- consumed messages carry the timestamps they were produced with.
Prints a JSON summary; exits 1 on any failed check.
"""

import argparse
import sys
import time

from common import Deadline, fail, finish, log


def main():
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1, help="the topic's partition count")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--per-batch", type=int, default=20)
    parser.add_argument("--value-bytes", type=int, default=0, help="pad each value to this size")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for each phase")
    args = parser.parse_args()
    if args.batches < 1 or args.per_batch < 2 or args.partitions < 1:
        parser.error("--batches >= 1, --per-batch >= 2 and --partitions >= 1 please")

    count = args.batches * args.per_batch
    base_ms = (int(time.time()) - 3600) * 1000
    timestamps = [base_ms + (i // 2) * 1000 for i in range(count)]
    summary = {"topic": args.topic, "partitions": args.partitions, "per_partition": count,
               "first_timestamp": timestamps[0], "last_timestamp": timestamps[-1]}

    # Produce: acked[partition] = [(offset, timestamp)] in produce order.
    acked = {p: [] for p in range(args.partitions)}
    errors = []
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 50,
                         "message.timeout.ms": int(args.timeout * 1000), "client.id": "skein-test-times"})

    def on_delivery(err, msg):
        if err is not None:
            errors.append("delivery to partition %d failed: %s" % (msg.partition(), err))
        else:
            # The timestamp we produced (from the key), not the report's: that is what we check.
            i = int(msg.key()[1:])
            acked[msg.partition()].append((msg.offset(), timestamps[i]))

    for batch in range(args.batches):
        for p in range(args.partitions):
            for j in range(args.per_batch):
                i = batch * args.per_batch + j
                value = (b"message %d " % i).ljust(args.value_bytes, b"x")
                producer.produce(args.topic, partition=p, key=b"t%d" % i, value=value,
                                 timestamp=timestamps[i], on_delivery=on_delivery)
        if producer.flush(args.timeout):
            errors.append("batch %d not fully acknowledged within %ss" % (batch, args.timeout))
            break
    if errors:
        finish(summary, errors)
    log("produced %d messages into each of %d partitions" % (count, args.partitions))

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "skein-test-times",
                         "enable.auto.commit": False, "client.id": "skein-test-times"})
    results = {}
    try:
        for p in range(args.partitions):
            entries = sorted(acked[p])
            offsets = [offset for offset, _ in entries]
            if len(entries) != count:
                errors.append("partition %d: %d acks for %d messages" % (p, len(entries), count))
                continue
            if offsets != list(range(offsets[0], offsets[0] + count)):
                errors.append("partition %d: acked offsets not contiguous: %s..." % (p, offsets[:10]))
            tp = TopicPartition(args.topic, p)
            low, high = consumer.get_watermark_offsets(tp, timeout=args.timeout, cached=False)
            if (low, high) != (offsets[0], offsets[-1] + 1):
                errors.append("partition %d: watermarks (%d, %d), expected (%d, %d)"
                              % (p, low, high, offsets[0], offsets[-1] + 1))

            def expected(target):
                return next((offset for offset, ts in entries if ts >= target), -1)

            mid = count // 2
            targets = {
                "before_first": timestamps[0] - 60_000,
                "first": timestamps[0],
                "shared_pair": timestamps[mid - (mid % 2)],
                "between": timestamps[mid] + 500,
                "last": timestamps[-1],
                "after_last": timestamps[-1] + 1,
            }
            query = [TopicPartition(args.topic, p, target) for target in targets.values()]
            # One request per target: offsets_for_times takes one timestamp per partition.
            answers = {}
            for name, tp_query in zip(targets, query):
                [answer] = consumer.offsets_for_times([tp_query], timeout=args.timeout)
                if answer.error:
                    errors.append("partition %d %s: error %s" % (p, name, answer.error))
                answers[name] = answer.offset
                want = expected(targets[name])
                if answer.offset != want:
                    errors.append("partition %d: offsets_for_times(%s=%d) = %d, expected %d"
                                  % (p, name, targets[name], answer.offset, want))
            results[str(p)] = {"watermarks": [low, high], "offsets_for_times": answers}

            # The messages carry the timestamps they were produced with.
            consumer.assign([TopicPartition(args.topic, p, offsets[0])])
            seen = {}
            deadline = Deadline(args.timeout)
            while len(seen) < count and not deadline.expired():
                for msg in consumer.consume(num_messages=500, timeout=min(1.0, deadline.left())):
                    if msg.error():
                        errors.append("partition %d consume error: %s" % (p, msg.error()))
                        continue
                    seen[msg.offset()] = msg.timestamp()
            consumer.unassign()
            for offset, ts in entries:
                got = seen.get(offset)
                if got is None:
                    errors.append("partition %d: offset %d not consumed" % (p, offset))
                    break
                if got != (TIMESTAMP_CREATE_TIME, ts):
                    errors.append("partition %d offset %d: timestamp %s, expected (CreateTime, %d)"
                                  % (p, offset, got, ts))
                    break
    except Exception as e:  # noqa: BLE001 - report any client failure as JSON
        fail("client call raised %r" % (e,), **summary)
    finally:
        consumer.close()

    summary["results"] = results
    finish(summary, errors)


if __name__ == "__main__":
    sys.exit(main())
