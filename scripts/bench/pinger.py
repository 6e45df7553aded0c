#!/usr/bin/env python3
"""ICMP echo every ``--interval`` seconds to one IPv4 address (raw socket, root; standard library only: this
machine has no ``ping``), printing ``<unix time> <seq>`` for each reply until killed. Used by migration_bench.py
inside a probe namespace (``ip netns exec``) to measure a guest's downtime as the longest gap between replies."""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def packet(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"zstack-py-bench"
    return struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("address")
    p.add_argument("--interval", type=float, default=0.01)
    args = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    seq = 0
    next_send = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_send:
            seq = (seq + 1) & 0xFFFF
            try:
                sock.sendto(packet(ident, seq), (args.address, 0))
            except OSError:
                pass  # no route or neighbour yet: a missed reply like any other
            next_send += args.interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if ready:
            data = sock.recv(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident:
                sys.stdout.write(f"{time.time():.6f} {rseq}\n")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
