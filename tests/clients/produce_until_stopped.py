#!/usr/bin/env python3
"""Produce as fast as the broker takes it until the broker goes away, and report what it
acknowledged.

    produce_until_stopped.py --bootstrap HOST:PORT --topic T [--seconds S]

confluent-kafka, acks=all, small batches so many produce requests are in flight. Values are
'v-<n>'. Produces for up to S seconds; once deliveries have failed for 2 s in a row (the broker
stopped), it stops producing and waits for the outstanding reports. Prints a JSON summary whose
`acked` lists [partition, offset, value] for every acknowledged message; exits 1 if nothing was
acknowledged at all.
"""

import argparse

from common import Deadline, fail, finish, log


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    from confluent_kafka import Producer

    acked = []
    failures = []

    def report(error, msg):
        if error is None:
            acked.append([msg.partition(), msg.offset(), msg.value().decode()])
        else:
            failures.append(str(error))

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 1,
        "batch.num.messages": 50,
        "message.timeout.ms": 3000,
        "socket.timeout.ms": 3000,
        "enable.idempotence": False,
    })
    deadline = Deadline(args.seconds)
    n = 0
    first_failure_seen = None
    while not deadline.expired():
        try:
            producer.produce(args.topic, value=b"v-%d" % n, on_delivery=report)
            n += 1
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
        if failures and first_failure_seen is None:
            first_failure_seen = len(acked)
            failure_deadline = Deadline(2.0)
        if first_failure_seen is not None and failure_deadline.expired():
            break
    producer.flush(10)
    log("produced %d, acknowledged %d, failed %d" % (n, len(acked), len(failures)))
    if not acked:
        fail("nothing was acknowledged", produced=n, failed=len(failures))
    finish({"produced": n, "acked": acked, "failed": len(failures)}, [])


if __name__ == "__main__":
    main()
