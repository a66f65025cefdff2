#!/usr/bin/env python3
"""Print znodes as JSON, read with kazoo, for tests that check what brokers wrote to ZooKeeper.

    zk_dump.py --zk HOST:PORT[,HOST:PORT...] [--recursive] [--wait-exists] PATH...

For each PATH prints {"exists", "data" (parsed JSON when it parses, else text, null when empty),
"children", "ephemeral", "ephemeral_owner", "version"}; with --recursive, children are dumped
too (at most --max-nodes). Paths that do not exist are reported with "exists": false; that is not
a failure unless --require-exists. With --wait-exists, waits (bounded by --timeout) for each path.
Output: {"znodes": {path: {...}}, "ok": true}. Exits 1 when ZooKeeper cannot be reached.
"""

import argparse
import json
import logging
import sys
import time

from common import fail, finish


def decode(data):
    if not data:
        return None
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def dump(zk, path, recursive, out, budget):
    if len(out) >= budget:
        return
    stat = zk.exists(path)
    if stat is None:
        out[path] = {"exists": False}
        return
    try:
        data, stat = zk.get(path)
        children = sorted(zk.get_children(path))
    except Exception:  # noqa: BLE001 - deleted between exists() and get(): report as absent
        out[path] = {"exists": False}
        return
    out[path] = {
        "exists": True,
        "data": decode(data),
        "children": children,
        "ephemeral": stat.ephemeralOwner != 0,
        "ephemeral_owner": stat.ephemeralOwner,
        "version": stat.version,
    }
    if recursive:
        for child in children:
            dump(zk, path.rstrip("/") + "/" + child, recursive, out, budget)


def main():
    from kazoo.client import KazooClient

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zk", required=True, help="ZooKeeper connect string")
    parser.add_argument("--recursive", action="store_true")
    parser.add_argument("--max-nodes", type=int, default=2000)
    parser.add_argument("--wait-exists", action="store_true", help="wait for every path to exist")
    parser.add_argument("--require-exists", action="store_true", help="fail if a path does not exist")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_intermixed_args()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    zk = KazooClient(hosts=args.zk, timeout=10.0, read_only=False)
    try:
        zk.start(timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        fail("cannot connect to ZooKeeper %s: %r" % (args.zk, e), zk=args.zk)
    try:
        errors = []
        if args.wait_exists:
            end = time.monotonic() + args.timeout
            for path in args.paths:
                while zk.exists(path) is None and time.monotonic() < end:
                    time.sleep(0.1)
        out = {}
        for path in args.paths:
            dump(zk, path, args.recursive, out, args.max_nodes)
            if (args.wait_exists or args.require_exists) and not out[path]["exists"]:
                errors.append("znode %s does not exist" % path)
        finish({"zk": args.zk, "znodes": out}, errors)
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    sys.exit(main())
