"""Benchmark: host-to-host volume copy (agent to agent over loopback HTTP) vs a plain ``cp``.

A 2 GiB qcow2 volume with 1 GiB of random data is copied by the real storage service from an in-process
source agent to a destination agent running in its own mount namespace (same PS url, other directory, so
paths are identical as between two hosts); the same file is copied with ``cp`` in the same run. Prints
MB/s of both (best of ``--runs``), the ratio of the bests, and the median and spread of the per-run
ratios (each run times ``cp`` then the migration back to back: other load affects both alike).
LocalStorageMigrateVolume moves data only through this copy: around it the controller makes control calls
(volume info, a presence check on the destination, capacity transactions) but no second pass over the
files (the copy's checksums are verified by both agents). Needs root (mount namespace). Usage:

    /opt/zstack-py/venv/bin/python scripts/bench/volume_migration.py [--dir /var/tmp] [--runs 7] [--tls]

``--tls``: the destination serves HTTPS with a certificate from a CA the source pins, as deployed agents do
(the default agent traffic); the receive side then streams through aiohttp instead of taking the socket over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "functional"))

from storage_agent import Agent, NamespacedAgent

from controller import pki
from kvmagent.contract import storage as c
from kvmagent.contract.tls import client_context
from storage import files

GiB = 1 << 30


def make_volume(path: Path, tmp: Path) -> None:
    raw = tmp / "random.raw"
    with open(raw, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    subprocess.run(["qemu-img", "resize", "-q", str(path), str(2 * GiB)], check=True)
    raw.unlink()


def time_cp(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    os.sync()
    dt = time.perf_counter() - t
    dst.unlink()
    return dt


async def time_copy(src: Agent, dst: NamespacedAgent, ps: Path, vol: str, dst_dir: Path) -> float:
    t = time.perf_counter()
    reply = await src.call(
        c.CopyToRemoteCmd(storagePath=str(ps), paths=[vol], destAgentUrl=dst.url, destToken=dst.token)
    )
    dt = time.perf_counter() - t
    assert reply.copied[0].checksum
    (dst_dir / Path(vol).relative_to(ps)).unlink()
    return dt


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tls", action="store_true", help="HTTPS between the agents (CA-pinned)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zs-bench-", dir=args.dir))
    ps = tmp / "ps"
    tls, verify = None, None
    if args.tls:
        ca = pki.ensure_ca(tmp / "ca")
        issued = pki.issue(ca, "dst", ["127.0.0.1"])
        pki.write_private(tmp / "ca" / "dst.crt", issued.cert_pem)
        pki.write_private(tmp / "ca" / "dst.key", issued.key_pem)
        tls, verify = (str(tmp / "ca" / "dst.crt"), str(tmp / "ca" / "dst.key")), client_context(ca_pem=ca.cert_pem)
    src = await Agent(tmp / "src-state").start()
    src.service.peer_tls = verify
    dst = await NamespacedAgent(tmp / "dst-state", ps, tmp / "dst-ps", tls=tls).start()
    print(f"agent to agent: {'HTTPS (CA-pinned)' if args.tls else 'plain HTTP'}")
    try:
        await src.call(c.InitCmd(storagePath=str(ps), primaryStorageUuid="ps-b"))
        init = await src.http.post(  # type: ignore[union-attr]
            dst.url + c.InitCmd.PATH,
            json={"storagePath": str(ps), "primaryStorageUuid": "ps-b"},
            headers={"Authorization": f"Bearer {dst.token}"},
            ssl=verify or True,
        )
        assert init.status == 200, await init.text()
        vol = await src.call(
            c.CreateEmptyVolumeCmd(storagePath=str(ps), accountUuid="a", volumeUuid="v", size=2 * GiB)
        )
        path = Path(vol.installPath)
        make_volume(path, tmp)
        size = path.stat().st_size  # noqa: ASYNC240
        cps, migs = [], []
        for _ in range(args.runs):
            cps.append(time_cp(path, tmp / "cp-copy.qcow2"))
            migs.append(await time_copy(src, dst, ps, vol.installPath, tmp / "dst-ps"))
        mb = size / 1e6
        cp_rate, mig_rate = mb / min(cps), mb / min(migs)
        print(
            f"machine: {platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}, "
            f"file {size / GiB:.2f} GiB (allocated {files.allocated_bytes(path) / GiB:.2f} GiB)"
        )
        print(f"cp:        {cp_rate:8.1f} MB/s  (runs: {', '.join(f'{x:.2f}s' for x in cps)})")
        print(f"migration: {mig_rate:8.1f} MB/s  (runs: {', '.join(f'{x:.2f}s' for x in migs)})")
        pairs = sorted(c_ / m_ for c_, m_ in zip(cps, migs, strict=True))
        print(f"ratio migration/cp: {mig_rate / cp_rate:.2f} best vs best (target >= 0.8)")
        print(
            f"per-run ratios (cp then migration, back to back): median {statistics.median(pairs):.2f}, "
            f"spread {pairs[0]:.2f}..{pairs[-1]:.2f}"
        )
    finally:
        dst.kill()
        await src.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
