"""The interactive shell: ``>>>`` prompt, readline history and completion, built-ins.

History lives in ``<cli home>/history`` (mode 0600); lines with a ``password=`` are stored with the
password masked unless the shell was started with ``-s``. Completion: the first word completes API names
and built-ins; later words complete ``name=`` of the current API's parameters (for Query APIs, the
reserved message fields). The schema is refreshed from the controller once when the shell starts.
"""

from __future__ import annotations

import pydoc
import re
from pathlib import Path
from typing import Any

from controller.cli.app import BUILTINS, EXIT_OK, EXIT_USAGE, Cli
from controller.cli.client import ConnectionFailure
from controller.cli.parser import QUERY_RESERVED, UsageError, split_line
from controller.cli.schema import ApiSchema

HISTORY_LENGTH = 1000
_PASSWORD = re.compile(r"(password=)(\"[^\"]*\"|'[^']*'|\S+)")


def completions(schema: ApiSchema | None, line: str, begidx: int, text: str) -> list[str]:
    """Candidates for the word ``text`` starting at ``begidx`` of ``line`` (pure, for readline)."""
    if not line[:begidx].strip():
        names = (schema.names() if schema else []) + list(BUILTINS)
        return sorted(n for n in names if n.startswith(text))
    api = line.split(None, 1)[0]
    if "=" in text:
        return []
    if api == "help":
        return sorted(n for n in (schema.names() if schema else []) if n.startswith(text))
    params: list[str] = list((schema.params(api) or {}) if schema else {})
    if api.startswith("Query"):
        params = sorted(set(params) | set(QUERY_RESERVED))
    used = {word.partition("=")[0] for word in line[:begidx].split()[1:]}
    return sorted(f"{p}=" for p in params if p.startswith(text) and (p not in used or p in ("systemTags",
                                                                                            "userTags")))


def mask_passwords(line: str) -> str:
    """The line as it goes to the history file unless ``-s``: every password value replaced by ``****``."""
    return _PASSWORD.sub(r"\1****", line)


class Shell:
    """The ``>>>`` read-eval-print loop around a :class:`Cli`."""

    def __init__(self, cli: Cli, history_path: Path, keep_passwords: bool = False) -> None:
        self.cli = cli
        self.history_path = history_path
        self.keep_passwords = keep_passwords
        self.readline: Any = None

    def run(self) -> int:
        """Loop until ``quit``/``exit``/EOF; returns the exit code of the last command."""
        self._setup_readline()
        try:
            self.cli.schema(refresh=True)
        except ConnectionFailure as e:
            self.cli.err.write(f"warning: {e}\n")
        code = EXIT_OK
        try:
            while True:
                try:
                    line = input(">>>")
                except EOFError:
                    self.cli.out.write("\n")
                    break
                except KeyboardInterrupt:
                    self.cli.out.write("\n")
                    continue
                result = self.handle(line)
                if result is None:
                    break
                code = result
        finally:
            self._save_history()
        return code

    def handle(self, line: str) -> int | None:
        """Run one line; None means quit."""
        self._record(line)
        try:
            tokens = split_line(line)
        except UsageError as e:
            self.cli.err.write(f"error: {e}\n")
            return EXIT_USAGE
        if not tokens:
            return EXIT_OK
        word = tokens[0]
        if word in ("quit", "exit"):
            return None
        if word == "history":
            return self._history()
        if word == "more":
            return self._more(tokens[1:])
        try:
            return self.cli.run_tokens(tokens)
        except KeyboardInterrupt:
            self.cli.err.write("\ninterrupted (the controller may still finish the call)\n")
            return EXIT_USAGE

    def _history(self) -> int:
        rl = self.readline
        if rl is None:
            self.cli.err.write("history is not available (no readline)\n")
            return EXIT_USAGE
        for i in range(1, rl.get_current_history_length() + 1):
            self.cli.out.write(f"{i:5d}  {rl.get_history_item(i)}\n")
        return EXIT_OK

    def _more(self, args: list[str]) -> int:
        """``more [N]``: the N-th last printed reply (1 = the last) through the pager."""
        try:
            n = int(args[0]) if args else 1
        except ValueError:
            self.cli.err.write(f'more: "{args[0]}" is not a number\n')
            return EXIT_USAGE
        if not 1 <= n <= len(self.cli.outputs):
            self.cli.err.write(f"more: there are {len(self.cli.outputs)} saved replies\n")
            return EXIT_USAGE
        pydoc.pager(self.cli.outputs[-n])
        return EXIT_OK

    def _record(self, line: str) -> None:
        rl = self.readline
        if rl is None or self.keep_passwords or not line.strip():
            return
        masked = mask_passwords(line)
        if masked != line and rl.get_current_history_length():
            rl.replace_history_item(rl.get_current_history_length() - 1, masked)

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:
            return
        self.readline = readline
        readline.set_completer_delims(" \t\n")
        readline.parse_and_bind("tab: complete")
        readline.set_completer(self._complete)
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(self.history_path)
        except OSError:
            pass

    def _complete(self, text: str, state: int) -> str | None:
        rl = self.readline
        matches = completions(self.cli.schema_or_none(), rl.get_line_buffer(), rl.get_begidx(), text)
        return matches[state] if state < len(matches) else None

    def _save_history(self) -> None:
        if self.readline is None:
            return
        try:
            self.history_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.readline.write_history_file(self.history_path)
            self.history_path.chmod(0o600)
        except OSError as e:
            self.cli.err.write(f"warning: cannot save the history to {self.history_path}: {e}\n")
