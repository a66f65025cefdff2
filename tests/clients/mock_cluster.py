#!/usr/bin/env python3
"""Run librdkafka's built-in mock Kafka cluster (confluent-kafka's `test.mock.num.brokers`) for a
bounded time, so skein's tools can be tested against a Kafka-compatible broker that is not skein.

    mock_cluster.py [--brokers N] [--seconds S]

Prints the bootstrap servers (HOST:PORT,...) as its first stdout line, then serves until --seconds
pass or it is killed.
"""

import argparse
import sys
import time

from confluent_kafka import Producer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args()
    # The mock cluster lives inside this client instance; it listens on 127.0.0.1.
    holder = Producer({"test.mock.num.brokers": args.brokers, "bootstrap.servers": ""})
    metadata = holder.list_topics(timeout=10)
    print(",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values()), flush=True)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        holder.poll(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
