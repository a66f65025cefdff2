#!/usr/bin/env python3
"""A confluent-kafka consumer in a consumer group (subscribe, not assign), for `skein groups` tests.

    groups_cli_consumer.py --bootstrap HOST:PORT --topic T --group G
                      [--count N] [--stop-file PATH] [--client-id ID] [--timeout S]

Joins group G subscribed to T, with auto-commit off, then:
- with --count N: reads N records (from the committed offsets, else the beginning) and commits
  the positions synchronously;
- with --stop-file PATH: stays in the group (polling, so it heartbeats, committing nothing) until
  PATH exists;
then closes, leaving the group. Everything is bounded by --timeout. Prints a JSON summary with
what was read, committed and assigned; exits 1 if any step failed.
"""

import argparse
import os
import sys

from common import Deadline, finish, log


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--stop-file")
    parser.add_argument("--client-id", default="skein-test-group-consumer")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    from confluent_kafka import Consumer, KafkaException

    deadline = Deadline(args.timeout)
    errors, consumed, committed, assignment = [], {}, {}, []
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    })
    try:
        consumer.subscribe([args.topic])
        total = 0
        while total < args.count and not deadline.expired():
            for msg in consumer.consume(num_messages=100, timeout=min(1.0, deadline.left())):
                if msg.error():
                    errors.append("consume error: %s" % msg.error())
                    continue
                consumed[msg.partition()] = consumed.get(msg.partition(), 0) + 1
                total += 1
        if total < args.count:
            errors.append("read %d of %d records before the deadline" % (total, args.count))
        elif args.count:
            try:
                for tp in consumer.commit(asynchronous=False) or []:
                    if tp.error:
                        errors.append("commit of %s[%d]: %s" % (tp.topic, tp.partition, tp.error))
                    elif tp.offset >= 0:  # a partition read nothing from has no position
                        committed[tp.partition] = tp.offset
            except KafkaException as e:
                errors.append("commit failed: %s" % e)
        if args.stop_file:
            while not os.path.exists(args.stop_file) and not deadline.expired():
                consumer.poll(0.2)
                assignment = sorted(tp.partition for tp in consumer.assignment())
            if not os.path.exists(args.stop_file):
                errors.append("%s did not appear before the deadline" % args.stop_file)
        assignment = sorted(tp.partition for tp in consumer.assignment())
    finally:
        log("closing: leaving group %s" % args.group)
        consumer.close()
    finish({
        "consumed": sum(consumed.values()),
        "consumed_by_partition": {str(p): n for p, n in sorted(consumed.items())},
        "committed": {str(p): o for p, o in sorted(committed.items())},
        "assignment": assignment,
    }, errors)


if __name__ == "__main__":
    sys.exit(main())
