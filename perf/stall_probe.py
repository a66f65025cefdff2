#!/usr/bin/env python3
"""Measures how responsive a broker stays: sends an ApiVersions v0 request every INTERVAL
seconds on its own connection for DURATION seconds and reports round-trip percentiles and the
worst stalls. ApiVersions touches no partition, so its latency is the shard's own responsiveness
(an executor blocked in the kernel shows up here as a stall).

usage: stall_probe.py HOST:PORT DURATION_S [INTERVAL_S] [--json FILE]
"""
import json
import socket
import struct
import sys
import time


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    if out in args:
        args.remove(out)
    host, port = args[0].rsplit(":", 1)
    duration = float(args[1])
    interval = float(args[2]) if len(args) > 2 else 0.01
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = b"stall-probe"
    samples = []
    end = time.monotonic() + duration
    correlation = 0
    while time.monotonic() < end:
        correlation += 1
        body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
        started = time.monotonic()
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(sock, 4))[0]
        reply = recv_exact(sock, size)
        elapsed = time.monotonic() - started
        if struct.unpack(">i", reply[:4])[0] != correlation:
            sys.exit("correlation id mismatch")
        samples.append((started, elapsed))
        time.sleep(max(0.0, interval - elapsed))
    lat = sorted(e for _, e in samples)

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000

    result = {
        "requests": len(lat),
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
        "p999_ms": round(pct(99.9), 3),
        "max_ms": round(lat[-1] * 1000, 3),
        "over_10ms": sum(1 for e in lat if e > 0.010),
        "over_100ms": sum(1 for e in lat if e > 0.100),
    }
    print(
        "ApiVersions round trips: {requests} requests, p50 {p50_ms} ms, p99 {p99_ms} ms, "
        "p99.9 {p999_ms} ms, max {max_ms} ms; {over_10ms} over 10 ms, {over_100ms} over 100 ms".format(**result)
    )
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit("broker closed the connection")
        buf += chunk
    return buf


if __name__ == "__main__":
    main()
