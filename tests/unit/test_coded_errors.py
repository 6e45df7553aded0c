"""Issue #18: one coded-error base for the agent and its data planes, one mapping to HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

from flatnet.errors import FlatNetError, NotPrepared
from kvmagent.contract.base import AgentError, ErrorBody
from kvmagent.driver.errors import DomainNotFound
from storage.errors import NotFound, StorageError
from zsutil.errors import CodedError

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_and_the_data_planes_share_one_base() -> None:
    for cls in (AgentError, StorageError, FlatNetError):
        assert issubclass(cls, CodedError), cls
        assert cls.__bases__ == (CodedError,), cls


def test_each_error_keeps_its_code_status_and_details_on_the_wire() -> None:
    cases = [(DomainNotFound("v1"), "VM.NOT_FOUND", 404, {"vmUuid": "v1"}),
             (NotFound("gone", details={"field": "installPath"}), "STORAGE.NOT_FOUND", 404, {"field": "installPath"}),
             (StorageError("boom"), "STORAGE.INTERNAL", 500, None),
             (NotPrepared("l3"), "NET.L3_NOT_PREPARED", 409, None),
             (FlatNetError("NET.X", "bad", status=400), "NET.X", 400, None)]
    for e, code, status, details in cases:
        body = e.body()
        assert ErrorBody.model_validate(body["error"]) == ErrorBody(code=code, message=e.message, details=details)
        assert (e.code, e.status) == (code, status)


def test_no_handler_translates_one_error_type_into_another() -> None:
    """The server's one mapping answers every coded error: a handler that catches a StorageError or a
    FlatNetError to re-raise it as an AgentError is a second mapping."""
    offenders = []
    for path in sorted((ROOT / "kvmagent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                if names & {"StorageError", "FlatNetError"} and any(
                        isinstance(n, ast.Raise) for n in ast.walk(node)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
