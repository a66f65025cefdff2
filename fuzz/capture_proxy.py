#!/usr/bin/env python3
"""A TCP relay that keeps every request frame clients send through it, for the fuzz corpus.

    capture_proxy.py --listen PORT --broker HOST:PORT --out DIR --prefix NAME

Relays both directions unchanged; each client->broker frame (its body, without the 4-byte length)
is written to DIR/NAME-<api key>-v<version>-<sha1 prefix>.bin, so equal frames are kept once.
Runs until killed.
"""

import argparse
import hashlib
import os
import socket
import struct
import threading


def relay(src, dst, frames=None, out=None, prefix=None):
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if frames is None:
                continue
            buf += data
            while len(buf) >= 4:
                (length,) = struct.unpack(">i", buf[:4])
                if length < 0 or len(buf) < 4 + length:
                    break
                body, buf = buf[4 : 4 + length], buf[4 + length :]
                if length >= 4:
                    key, version = struct.unpack(">hh", body[:4])
                    digest = hashlib.sha1(body).hexdigest()[:12]
                    name = f"{prefix}-k{key}-v{version}-{digest}.bin"
                    with open(os.path.join(out, name), "wb") as f:
                        f.write(body)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    host, port = args.broker.rsplit(":", 1)
    os.makedirs(args.out, exist_ok=True)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", args.listen))
    server.listen(64)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection((host, int(port)))
        threading.Thread(target=relay, args=(client, upstream, [], args.out, args.prefix), daemon=True).start()
        threading.Thread(target=relay, args=(upstream, client), daemon=True).start()


if __name__ == "__main__":
    main()
