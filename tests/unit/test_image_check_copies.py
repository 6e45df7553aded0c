"""The image header check exists twice (``controller/backup/inspect.py`` on the backup storage host over SFTP,
``storage/inspect.py`` on the agent) because no neutral package both may import exists yet (DESIGN.md "Import
direction"; issue #18). Until it does, the two copies' tables must not drift apart."""

from __future__ import annotations

from controller.backup import inspect as bs_inspect
from storage import inspect as agent_inspect


def test_the_two_copies_share_their_tables() -> None:
    assert bs_inspect.FOREIGN_MAGICS == agent_inspect.FOREIGN_MAGICS
    assert bs_inspect.HEADER_BYTES == agent_inspect.HEADER_BYTES
    assert (bs_inspect.ISO_MAGIC, bs_inspect.ISO_MAGIC_OFFSET) == (agent_inspect.ISO_MAGIC,
                                                                   agent_inspect.ISO_MAGIC_OFFSET)
