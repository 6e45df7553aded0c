"""``zstack-cli``: the operator's shell of ZStack-Py.

Usage::

    zstack-cli [-H host] [-p port] [-s] [--refresh-schema]            # interactive >>> shell
    zstack-cli [-H host] [-p port] QueryHost name=host1              # one command, then exit
    zstack-cli "CreateZone name=z1 description='my zone'"           # one argument: split like the shell

Controller URL: ``-H``/``-p`` if given, else ``$ZSTACK_URL``, else ``http://127.0.0.1:8080``. State
directory: ``$ZSTACK_CLI_HOME``, else ``~/.zstack-py``. Exit codes of one-shot mode: 0 success, 1 API error,
2 usage or connection error. ``main(argv)`` never raises for expected failures (tests drive it directly).
"""

from __future__ import annotations

import argparse
import os
import sys

from controller.cli.app import EXIT_USAGE, Cli
from controller.cli.client import ConnectionFailure, make_url
from controller.cli.parser import UsageError, split_line
from controller.cli.session import cli_home


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"zstack-cli: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _arguments() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="zstack-cli",
        description="ZStack-Py command line: ApiName name=value ... "
        "(Query APIs take name<op>value conditions)",
    )
    parser.add_argument("-H", "--host", help="controller host (default 127.0.0.1, or $ZSTACK_URL)")
    parser.add_argument("-p", "--port", type=int, help="controller port (default 8080)")
    parser.add_argument("--https", action="store_true",
                        help="the controller serves its API over TLS (api_tls); or give an https:// $ZSTACK_URL")
    parser.add_argument("--ca", default=os.environ.get("ZSTACK_CA"),
                        help="CA certificate (PEM) the controller's certificate must come from, e.g. its "
                             "pki/ca.crt (default $ZSTACK_CA; without it, the system's CAs)")
    parser.add_argument("-s", "--keep-passwords", action="store_true",
                        help="keep passwords in the shell history (masked by default)")
    parser.add_argument("--refresh-schema", action="store_true",
                        help="fetch the controller's API schema again instead of using the cache")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="one command to run, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command (extra args) or the interactive shell; returns the exit code."""
    try:
        args = _arguments().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    url = make_url(args.host, args.port, os.environ.get("ZSTACK_URL"), https=args.https or bool(args.ca))
    home = cli_home()
    cli = Cli(url, home, ca=args.ca)
    tokens: list[str] = list(args.command)
    if len(tokens) == 1 and any(c.isspace() for c in tokens[0]):
        try:
            tokens = split_line(tokens[0])
        except UsageError as e:
            sys.stderr.write(f"error: {e}\n")
            return EXIT_USAGE
    if args.refresh_schema:
        try:
            cli.schema(refresh=True)
        except ConnectionFailure as e:  # a command below reports it again; the shell warns
            if not tokens:
                sys.stderr.write(f"error: {e}\n")
                return EXIT_USAGE
    if tokens:
        return cli.run_tokens(tokens)
    from controller.cli.shell import Shell  # readline only for the interactive shell

    return Shell(cli, home / "history", keep_passwords=args.keep_passwords).run()


if __name__ == "__main__":
    sys.exit(main())
