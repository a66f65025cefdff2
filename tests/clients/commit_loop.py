#!/usr/bin/env python3
"""Commits offsets for a group many times over, with confluent-kafka (simple commits: the
group has no members).

    commit_loop.py --bootstrap HOST:PORT --group G --topic T --partitions N --commits M

Commit i sets partition i % N to offset i. Prints a JSON summary with the last offset committed
per partition; exits 1 if any commit failed.
"""

import argparse

from common import finish


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--commits", type=int, required=True)
    args = parser.parse_args()

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "client.id": "skein-test-commit-loop",
    })
    errors, last = [], {}
    for i in range(args.commits):
        p = i % args.partitions
        try:
            consumer.commit(offsets=[TopicPartition(args.topic, p, i)], asynchronous=False)
            last[str(p)] = i
        except KafkaException as e:
            errors.append("commit %d: %s" % (i, e))
    consumer.close()
    finish({"last": last, "commits": args.commits}, errors)


if __name__ == "__main__":
    main()
