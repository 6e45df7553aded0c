"""The security-group applier of the agent: desired rule set → kernel (nftables), kept and reconciled.

Guarantees:

* :meth:`SecurityGroupService.apply` renders the host's whole set (``flatnet.secgroup.render``) and loads it
  with ONE ``nft -f`` (argv list, script on stdin): the kernel has either the old or the new set. The set
  and its generation are written to ``<state_dir>/secgroup.json`` (0600) after the kernel took it.
* A generation lower than the one enforced is not applied (answered ``applied=false``) unless ``force``.
* :meth:`reconcile` (at start, and every ``interval`` seconds in a supervised loop) compares the kernel's
  two ``zstack_sg`` tables with the last applied set (generation in the table comment, number of rules per
  table) and re-applies the kept set when they differ: a set flushed or edited by hand, or lost with a
  host reboot, comes back without the controller.
* ``br_netfilter`` must pass bridged IP traffic to the ``inet`` hooks; :meth:`apply` turns
  ``net.bridge.bridge-nf-call-iptables``/``ip6tables`` on (per network namespace) before loading a set that
  filters some NIC (an empty set touches no sysctl and leaves no tables).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flatnet.secgroup import TABLE, Rendered, SgNic, SgRule, parse_generation, render
from zsutil.runner import ProcessError, run

log = logging.getLogger(__name__)

STATE_FILE = "secgroup.json"
SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")


def nic_from_dict(d: dict[str, Any]) -> SgNic:
    rules = tuple(SgRule(**{**r, "addresses": tuple(r["addresses"])}) for r in d.get("rules", ()))
    return SgNic(**{**d, "ips": tuple(d["ips"]), "host_service_ips": tuple(d.get("host_service_ips", ())),
                    "rules": rules})


class SecurityGroupService:
    """One per agent. ``host_netns``: the namespace holding the bridges (None: the agent's own)."""

    def __init__(self, state_dir: Path, *, host_netns: str | None = None, interval: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.host_netns = host_netns
        self.interval = interval
        self.generation: int | None = None
        self.nics: list[SgNic] = []
        self.counts: dict[str, int] = {}
        self.reconciled = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the kept set, put it back into the kernel if it is not there, start the reconcile loop."""
        self._load()
        try:
            await self.reconcile()
        except Exception:
            log.exception("security groups: reconcile at start failed (retried every %.0f s)", self.interval)
        self._task = asyncio.create_task(self._loop(), name="secgroup-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("security groups: periodic reconcile failed")

    # -- commands -----------------------------------------------------------------------------------------
    async def apply(self, generation: int, nics: list[SgNic], *, force: bool = False) -> tuple[bool, Rendered]:
        """Enforce ``nics`` as the host's whole set at ``generation``. Returns (applied, rendered)."""
        rendered = render(nics, generation)  # raises RuleSetError before anything changes
        async with self._lock:
            if not force and self.generation is not None and generation < self.generation:
                log.info("security groups: generation %d is older than the enforced %d; not applied",
                         generation, self.generation)
                return False, rendered
            await self._load_kernel(rendered)
            self.generation, self.nics, self.counts = generation, list(nics), dict(rendered.rule_counts)
            self._save()
        return True, rendered

    async def reconcile(self) -> bool:
        """Re-apply the kept set when the kernel differs from it; True when something was restored."""
        async with self._lock:
            if self.generation is None:
                return False
            if await self.in_sync():
                return False
            rendered = render(self.nics, self.generation)
            log.warning("security groups: kernel tables differ from generation %d; restoring", self.generation)
            await self._load_kernel(rendered)
            self.counts = dict(rendered.rule_counts)
            self.reconciled += 1
            return True

    async def in_sync(self) -> bool:
        """The kernel's tables carry the kept generation and the kept number of rules (no tables when no NIC
        is filtered)."""
        want = self.generation if self.nics else None
        for family in ("inet", "bridge"):
            gen, rules = await self._kernel_table(family)
            if gen != want or rules != self.counts.get(family, 0):
                return False
        return True

    # -- kernel ---------------------------------------------------------------------------------------------
    def _argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host_netns, *argv] if self.host_netns else argv

    async def _load_kernel(self, rendered: Rendered) -> None:
        t0 = time.monotonic()
        if rendered.rule_counts.get("bridge", 0):  # some NIC is filtered: bridged IP must reach the inet hooks
            for key in SYSCTLS:
                await run(self._argv(["sysctl", "-q", "-w", f"{key}=1"]), timeout=10)
        await run(self._argv(["nft", "-f", "-"]), timeout=120, input=rendered.text)
        log.info("security groups: %s rules loaded in %.3f s", rendered.rule_counts, time.monotonic() - t0)

    async def _kernel_table(self, family: str) -> tuple[int | None, int]:
        """(generation from the comment, number of rules) of our table in ``family``; (None, 0) if absent."""
        try:
            res = await run(self._argv(["nft", "-j", "list", "table", family, TABLE]), timeout=30)
        except ProcessError:
            return None, 0
        items = json.loads(res.stdout).get("nftables", [])
        gens = [parse_generation(i["rule"].get("comment")) for i in items if "rule" in i]
        gen = next((g for g in gens if g is not None), None)
        return gen, sum(1 for i in items if "rule" in i)

    # -- state file -----------------------------------------------------------------------------------------
    def _path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path().with_suffix(".tmp")
        data = {"generation": self.generation, "counts": self.counts, "nics": [asdict(n) for n in self.nics]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self._path())

    def _load(self) -> None:
        try:
            data = json.loads(self._path().read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.error("security groups: state file %s unreadable (%s); waiting for the controller", self._path(), e)
            return
        self.generation = data.get("generation")
        self.counts = data.get("counts", {})
        self.nics = [nic_from_dict(n) for n in data.get("nics", [])]

    def status(self) -> dict[str, Any]:
        return {"generation": self.generation, "nicCount": len(self.nics), "taps": sorted(n.tap for n in self.nics)}
