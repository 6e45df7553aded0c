"""FlatNetService: the flat network data plane of one host (DESIGN.md "Flat network data plane").

Desired state (L3s, NICs, user data) is persisted under ``state_dir/flatnet/`` and the host is converged to
it: on every request for the L3s it touches, and for everything in :meth:`FlatNetService.start` (agent
start: reads what exists — namespaces, links, dnsmasq pid files, ebtables — and fixes only differences, so
a restart after SIGKILL adds no second dnsmasq, veth or rule). Every method is idempotent. A failed
request restores the previous desired state and converges back to it (Reverter) before raising.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatnet import dnsmasq, ebtables, netns
from flatnet.dnsmasq import DnsmasqPaths
from flatnet.errors import FlatNetError, NotPrepared
from flatnet.metadata import MetadataServer
from flatnet.model import DesiredState, L3Spec, NicSpec, UserdataSpec
from flatnet.names import METADATA_IP, l3_names, nic_tag
from flatnet.state import StateStore
from zsutil.revert import Reverter
from zsutil.runner import ProcessError

log = logging.getLogger(__name__)


def untrusted_reason(state: DesiredState, vm_uuid: str, l3_uuid: str, ip: str) -> str | None:
    """Why metadata of ``vm_uuid`` must not be served to source ``ip`` on ``l3_uuid``, or None when it may.

    The metadata server tells VMs apart by source IP; that is only safe when the address cannot be taken by
    another guest (OSSN-0074): the L3 is served here, the VM's NIC with that IP is served by Flat DHCP on this
    host (so its tap is known), and the L3 has anti-spoofing on (so the tap may only send from that IP)."""
    l3 = state.l3s.get(l3_uuid)
    if l3 is None:
        return "the L3 network is not served on this host"
    if not l3.anti_spoofing:
        return ("the L3 network has anti-spoofing off, so the source address can be taken by any VM "
                "(OSSN-0074); turn it on (flatNetwork::antiSpoofing::true) to serve user data")
    if not any(n.vm_uuid == vm_uuid and n.l3_uuid == l3_uuid and n.ip == ip and n.tap
               for n in state.nics.values()):
        return ("no NIC of this VM with that address is served by Flat DHCP on this host (an L3 with the Flat "
                "Userdata service but not Flat DHCP), so the source address cannot be trusted (OSSN-0074)")
    return None


@dataclass
class L3Status:
    l3_uuid: str
    netns: str
    bridge: str
    dhcp_ip: str
    dnsmasq_pid: int | None
    nics: int
    userdata: int
    listening: list[tuple[str, int]]
    error: str | None = None
    #: (vm uuid, mac, ip) of every NIC in the L3's DHCP hosts; vm uuids with user data served
    entries: list[tuple[str, str, str]] = field(default_factory=list)
    userdata_vms: list[str] = field(default_factory=list)


@dataclass
class Status:
    l3s: list[L3Status] = field(default_factory=list)


class FlatNetService:
    """Flat DHCP + metadata for the L3 networks of this host.

    ``host_netns`` names the network namespace holding the L2 bridges (``None``: the agent's own).
    ``metadata_limits``: keyword arguments of :class:`MetadataServer` (per_source, max_connections,
    keepalive, lifetime); the defaults suit production.
    """

    def __init__(self, state_dir: Path, *, host_netns: str | None = None, http_port: int = 80,
                 password_port: int | None = 8080, log_dhcp: bool = False,
                 metadata_limits: dict[str, Any] | None = None) -> None:
        self.store = StateStore(Path(state_dir))
        self.host_netns = host_netns
        self.log_dhcp = log_dhcp
        self.state = DesiredState()
        self.metadata = MetadataServer(http_port=http_port, password_port=password_port, **(metadata_limits or {}))
        self._lock = asyncio.Lock()
        self._errors: dict[str, str] = {}
        self._refused: dict[tuple[str, str, str], str] = {}
        self._rotator: asyncio.Task[None] | None = None
        self.log_check_interval = 60.0

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the persisted desired state and converge the host to it. An L3 that cannot be served
        (e.g. its bridge is gone) is logged and reported in :meth:`status`; the others still converge."""
        async with self._lock:
            self.state = self.store.load()
            await self.metadata.start()
            for l3 in self.state.l3s.values():
                try:
                    await self._converge_l3(l3, self.state)
                    self._errors.pop(l3.uuid, None)
                except (FlatNetError, ProcessError, OSError) as e:
                    log.error("flatnet: L3 %s not reconciled: %s", l3.uuid, e)
                    self._errors[l3.uuid] = str(e)
            await self._remove_stale(self.state)
            await self._sync_rules(self.state)
            self._sync_entries(self.state)
            self._finish(self.state)
            if self._rotator is None:
                self.rotate_logs()
                self._rotator = asyncio.create_task(self._rotate_forever(), name="flatnet-log-rotation")

    async def stop(self) -> None:
        """Close the metadata listeners. dnsmasq and the namespaces stay: VMs keep their DHCP while the agent
        restarts, and :meth:`start` adopts them."""
        task, self._rotator = self._rotator, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.metadata.stop()

    def rotate_logs(self, max_bytes: int = dnsmasq.LOG_MAX_BYTES) -> int:
        """Rotate the dnsmasq log of every L3 past ``max_bytes``; the number rotated."""
        n = 0
        for l3 in list(self.state.l3s):
            try:
                n += dnsmasq.rotate_log(self._paths(l3), max_bytes)
            except OSError as e:
                log.warning("flatnet: dnsmasq log of L3 %s not rotated: %s", l3, e)
        return n

    async def _rotate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.log_check_interval)
            await asyncio.to_thread(self.rotate_logs)

    # --- requests ------------------------------------------------------------------------------------
    async def prepare(self, l3s: Iterable[L3Spec]) -> None:
        """Namespace, veth, addresses, dnsmasq and metadata listeners for ``l3s`` (no NIC change)."""
        await self.apply_dhcp(l3s, (), rebuild=False)

    async def apply_dhcp(self, l3s: Iterable[L3Spec], nics: Iterable[NicSpec], *, rebuild: bool) -> None:
        """Add or update ``l3s`` and ``nics``; with ``rebuild`` they replace the whole desired set of this
        host (L3s and NICs not listed are removed, with their user data)."""
        l3s, nics = list(l3s), list(nics)
        async with self._lock:
            new = self.state.model_copy(deep=True)
            if rebuild:
                new.l3s, new.nics = {}, {}
            new.l3s.update({l3.uuid: l3 for l3 in l3s})
            for nic in nics:
                if nic.l3_uuid not in new.l3s:
                    raise NotPrepared(nic.l3_uuid)
            new.nics.update({n.key: n for n in nics})
            new.userdata = {k: u for k, u in new.userdata.items() if u.l3_uuid in new.l3s}
            if rebuild:  # user data of VMs no longer on this host goes with them (the caller re-sends the rest)
                here = {n.vm_uuid for n in new.nics.values()}
                new.userdata = {k: u for k, u in new.userdata.items() if u.vm_uuid in here}
            touched = {l3.uuid for l3 in l3s} | {n.l3_uuid for n in nics}
            await self._commit(new, touched if not rebuild else set(new.l3s))

    async def release_dhcp(self, nics: Iterable[tuple[str, str]]) -> None:
        """Stop serving the NICs given as (l3 uuid, mac). Unknown NICs are ignored."""
        async with self._lock:
            new = self.state.model_copy(deep=True)
            keys = [f"{l3}/{mac.lower()}" for l3, mac in nics]
            gone = [new.nics.pop(k) for k in keys if k in new.nics]
            await self._commit(new, {n.l3_uuid for n in gone})

    async def apply_userdata(self, spec: UserdataSpec) -> None:
        """Serve ``spec`` to its VM from the next request on."""
        async with self._lock:
            if spec.l3_uuid not in self.state.l3s:
                raise NotPrepared(spec.l3_uuid)
            new = self.state.model_copy(deep=True)
            new.userdata[spec.vm_uuid] = spec
            await self._commit(new, set())

    async def release_userdata(self, vm_uuid: str) -> None:
        """Stop serving the VM's metadata and user data. Unknown VMs are ignored."""
        async with self._lock:
            new = self.state.model_copy(deep=True)
            new.userdata.pop(vm_uuid, None)
            await self._commit(new, set())

    def status(self) -> Status:
        out = Status()
        for l3 in self.state.l3s.values():
            n = l3_names(l3.uuid)
            out.l3s.append(L3Status(
                l3_uuid=l3.uuid, netns=n.netns, bridge=l3.bridge, dhcp_ip=l3.dhcp_ip,
                dnsmasq_pid=dnsmasq.find_pid(self._paths(l3.uuid)),
                nics=sum(1 for x in self.state.nics.values() if x.l3_uuid == l3.uuid),
                userdata=self.metadata.entry_count(l3.uuid), listening=self.metadata.listening(l3.uuid),
                error=self._errors.get(l3.uuid),
                entries=sorted((x.vm_uuid, x.mac, x.ip) for x in self.state.nics.values() if x.l3_uuid == l3.uuid),
                userdata_vms=self.metadata.entry_vms(l3.uuid)))
        return out

    # --- convergence ---------------------------------------------------------------------------------
    async def _commit(self, new: DesiredState, touched: set[str]) -> None:
        old = self.state
        removed = [u for u in old.l3s if u not in new.l3s]
        gone_nics = [n for k, n in old.nics.items() if k not in new.nics and n.l3_uuid in new.l3s]
        new.owned_l3s = sorted(set(old.owned_l3s) | set(new.l3s))
        chains = ebtables.desired(new.l3s, new.nics.values()).chains
        new.owned_chains = sorted(set(old.owned_chains) | set(chains))
        self.store.save(new)  # write-ahead: what may exist on the host is recorded before it is created
        for nic in gone_nics:  # before the SIGHUP: dnsmasq 2.90 crashes reloading a host whose lease is live
            await self._release_lease(new.l3s[nic.l3_uuid], nic)
        async with Reverter() as r:
            r.add(self._rollback, old, new)
            for uuid in sorted(touched & set(new.l3s)):
                await self._converge_l3(new.l3s[uuid], new)
            for uuid in removed:
                await self._remove_l3(uuid)
            await self._sync_rules(new)
            self._sync_entries(new)
            r.success()
        self._finish(new)

    async def _rollback(self, old: DesiredState, failed: DesiredState) -> None:
        """Converge back to ``old`` after a failed request (best effort; errors are logged by Reverter)."""
        old = old.model_copy(update={"owned_l3s": failed.owned_l3s, "owned_chains": failed.owned_chains})
        self.state = old
        for l3 in old.l3s.values():
            if failed.l3s.get(l3.uuid) != l3 or any(n.l3_uuid == l3.uuid for n in failed.nics.values()):
                await self._converge_l3(l3, old)
        await self._remove_stale(old)
        await self._sync_rules(old)
        self._sync_entries(old)
        self._finish(old)

    def _finish(self, state: DesiredState) -> None:
        state.owned_l3s = sorted(state.l3s)
        state.owned_chains = sorted(ebtables.desired(state.l3s, state.nics.values()).chains)
        self.store.save(state)
        self.state = state

    def _paths(self, l3_uuid: str) -> DnsmasqPaths:
        return DnsmasqPaths(self.store.l3_dir(l3_names(l3_uuid).key))

    async def _converge_l3(self, l3: L3Spec, state: DesiredState) -> None:
        """Plumbing, dnsmasq files and process, metadata listeners of ``l3``; only differences change."""
        nics = [n for n in state.nics.values() if n.l3_uuid == l3.uuid]
        names = l3_names(l3.uuid)
        paths = self._paths(l3.uuid)
        async with Reverter() as r:
            if names.netns not in await asyncio.to_thread(netns.list_netns):
                r.add(asyncio.to_thread, netns.remove_plumbing, l3.uuid, self.host_netns)
            await asyncio.to_thread(netns.ensure_plumbing, l3, self.host_netns)
            conf_changed, reread = await asyncio.to_thread(self._write_files, l3, nics, paths)
            # New NIC files are picked up by dnsmasq's inotify (no signal). A changed or removed file needs a
            # reload; dnsmasq 2.90 was seen to crash (GPF) on SIGHUP after serving leases here, so the reload
            # is a restart (leases are kept in the lease file; clients notice nothing).
            if dnsmasq.find_pid(paths) is None or conf_changed or reread:
                await dnsmasq.stop(paths)
                await dnsmasq.start(names.netns, paths)
            await self.metadata.ensure_l3(l3.uuid, names.netns, l3.dhcp_ip, METADATA_IP)
            r.success()

    def _write_files(self, l3: L3Spec, nics: list[NicSpec], paths: DnsmasqPaths) -> tuple[bool, bool]:
        """Write dnsmasq.conf and the per-NIC files; (conf changed, a NIC file changed or was removed)."""
        for d in (paths.hosts_dir, paths.opts_dir):
            d.mkdir(parents=True, exist_ok=True)
        conf = dnsmasq.render_conf(l3, paths, log_dhcp=self.log_dhcp)
        conf_changed = dnsmasq.write_atomic(paths.conf, conf)
        reread = False
        for d, render in ((paths.hosts_dir, lambda n: dnsmasq.host_line(n)),
                          (paths.opts_dir, lambda n: dnsmasq.opts_lines(n, l3))):
            want = {nic_tag(n.mac): render(n) for n in nics}
            for f in d.iterdir():
                if f.name not in want:
                    f.unlink()
                    reread = True
            for name, text in want.items():
                existed = (d / name).exists()
                if dnsmasq.write_atomic(d / name, text) and existed:
                    reread = True
        return conf_changed, reread

    async def _remove_l3(self, l3_uuid: str) -> None:
        paths = self._paths(l3_uuid)
        await dnsmasq.stop(paths)
        await self.metadata.remove_l3(l3_uuid)
        await asyncio.to_thread(netns.remove_plumbing, l3_uuid, self.host_netns)
        shutil.rmtree(paths.root, ignore_errors=True)
        self._errors.pop(l3_uuid, None)

    async def _remove_stale(self, state: DesiredState) -> None:
        """Remove L3s that flatnet created but that are no longer desired, and stray state directories."""
        for uuid in state.owned_l3s:
            if uuid not in state.l3s:
                await self._remove_l3(uuid)
        keys = {l3_names(u).key for u in state.l3s}
        for d in self.store.l3_dirs():
            if d.name not in keys:
                await dnsmasq.stop(DnsmasqPaths(d))
                shutil.rmtree(d, ignore_errors=True)

    async def _sync_rules(self, state: DesiredState) -> None:
        want = ebtables.desired(state.l3s, state.nics.values())
        await ebtables.sync(self.host_netns, want, state.owned_chains)

    def _sync_entries(self, state: DesiredState) -> None:
        """Serve each VM's metadata on every (L3, IP) of it where the source IP can be trusted (see
        :func:`untrusted_reason`); the others are refused with one log line each time the set changes."""
        entries: dict[tuple[str, str], UserdataSpec] = {}
        refused: dict[tuple[str, str, str], str] = {}
        for u in state.userdata.values():
            for key in u.served_on:
                why = untrusted_reason(state, u.vm_uuid, *key)
                if why is None:
                    entries[key] = u
                else:
                    refused[(u.vm_uuid, *key)] = why
        for (vm, l3, ip), why in sorted(refused.items()):
            if self._refused.get((vm, l3, ip)) != why:
                log.warning("flatnet: user data of VM %s is NOT served on L3 %s to source %s: %s", vm, l3, ip, why)
        self._refused = refused
        self.metadata.set_entries(entries)

    async def _release_lease(self, l3: L3Spec, nic: NicSpec) -> None:
        try:
            await dnsmasq.release_lease(l3_names(l3.uuid).netns, l3_names(l3.uuid).inner, nic.ip, nic.mac)
        except ProcessError as e:
            log.warning("flatnet: lease of %s (%s) on L3 %s not released: %s", nic.ip, nic.mac, l3.uuid, e)
