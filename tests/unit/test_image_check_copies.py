"""Issue #18: the image check existed twice (``controller/backup/inspect.py`` on the backup storage host over
SFTP, ``storage/inspect.py`` on the agent) because no neutral package both may import existed. Now both use
``zsutil.imagecheck``: one copy of the tables and rules, each side only raising its own error type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from controller.backup import inspect as bs_inspect
from storage import inspect as agent_inspect
from zsutil import imagecheck

ROOT = Path(__file__).resolve().parents[2]
SHARED = ("FOREIGN_MAGICS", "HEADER_BYTES", "ISO_MAGIC", "ISO_MAGIC_OFFSET", "USER_FORMATS", "_QCOW2")


@pytest.mark.parametrize("path", ["controller/backup/inspect.py", "storage/inspect.py"])
def test_neither_side_keeps_a_copy_of_the_tables_or_the_qcow2_parsing(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    assert not assigned & set(SHARED)
    unpacks = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "unpack_from"]
    assert unpacks == []


def test_both_sides_refuse_with_the_shared_rules_as_their_own_errors() -> None:
    head = b"KDMV" + bytes(600)
    with pytest.raises(agent_inspect.UnsafeImage, match="'vmdk'") as agent:
        agent_inspect.check_header(head, image="u", expected="raw")
    with pytest.raises(bs_inspect.UnsafeImage, match="'vmdk'") as controller:
        bs_inspect.check_header(head, url="u", declared="raw")
    with pytest.raises(imagecheck.ImageRejected) as shared:
        imagecheck.check_header(head, image="u", expected="raw")
    assert str(agent.value) == str(controller.value.details) == shared.value.message
    assert (agent.value.status, controller.value.status) == (400, 400)
    assert agent.value.details == {"field": "format", "value": "vmdk"}
