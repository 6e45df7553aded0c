"""scripts/api-coverage (the README's coverage table) and the OpenAPI document's aliases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from controller.api.registry import ALIASES, API

ROOT = Path(__file__).resolve().parents[2]


def _coverage(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "api-coverage"), *args], check=True,
                          capture_output=True, text=True, env=env, timeout=60).stdout


def test_coverage_is_computed_from_the_registry() -> None:
    import controller.services  # noqa: F401

    cov = json.loads(_coverage("--json"))
    names = [line.split("\t")[0] for line in (ROOT / "scripts" / "zstack-1.0-apis.tsv").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(names) == len(set(names)) == cov["total"] == 253
    implemented = {n for r in cov["areas"] for n in r["implemented"]}
    missing = {m["name"] for r in cov["areas"] for m in r["missing"]}
    assert implemented | missing == set(names) and not implemented & missing
    served = {n.lower() for n in API} | {a.lower() for a in ALIASES}
    assert implemented == {n for n in names if n.lower() in served}
    assert {"GetCpuMemoryCapacity", "AddKVMHost", "ReconnectSftpBackupStorage",
            "QueryVolumeSnapshotTree"} <= implemented
    assert cov["implemented"] == len(implemented) and cov["missing"] == 253 - len(implemented)
    assert "ReconnectBackupStorage" in cov["extra"] and "AddKvmHost" not in cov["extra"]
    md = _coverage("--markdown")
    assert f"| **total** | **253** | **{len(implemented)}** |" in md


async def test_openapi_lists_aliases(api: Any) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    for alias, target in ALIASES.items():
        op = doc["paths"][f"/v1/{alias}"]["post"]
        assert op["operationId"] == alias and f"1.0 name of {target}" in op["summary"]
        assert op["requestBody"] == doc["paths"][f"/v1/{target}"]["post"]["requestBody"]
    assert {"AddKVMHost", "ReconnectSftpBackupStorage"} <= set(ALIASES)
    status, body = await api.raw("ReconnectSftpBackupStorage", uuid="4" * 32)
    assert status == 404 and body["error"]["code"] == "SYS.1003" and "4" * 32 in body["error"]["details"]


def test_cli_completes_every_registered_api_and_alias() -> None:
    import controller.services  # noqa: F401
    from controller.api.openapi import openapi_document
    from controller.cli.schema import from_openapi

    apis = from_openapi(openapi_document()).apis
    assert set(API) | set(ALIASES) <= set(apis)
    assert {"vmInstanceUuid", "l3NetworkUuid"} <= set(apis["AttachL3NetworkToVm"])
