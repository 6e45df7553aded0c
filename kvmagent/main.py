"""``zstack-kvmagent``: run the agent for this host.

    zstack-kvmagent [--config /etc/zstack-py/kvmagent.yaml] [--port N] [--listen-ip IP] [--log-level INFO]

The config file format is documented in :mod:`kvmagent.config`. The agent listens on ``listen_ip:port``
(the host's management IP, 7070) and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from kvmagent.config import DEFAULT_PATH, AgentConfig, ConfigError, load_config
from kvmagent.contract.tls import peer_context, server_context
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.server import create_app

log = logging.getLogger("kvmagent")


def build_service(module: str, cls: str, state_dir: Path) -> Any:
    """A data-plane service if its package is installed yet (other parts of the project are landing)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        log.warning("%s is not available (%s); its endpoints will fail", module, e)
        return None
    return getattr(mod, cls)(state_dir=state_dir)


def _setup_logging(config: AgentConfig, level: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.log_dir / "kvmagent.log"))
    except OSError as e:
        print(f"zstack-kvmagent: cannot write logs to {config.log_dir}: {e}", file=sys.stderr)
    logging.basicConfig(level=level, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop the agent — but only when they are sent to the agent itself.

    Not ``loop.add_signal_handler``: it routes signals through a wakeup socket that forked children share
    (pyroute2 forks helpers to work inside network namespaces and SIGTERMs them when done), so a helper's
    SIGTERM was read by the agent's loop as its own and the agent shut down cleanly in the middle of a
    flat-network apply. A plain handler runs in the process that got the signal; in a forked helper it
    exits that helper as the default action would."""
    main_pid = os.getpid()

    def on_signal(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        log.info("signal %d: stopping", signum)
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


NOFILE_WANTED = 65536


def raise_nofile_limit(wanted: int = NOFILE_WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit): the metadata server's global
    cap is a quarter of it, and VM management keeps the rest. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, e)
    log.info("open-files limit (soft) %d", soft)
    return int(soft)


async def serve(config: AgentConfig, *, services: bool = True) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    driver = LibvirtDriver(config.libvirt_uri, state_dir=config.state_dir, domain_type=config.domain_type)
    flatnet = build_service("flatnet.service", "FlatNetService", config.state_dir) if services else None
    storage = build_service("storage.service", "StorageService", config.state_dir) if services else None
    secgroup = build_service("kvmagent.secgroup", "SecurityGroupService", config.state_dir) if services else None
    if storage is not None:
        storage.peer_tls = peer_context(config.tls_ca)
    app = create_app(config, driver=driver, flatnet=flatnet, storage=storage, secgroup=secgroup)
    # 4 MiB read buffer: volume copies stream through the receive endpoint (≈1.5× the throughput of 64 KiB).
    runner = web.AppRunner(app, access_log=None, read_bufsize=4 << 20)
    await runner.setup()
    tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    site = web.TCPSite(runner, config.listen_ip, config.port, ssl_context=tls)
    await site.start()
    log.info("kvmagent for host %s listening on %s:%d (%s)", config.host_uuid, config.listen_ip, config.port,
             "https" if tls else "plain http")
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zstack-kvmagent", description="ZStack-Py KVM host agent")
    p.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"YAML config (default {DEFAULT_PATH})")
    p.add_argument("--port", type=int, help="override the configured port")
    p.add_argument("--listen-ip", help="override the configured listen IP")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
        overrides = {k: v for k, v in (("port", args.port), ("listen_ip", args.listen_ip)) if v is not None}
        if overrides:
            config = AgentConfig.model_validate({**config.model_dump(), **overrides})
    except (ConfigError, ValueError) as e:
        print(f"zstack-kvmagent: {e}", file=sys.stderr)
        return 2
    _setup_logging(config, args.log_level)
    raise_nofile_limit()
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
