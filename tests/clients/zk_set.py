#!/usr/bin/env python3
"""Write a znode's data with kazoo (creating it if missing), for tests that change what brokers read
from ZooKeeper, e.g. a topic's settings under /config/topics/<topic>.

    zk_set.py --zk HOST:PORT PATH JSON

Prints {"ok": true, "path": ..., "version": N}; exits 1 if ZooKeeper cannot be reached.
"""

import argparse
import json
import sys

from kazoo.client import KazooClient


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zk", required=True)
    parser.add_argument("path")
    parser.add_argument("data", help="the znode's new content (JSON text)")
    args = parser.parse_args()
    json.loads(args.data)  # refuse to write what brokers could not parse
    zk = KazooClient(hosts=args.zk, timeout=10)
    try:
        zk.start(timeout=15)
    except Exception as e:  # noqa: BLE001 - any failure to connect is the same outcome here
        print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    try:
        zk.ensure_path(args.path)
        stat = zk.set(args.path, args.data.encode())
        print(json.dumps({"ok": True, "path": args.path, "version": stat.version}))
        return 0
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    sys.exit(main())
