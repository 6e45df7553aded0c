"""System images the installer leaves for the controller to register: the virtual router's image.

The installer cannot register an image itself: an image lives on a backup storage, and a fresh install has none
yet. So it builds the router image and puts it into ``system_image_dir`` (by default
``/var/lib/zstack-py/import/system/``, inside an image import directory), named ``zstack-vrouter-<version>.qcow2``.
The controller registers every such file it has not registered yet, as an image with ``system`` true (the VM
wizard does not offer system images) on the oldest Connected+Enabled backup storage:

* at start (an upgrade's new router image is registered when the new release starts), and
* when a backup storage is added or reconnected (a fresh install: the first backup storage the admin adds).

A file is registered once: an image row whose url is the file's ``file://`` url (in any status) means done. An
image the admin expunged comes back at the next trigger; deleting the file from the directory stops that.
Registration runs in the background (the storage API does not wait for a 20 MiB copy) and is serialised, so two
triggers never register the same file twice. A failure is logged and retried at the next trigger.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from controller.api.context import ApiContext
from controller.core import Controller, on_start
from controller.errors import ApiError

log = logging.getLogger(__name__)

#: the files registered: name pattern → the image's description
KINDS = {re.compile(r"^zstack-vrouter-([0-9A-Za-z.+_-]+)\.qcow2$"): "the virtual router image (installed by "
                                                                      "scripts/install.sh)"}


def pending_files(directory: str) -> list[tuple[Path, str]]:
    """The system image files in ``directory`` (sorted by name) with their description; [] when it is missing."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in sorted(d.iterdir()):
        for pattern, what in KINDS.items():
            if pattern.match(p.name) and p.is_file():
                found.append((p, what))
    return found


async def register_system_images(core: Controller) -> list[str]:
    """Register the system image files not registered yet; returns the new images' uuids. Called by one
    :class:`_Registrar` per controller, so never twice at once."""
    files = pending_files(core.config.system_image_dir)
    if not files:
        return []
    bs = await core.db.fetchone("SELECT uuid FROM BackupStorage WHERE status='Connected' AND state='Enabled' "
                                "ORDER BY createDate, uuid LIMIT 1")
    if bs is None:
        return []
    done = []
    for path, what in files:
        url = path.resolve().as_uri()
        if await core.db.fetchone("SELECT uuid FROM Image WHERE url=?", (url,)) is not None:
            continue
        uuid = await _register(core, url, path.name.removesuffix(".qcow2"), what, bs["uuid"])
        if uuid:
            done.append(uuid)
    return done


async def _register(core: Controller, url: str, name: str, what: str, bs_uuid: str) -> str | None:
    from controller.backup.images import AddImageMsg, add_image

    msg = AddImageMsg.model_validate({"name": name, "description": what, "url": url, "format": "qcow2",
                                      "mediaType": "RootVolumeTemplate", "platform": "Linux", "system": True,
                                      "backupStorageUuids": [bs_uuid]})
    try:
        reply = await add_image(ApiContext(core, "AddImage"), msg)
    except ApiError as e:
        log.warning("system image %s: registering it on backup storage %s failed: %s", url, bs_uuid, e.details)
        return None
    inv: dict[str, Any] = reply["inventory"]
    log.info("system image %s registered as image %s (%s) on backup storage %s", url, inv["uuid"], name, bs_uuid)
    return str(inv["uuid"])


class _Registrar:
    """One registration at a time; a trigger during a registration makes it run once more afterwards (a
    trigger never cancels a copy under way)."""

    def __init__(self, core: Controller) -> None:
        self.core = core
        self.again = False
        self.running = False

    def trigger(self) -> None:
        if self.running:
            self.again = True
            return
        self.running = True
        self.core.tasks.start("system-images", self._run, restart=False)

    async def _run(self) -> None:
        try:
            while True:
                self.again = False
                await register_system_images(self.core)
                if not self.again:
                    return
        finally:
            self.running = False


def schedule(core: Controller) -> None:
    """Register in the background (a backup storage was added or reconnected, or the controller started)."""
    registrar = core.services.setdefault("system-images", _Registrar(core))
    registrar.trigger()


@on_start(66, "system images")
async def _start(core: Controller) -> None:
    schedule(core)
