"""Run the controller in the foreground: ``python -m controller.server [--config FILE]``.

``zstack-ctl start`` runs this under systemd (unit ``zstack-py-controller``) or as a daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from controller.app import create_app, server_settings
from controller.config import ControllerConfig
from controller.pki import PkiError
from controller.tls import api_ssl_context


def setup_logging(log_dir: str, *, to_file: bool = True) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if to_file:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(log_dir) / "controller.log"))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="zstack-py-controller")
    p.add_argument("--config", help="controller config (JSON); default /etc/zstack-py/controller.json")
    args = p.parse_args(argv)
    config = ControllerConfig.load(args.config)
    setup_logging(config.log_dir)
    try:
        ssl_context = api_ssl_context(config)
    except PkiError as e:
        logging.getLogger("controller").error("%s", e)
        sys.exit(2)
    web.run_app(create_app(config), host=config.listen_host, port=config.port, print=None,
                access_log=None, ssl_context=ssl_context, **server_settings(config))


if __name__ == "__main__":
    main()
