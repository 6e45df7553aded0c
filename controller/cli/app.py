"""Running CLI commands: schema resolution, parsing, sessions, the API call and the printed result.

Used by both the one-shot mode and the interactive shell. Exit codes: 0 success, 1 the controller
answered an error, 2 usage or connection problem (bad token, unknown API, not logged in or session
expired, controller unreachable). Nothing here raises to the caller for expected failures; every problem
is one clear paragraph on ``err``.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from controller.cli.client import ApiError, Client, ConnectionFailure
from controller.cli.parser import (
    Command,
    UnknownApiError,
    UnknownParamError,
    UsageError,
    check_api,
    parse_tokens,
)
from controller.cli.schema import NO_SESSION_APIS, ApiSchema, SchemaCache, describe, fallback, from_openapi
from controller.cli.session import SessionStore

EXIT_OK, EXIT_API_ERROR, EXIT_USAGE = 0, 1, 2
NOT_LOGGED_IN = "not logged in: run LogInByAccount accountName=admin password=..."
LOGIN_APIS = frozenset({"LogInByAccount", "LogInByUser"})
BUILTINS = ("help", "login", "history", "more", "quit", "exit")
#: Long jobs whose progress the CLI prints (on ``err``, one line when it changes) while it waits.
PROGRESS_APIS = frozenset({"MigrateVm", "ChangeHostState"})
MiB = 1 << 20


def progress_line(progress: dict[str, Any]) -> str:
    """One line for a job's progress (``GET /v1/jobs/<uuid>``): overall percent, then each item's stage and
    memory/disk MiB processed of total."""
    parts = []
    for uuid, item in sorted((progress.get("items") or {}).items()):
        text = f"vm {uuid[:8]} {item.get('stage', '')}".rstrip()
        sizes = [f"{what} {int(item.get(what + 'Processed') or 0) // MiB}/{int(item[what + 'Total']) // MiB} MiB"
                 for what in ("memory", "disk") if item.get(what + "Total")]
        if sizes:
            text += f" ({', '.join(sizes)})"
        if item.get("percent") is not None:
            text += f" {item['percent']}%"
        parts.append(text)
    head = f"progress: {progress['percent']}%" if progress.get("percent") is not None else "progress:"
    return f"{head} {'; '.join(parts)}".rstrip()


def _ask_password(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("login: no password given and stdin is not a terminal; "
                         "use login <account> <password>")
    return getpass.getpass(prompt)


class Cli:
    """One CLI bound to one controller URL and one CLI home directory."""

    def __init__(
        self,
        url: str,
        home: Path,
        out: TextIO | None = None,
        err: TextIO | None = None,
        ask_password: Callable[[str], str] = _ask_password,
        ca: str | None = None,
    ) -> None:
        self.url = url
        self.client = Client(url, ca=ca)
        self.sessions = SessionStore(home / "session")
        self.cache = SchemaCache(home / "api-cache.json")
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.ask_password = ask_password
        self.outputs: list[str] = []  # printed replies, newest last (for `more`)
        self._schema: ApiSchema | None = None
        self._schema_fresh = False

    # ------------------------------------------------------------------ schema

    def schema(self, refresh: bool = False) -> ApiSchema:
        """The API schema: memoized, else cached, else fetched (``refresh`` forces a fetch).

        A controller without a usable OpenAPI document gives the 1.0 fallback; an unreachable one raises
        ConnectionFailure.
        """
        if self._schema is not None and not refresh:
            return self._schema
        cached = None if refresh else self.cache.load(self.url)
        if cached is not None:
            self._schema = cached
            return cached
        try:
            schema = from_openapi(self.client.get_json("/v1/openapi.json"))
        except (ApiError, ValueError) as e:
            self.err.write(f"warning: no API schema from the controller ({e}); using 1.0's parameter table\n")
            schema = fallback()
        else:
            try:
                self.cache.store(self.url, schema)
            except OSError as e:
                self.err.write(f"warning: cannot write the API cache {self.cache.path}: {e}\n")
        self._schema, self._schema_fresh = schema, True
        return schema

    def schema_or_none(self) -> ApiSchema | None:
        """The schema if it can be had without failing (for completion): cached or fetched."""
        try:
            return self.schema()
        except ConnectionFailure:
            return self.cache.load(self.url)

    # ------------------------------------------------------------------ commands

    def run_tokens(self, tokens: list[str]) -> int:
        """Run one command (API or built-in ``help``/``login``); returns the exit code."""
        try:
            if tokens and tokens[0] == "help":
                return self.help(tokens[1:])
            if tokens and tokens[0] == "login":
                tokens = self._login_tokens(tokens[1:])
            return self.execute(self.parse(tokens))
        except UsageError as e:
            self.err.write(f"error: {e}\n")
        except ConnectionFailure as e:
            self.err.write(f"error: {e}\n")
        return EXIT_USAGE

    def parse(self, tokens: list[str]) -> Command:
        """Parse with the current schema; an unknown API/parameter with a cached schema refetches once."""
        try:
            return parse_tokens(tokens, self.schema())
        except (UnknownApiError, UnknownParamError):
            if self._schema_fresh:
                raise
            return parse_tokens(tokens, self.schema(refresh=True))

    def execute(self, command: Command) -> int:
        """Call the API with the current session, print the reply, keep the session file up to date."""
        api, body = command.api, dict(command.body)
        session = self.sessions.get(self.url)
        if api in ("LogOut", "ValidateSession") and "sessionUuid" not in body:
            if session is None:
                self.err.write(f"{NOT_LOGGED_IN}\n" if api == "ValidateSession" else "not logged in\n")
                return EXIT_USAGE if api == "ValidateSession" else EXIT_OK
            body["sessionUuid"] = session
        if api not in NO_SESSION_APIS and session is None:
            self.err.write(f"{NOT_LOGGED_IN}\n")
            return EXIT_USAGE
        try:
            if api in PROGRESS_APIS:
                reply = self.client.call_job(api, body, session, self._progress())
            else:
                reply = self.client.call(api, body, None if api in LOGIN_APIS else session)
        except ApiError as e:
            return self._failed(e, body, session)
        self._remember(api, body, reply, session)
        self.show(reply)
        return EXIT_OK

    def _progress(self) -> Callable[[dict[str, Any]], None]:
        last = [""]

        def show(progress: dict[str, Any]) -> None:
            line = progress_line(progress)
            if line != last[0]:
                last[0] = line
                self.err.write(line + "\n")
                self.err.flush()

        return show

    def _failed(self, error: ApiError, body: dict[str, Any], session: str | None) -> int:
        self.err.write(f"error: {error}\n")
        expired = error.code == "ID.1001" and error.api not in LOGIN_APIS
        if expired and session is not None and body.get("sessionUuid", session) == session:
            self.sessions.forget(self.url)
        if expired:
            self.err.write(f"{NOT_LOGGED_IN}\n")
            return EXIT_USAGE
        return EXIT_API_ERROR

    def _remember(self, api: str, body: dict[str, Any], reply: dict[str, Any], session: str | None) -> None:
        if api in LOGIN_APIS:
            uuid = (reply.get("inventory") or {}).get("uuid")
            if isinstance(uuid, str) and uuid:
                self.sessions.put(self.url, uuid)
            else:
                self.err.write("warning: the login reply carries no session uuid; session not saved\n")
        elif api == "LogOut" and body.get("sessionUuid") == session:
            self.sessions.forget(self.url)

    def show(self, reply: dict[str, Any]) -> None:
        """Print warnings on ``err`` and the reply as 4-space-indented JSON with sorted keys."""
        reply = dict(reply)
        warnings = reply.pop("warnings", None) or []
        for warning in warnings if isinstance(warnings, list) else [warnings]:
            self.err.write(f"warning: {warning}\n")
        text = json.dumps(reply, indent=4, sort_keys=True, ensure_ascii=False)
        self.outputs.append(text)
        del self.outputs[:-50]
        self.out.write(text + "\n")

    # ------------------------------------------------------------------ built-ins

    def help(self, args: list[str]) -> int:
        """``help``: list APIs and built-ins; ``help <Api>``: its parameters."""
        schema = self.schema()
        if not args:
            names = schema.names()
            listing = "\n".join(_columns(names)) if names else "(the API list is not available)"
            self.out.write(f"{listing}\n\nbuilt-ins: {', '.join(BUILTINS)}\n"
                           "help <Api> shows its parameters; Query APIs take name<op>value conditions\n")
            return EXIT_OK
        check_api(args[0], schema)
        self.out.write(describe(schema, args[0]) + "\n")
        return EXIT_OK

    def _login_tokens(self, args: list[str]) -> list[str]:
        """``login [account [password]]`` or ``login accountName=.. password=..`` -> LogInByAccount tokens."""
        if any("=" in a for a in args):
            fields = dict(a.partition("=")[::2] for a in args)
        else:
            if len(args) > 2:
                raise UsageError("login takes at most an account name and a password")
            fields = dict(zip(("accountName", "password"), args, strict=False))
        fields.setdefault("accountName", "admin")
        if "password" not in fields:
            fields["password"] = self.ask_password(f"password for {fields['accountName']}: ")
        return ["LogInByAccount", *(f"{k}={v}" for k, v in fields.items())]


def _columns(names: list[str], width: int = 110) -> list[str]:
    size = max(len(n) for n in names) + 2
    per_line = max(1, width // size)
    rows = (names[i : i + per_line] for i in range(0, len(names), per_line))
    return ["".join(n.ljust(size) for n in row).rstrip() for row in rows]
