"""Shared bits of the client scripts: JSON summaries, failure exits, message shapes.

Every script prints one JSON object as its last stdout line and exits 0 only when every check
passed; diagnostics go to stderr.
"""

import json
import sys
import time


class CheckFailed(Exception):
    """A check on what the broker returned did not hold."""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def emit(summary):
    print(json.dumps(summary, sort_keys=True), flush=True)


def finish(summary, errors):
    """Prints the summary (with errors) and exits 1 if there are any."""
    summary["errors"] = errors[:50]
    summary["error_count"] = len(errors)
    summary["ok"] = not errors
    emit(summary)
    sys.exit(0 if not errors else 1)


def fail(message, **summary):
    summary.update({"ok": False, "errors": [message], "error_count": 1})
    emit(summary)
    sys.exit(1)


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def message(i, keys, value_bytes):
    """Message i: key k{i % keys}, value '<key>:<seq>:' padded to value_bytes, where seq counts
    that key's messages from 0, so per-key order is visible in the values."""
    key = "k%d" % (i % keys)
    seq = i // keys
    value = "%s:%d:" % (key, seq)
    if len(value) < value_bytes:
        value += "x" * (value_bytes - len(value))
    return key.encode(), value.encode()


def parse_value(value):
    key, seq, _ = value.decode().split(":", 2)
    return key, int(seq)
