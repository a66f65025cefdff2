#!/usr/bin/env python3
"""Produce sequenced values with an idempotent acks=all producer (confluent-kafka) and write down
every one the cluster acknowledged, for tests that kill brokers under it and then check that
nothing acknowledged was lost, written twice or reordered.

    acked_producer.py --bootstrap B --topic T --partitions N --acked FILE
                      [--seconds 60] [--stop-file PATH] [--rate 1000] [--count M]
                      [--partition P] [--prefix run] [--acks all|1]
                      [--no-idempotence] [--retries R] [--message-timeout-ms 120000]
                      [--flush-seconds 30]

Values are '<prefix>:<partition>:<seq>', seq counting each partition's messages from 0; messages
go round-robin to partitions 0..N-1 (explicit partition, so per-partition order is the produce
order), or all to --partition P, at most --rate a second (0: as fast as the client takes them).
It stops producing after --seconds, after --count messages, once --stop-file exists, or on
SIGTERM/SIGINT; then it waits up to --flush-seconds (5 after a signal) for the outstanding
delivery reports. So it never runs longer than --seconds + --flush-seconds (plus start-up).

Every acknowledged delivery is appended to FILE, as the report arrives, as one line
'partition offset value unix_time'. The last stdout line is a JSON summary: produced, acked,
acked_per_partition, failed (count per error name), failures (the first few, each with its
latency from produce() to the report), fatal (the producer's fatal error, if it hit one),
outstanding (messages with no report when it gave up), longest_ack_gap_s (per partition: the
longest time between two acknowledgements, a produce stall), stopped_by and seconds.
Exits 0 when it ran to the end, whatever the deliveries (the caller judges those); 1 on a fatal
producer error or messages still outstanding after the flush.
"""

import argparse
import os
import signal
import sys
import time

from common import emit, log


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True, help="the topic's partition count")
    parser.add_argument("--acked", required=True, metavar="FILE", help="acknowledged deliveries go here")
    parser.add_argument("--seconds", type=float, default=60.0, help="produce for at most this long")
    parser.add_argument("--stop-file", metavar="PATH", help="stop producing once this file exists")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages a second (0: unlimited)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: no limit)")
    parser.add_argument("--partition", type=int, help="produce to this partition only")
    parser.add_argument("--prefix", default="run", help="first field of every value (no ':' or spaces)")
    parser.add_argument("--acks", default="all", choices=["all", "1"])
    parser.add_argument("--no-idempotence", action="store_true")
    parser.add_argument("--retries", type=int, help="librdkafka retries (default: its own)")
    parser.add_argument("--message-timeout-ms", type=int, default=120000)
    parser.add_argument("--flush-seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    if args.partition is not None and not 0 <= args.partition < args.partitions:
        parser.error("--partition must be in 0..%d" % (args.partitions - 1))
    if ":" in args.prefix or " " in args.prefix or not args.prefix:
        parser.error("--prefix must be a non-empty word without ':' or spaces")
    return args


def main():
    args = parse_args()
    from confluent_kafka import Producer

    stop = {"why": None}

    def on_signal(signum, _frame):
        stop["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Line-buffered: every acknowledgement is in the file as soon as its report is handled.
    acked_file = open(args.acked, "a", buffering=1, encoding="utf-8")
    sent_at = {}
    acked_per_partition = {}
    last_ack_at = {}
    longest_gap = {}
    failed = {}
    failures = []
    fatal = []
    counts = {"acked": 0}

    def on_delivery(err, msg):
        now = time.time()
        value = msg.value().decode()
        started = sent_at.pop(value, now)
        partition = msg.partition()
        if err is None:
            acked_file.write("%d %d %s %.3f\n" % (partition, msg.offset(), value, now))
            counts["acked"] += 1
            acked_per_partition[partition] = acked_per_partition.get(partition, 0) + 1
            if partition in last_ack_at:
                gap = now - last_ack_at[partition]
                longest_gap[partition] = max(longest_gap.get(partition, 0.0), gap)
            last_ack_at[partition] = now
        else:
            name = err.name()
            failed[name] = failed.get(name, 0) + 1
            if len(failures) < 20:
                failures.append({"partition": partition, "value": value, "error": name,
                                 "message": err.str(), "latency_s": round(now - started, 3)})
            log("delivery of %s failed after %.2fs: %s" % (value, now - started, err))

    def on_error(err):
        if err.fatal():
            fatal.append("%s: %s" % (err.name(), err.str()))
            log("FATAL producer error: %s" % err)
        else:
            # Transport errors while brokers are killed are expected; librdkafka recovers.
            log("client error: %s" % err)

    config = {
        "bootstrap.servers": args.bootstrap,
        "client.id": "skein-test-acked-producer",
        "acks": args.acks,
        "enable.idempotence": not args.no_idempotence,
        "linger.ms": 5,
        "message.timeout.ms": args.message_timeout_ms,
        "request.timeout.ms": 10000,
        "topic.metadata.refresh.interval.ms": 5000,
        "error_cb": on_error,
    }
    if args.retries is not None:
        config["retries"] = args.retries
    producer = Producer(config)

    partitions = [args.partition] if args.partition is not None else list(range(args.partitions))
    seq = {p: 0 for p in partitions}
    produced = 0
    started = time.monotonic()
    stopped_by = None
    while stopped_by is None:
        elapsed = time.monotonic() - started
        if stop["why"]:
            stopped_by = stop["why"]
        elif fatal:
            stopped_by = "fatal error"
        elif elapsed >= args.seconds:
            stopped_by = "time limit"
        elif args.count and produced >= args.count:
            stopped_by = "count"
        elif args.stop_file and os.path.exists(args.stop_file):
            stopped_by = "stop file"
        if stopped_by:
            break
        due = int(elapsed * args.rate) + 1 if args.rate > 0 else produced + 1000
        if args.count:
            due = min(due, args.count)
        while produced < due:
            p = partitions[produced % len(partitions)]
            value = "%s:%d:%d" % (args.prefix, p, seq[p])
            try:
                producer.produce(args.topic, value=value.encode(), partition=p, on_delivery=on_delivery)
            except BufferError:
                break  # the local queue is full: let poll() drain it
            sent_at[value] = time.time()
            seq[p] += 1
            produced += 1
        producer.poll(0.01)

    # Wait for the outstanding reports, in short slices so a signal shortens the wait.
    flush_end = time.monotonic() + args.flush_seconds
    while len(producer) > 0 and time.monotonic() < flush_end:
        if stop["why"]:
            flush_end = min(flush_end, time.monotonic() + 5.0)
            stop["why"] = None
        producer.flush(0.5)
    outstanding = len(producer)
    acked_file.close()

    summary = {
        "topic": args.topic,
        "produced": produced,
        "acked": counts["acked"],
        "acked_per_partition": {str(p): n for p, n in sorted(acked_per_partition.items())},
        "failed": failed,
        "failures": failures,
        "fatal": fatal[0] if fatal else None,
        "outstanding": outstanding,
        "longest_ack_gap_s": {str(p): round(g, 3) for p, g in sorted(longest_gap.items())},
        "stopped_by": stopped_by,
        "seconds": round(time.monotonic() - started, 3),
    }
    summary["ok"] = not fatal and outstanding == 0
    log("produced %d, acknowledged %d, failed %s, outstanding %d, stopped by %s"
        % (produced, counts["acked"], failed or 0, outstanding, stopped_by))
    emit(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
