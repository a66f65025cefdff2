#!/usr/bin/env python3
"""Topic administration with confluent-kafka's AdminClient (the Admin API a real client speaks).

    admin.py create --bootstrap B --topic T --partitions N [--replication-factor R]
                    [--config retention.ms=60000 ...] [--expect-error TOPIC_ALREADY_EXISTS] [--no-wait]
    admin.py delete --bootstrap B --topic T [--expect-error UNKNOWN_TOPIC_OR_PART] [--no-wait]
    admin.py describe-configs --bootstrap B --topic T [--expect retention.ms=60000 ...]
    admin.py describe --bootstrap B --topic T          (partitions: leader, replicas, isr)
    admin.py list --bootstrap B

Prints a JSON summary; exits 1 when the call fails (or, with --expect-error, when it does not fail
with that error) or an --expect does not hold. create waits (unless --no-wait) until metadata shows
every partition with a leader; delete waits until the topic is gone from metadata.
"""

import argparse
import sys
import time

from common import Deadline, emit, fail, finish, log


def admin_client(args):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": args.bootstrap, "client.id": "skein-test-admin"})


def error_name(exc):
    """The Kafka error name (e.g. TOPIC_ALREADY_EXISTS) inside a confluent-kafka exception."""
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "name"):
        return exc.args[0].name()
    return repr(exc)


def parse_pairs(pairs, flag):
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit("%s wants KEY=VALUE, got %r" % (flag, pair))
        key, value = pair.split("=", 1)
        result[key] = value
    return result


def topic_metadata(admin, topic, timeout):
    metadata = admin.list_topics(timeout=timeout)
    return metadata.topics.get(topic)


def describe_partitions(topic_md):
    return {
        str(p.id): {"leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs),
                    "error": p.error.name() if p.error else None}
        for p in sorted(topic_md.partitions.values(), key=lambda p: p.id)
    }


def wait_for(what, deadline, check):
    last = None
    while not deadline.expired():
        try:
            if check():
                return None
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.2)
    return "timed out after %ss waiting for %s (last error: %r)" % (deadline.seconds, what, last)


def expected_error_outcome(summary, expect_error, exc):
    """Finishes the script when --expect-error was given; returns otherwise."""
    if not expect_error:
        return
    if exc is None:
        finish(summary, ["expected error %s, but the call succeeded" % expect_error])
    got = error_name(exc)
    summary["error_name"] = got
    finish(summary, [] if got == expect_error else ["expected error %s, got %s" % (expect_error, got)])


def cmd_create(args):
    from confluent_kafka.admin import NewTopic

    admin = admin_client(args)
    configs = parse_pairs(args.config, "--config")
    summary = {"command": "create", "topic": args.topic, "partitions": args.partitions,
               "replication_factor": args.replication_factor, "configs": configs}
    new_topic = NewTopic(args.topic, num_partitions=args.partitions,
                         replication_factor=args.replication_factor, config=configs)
    futures = admin.create_topics([new_topic], operation_timeout=args.timeout, request_timeout=args.timeout)
    try:
        futures[args.topic].result(timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        expected_error_outcome(summary, args.expect_error, e)
        fail("create %s failed: %s" % (args.topic, error_name(e)), **summary)
    expected_error_outcome(summary, args.expect_error, None)

    errors = []
    if not args.no_wait:
        def ready():
            md = topic_metadata(admin, args.topic, 5)
            return (md is not None and md.error is None and len(md.partitions) == args.partitions
                    and all(p.leader >= 0 and p.error is None for p in md.partitions.values()))
        problem = wait_for("topic %s with %d led partitions" % (args.topic, args.partitions),
                           Deadline(args.timeout), ready)
        if problem:
            errors.append(problem)
        else:
            summary["metadata"] = describe_partitions(topic_metadata(admin, args.topic, 5))
    finish(summary, errors)


def cmd_delete(args):
    admin = admin_client(args)
    summary = {"command": "delete", "topic": args.topic}
    futures = admin.delete_topics([args.topic], operation_timeout=args.timeout, request_timeout=args.timeout)
    try:
        futures[args.topic].result(timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        expected_error_outcome(summary, args.expect_error, e)
        fail("delete %s failed: %s" % (args.topic, error_name(e)), **summary)
    expected_error_outcome(summary, args.expect_error, None)
    errors = []
    if not args.no_wait:
        problem = wait_for("topic %s to leave metadata" % args.topic, Deadline(args.timeout),
                           lambda: topic_metadata(admin, args.topic, 5) is None)
        if problem:
            errors.append(problem)
    finish(summary, errors)


def cmd_describe_configs(args):
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = admin_client(args)
    summary = {"command": "describe-configs", "topic": args.topic}
    resource = ConfigResource(ResourceType.TOPIC, args.topic)
    futures = admin.describe_configs([resource], request_timeout=args.timeout)
    try:
        entries = futures[resource].result(timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        fail("describe-configs %s failed: %s" % (args.topic, error_name(e)), **summary)
    summary["configs"] = {name: entry.value for name, entry in sorted(entries.items())}
    summary["defaults"] = sorted(name for name, entry in entries.items() if entry.is_default)
    errors = []
    for key, want in parse_pairs(args.expect, "--expect").items():
        got = summary["configs"].get(key)
        if got != want:
            errors.append("config %s: expected %r, got %r" % (key, want, got))
    finish(summary, errors)


def cmd_describe(args):
    admin = admin_client(args)
    summary = {"command": "describe", "topic": args.topic}
    try:
        md = topic_metadata(admin, args.topic, args.timeout)
    except Exception as e:  # noqa: BLE001
        fail("metadata request failed: %s" % error_name(e), **summary)
    if md is None:
        fail("topic %s not in metadata" % args.topic, **summary)
    if md.error is not None:
        fail("topic %s: %s" % (args.topic, md.error.name()), **summary)
    summary["partitions"] = describe_partitions(md)
    finish(summary, [])


def cmd_list(args):
    admin = admin_client(args)
    try:
        metadata = admin.list_topics(timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        fail("metadata request failed: %s" % error_name(e), command="list")
    summary = {
        "command": "list",
        "brokers": {str(b.id): "%s:%d" % (b.host, b.port) for b in metadata.brokers.values()},
        "controller_id": metadata.controller_id,
        "topics": {name: len(t.partitions) for name, t in sorted(metadata.topics.items())},
    }
    finish(summary, [])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, topic=True):
        p.add_argument("--bootstrap", required=True)
        if topic:
            p.add_argument("--topic", required=True)
        p.add_argument("--timeout", type=float, default=30.0, help="seconds")

    create = sub.add_parser("create", help="create a topic")
    common(create)
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--replication-factor", type=int, default=1)
    create.add_argument("--config", action="append", metavar="KEY=VALUE", help="topic config, repeatable")
    create.add_argument("--expect-error", metavar="NAME", help="succeed only if the broker answers this error")
    create.add_argument("--no-wait", action="store_true", help="do not wait for leaders in metadata")
    create.set_defaults(func=cmd_create)

    delete = sub.add_parser("delete", help="delete a topic")
    common(delete)
    delete.add_argument("--expect-error", metavar="NAME", help="succeed only if the broker answers this error")
    delete.add_argument("--no-wait", action="store_true", help="do not wait for the topic to leave metadata")
    delete.set_defaults(func=cmd_delete)

    describe_configs = sub.add_parser("describe-configs", help="print a topic's configs")
    common(describe_configs)
    describe_configs.add_argument("--expect", action="append", metavar="KEY=VALUE",
                                  help="check a config's value, repeatable")
    describe_configs.set_defaults(func=cmd_describe_configs)

    describe = sub.add_parser("describe", help="print a topic's partitions from metadata")
    common(describe)
    describe.set_defaults(func=cmd_describe)

    listing = sub.add_parser("list", help="list brokers and topics from metadata")
    common(listing, topic=False)
    listing.set_defaults(func=cmd_list)

    args = parser.parse_args()
    log("admin %s" % args.command)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
