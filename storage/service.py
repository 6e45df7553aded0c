"""StorageService: the storage data plane of one agent (the object the agent's handlers call).

It knows the local primary storages initialised on this host (persisted in ``<state_dir>/storage.json``),
validates that every path it is given lies inside one of them, serialises operations on the same volume,
and owns one aiohttp client session (image downloads, host-to-host copy).

Guarantees: every method is idempotent; :meth:`start` reconciles the disk after a crash by removing the
``*.partial`` files of interrupted downloads, creates and copies; :meth:`stop` closes the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from storage import export, fetch, files, migrate, shared, snapshots
from storage.errors import InvalidArgument, NotFound
from storage.imagecache import CachedImage, ImageCache, read_cached
from storage.inspect import inspect_image
from storage.layout import PARTIAL_SUFFIX, LocalLayout, VolumeType, check_id, snapshot_path
from storage.local import Capacity, LocalStorage, VolumeInfo
from storage.rawrecv import RawBody
from zsutil.imagecheck import ImageInfo
from zsutil.revert import Reverter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BitsInfo:
    path: str
    existing: bool
    size: int | None = None
    md5: str | None = None


class StorageService:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._state_file = self.state_dir / "storage.json"
        self._roots: dict[str, str] = {}  # primary storage uuid -> url
        self._caches: dict[Path, ImageCache] = {}
        self._storages: dict[Path, LocalStorage] = {}  # one object per root: it keeps the usedByStorage figure
        self._locks: dict[Path, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        #: how an https destination agent is verified in host-to-host copies (the agent sets the controller's
        #: CA here, kvmagent.contract.tls); None: the system's CAs
        self.peer_tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the known storages and remove every ``*.partial`` file under them (crash leftovers)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._state_file.is_file():
            self._roots = json.loads(self._state_file.read_text()).get("primaryStorages", {})
        for url in self._roots.values():
            root = Path(url)
            # a shared storage's partial files may be another host's running download: left to that host
            if root.is_dir() and not shared.is_shared_root(root):  # noqa: ASYNC240
                for p in await asyncio.to_thread(files.remove_partials, root, PARTIAL_SUFFIX):
                    log.info("reconcile: removed interrupted file %s", p)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        return self._session

    # ------------------------------------------------------------ storages
    def _save(self) -> None:
        tmp = self._state_file.with_name(self._state_file.name + PARTIAL_SUFFIX)
        tmp.write_text(json.dumps({"primaryStorages": self._roots}))
        os.replace(tmp, self._state_file)

    def local(self, storage_path: str) -> LocalStorage:
        """The initialised storage at ``storage_path``; raise NotFound when this host never initialised it."""
        layout = LocalLayout.of(storage_path)
        if str(layout.root) not in self._roots.values() or not layout.marker.is_file():
            raise NotFound(
                f"local primary storage {layout.root} is not initialised on this host",
                details={"field": "storagePath", "value": storage_path},
            )
        return self._storage(layout)

    def _storage(self, layout: LocalLayout) -> LocalStorage:
        st = self._storages.get(layout.root)
        if st is None:
            st = self._storages[layout.root] = LocalStorage(layout)
        return st

    def _owner(self, path: str, field: str = "path") -> LocalStorage:
        for url in self._roots.values():
            st = self._storage(LocalLayout.of(url))
            try:
                st.layout.contain(path, field)
            except InvalidArgument:
                continue
            return st
        raise InvalidArgument(
            f"{field} {path!r} is inside no primary storage of this host",
            details={"field": field, "value": path},
        )

    def _lock(self, key: Path) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _cache(self, st: LocalStorage) -> ImageCache:
        return self._caches.setdefault(st.layout.root, ImageCache(st.layout, self.session))

    async def init(self, storage_path: str, ps_uuid: str, host_uuid: str | None = None) -> Capacity:
        check_id("primaryStorageUuid", ps_uuid)
        layout = LocalLayout.of(storage_path)
        cap = await self._storage(layout).init(ps_uuid, host_uuid)
        if self._roots.get(ps_uuid) != str(layout.root):
            self._roots[ps_uuid] = str(layout.root)
            self._save()
        return cap

    async def capacity(self, storage_path: str, *, measure_used: bool = False) -> Capacity:
        return await self.local(storage_path).capacity(measure_used=measure_used)

    # ------------------------------------------------------------ images and volumes
    async def download_image(
        self,
        storage_path: str,
        image_uuid: str,
        fmt: str,
        url: str | fetch.Source,
        *,
        md5: str | None = None,
        size: int | None = None,
    ) -> CachedImage:
        st = self.local(storage_path)
        return await self._cache(st).download(image_uuid, fmt, url, md5=md5, size=size)

    async def create_volume_from_cache(
        self,
        storage_path: str,
        kind: VolumeType,
        account_uuid: str,
        volume_uuid: str,
        image_uuid: str,
        size: int | None = None,
    ) -> Path:
        st = self.local(storage_path)
        cache = st.layout.template_cache(image_uuid)
        rec = await asyncio.to_thread(read_cached, cache)
        if rec is None:
            raise NotFound(
                f"image {image_uuid} is not in the cache of this host; download it first",
                details={"field": "imageUuid", "value": image_uuid},
            )
        path = st.layout.volume_path(kind, account_uuid, volume_uuid)
        async with self._lock(path):
            return await st.create_from_cache(
                kind, account_uuid, volume_uuid, cache, rec.format, rec.virtual_size, size
            )

    async def create_empty_volume(
        self, storage_path: str, kind: VolumeType, account_uuid: str, volume_uuid: str, size: int
    ) -> Path:
        st = self.local(storage_path)
        async with self._lock(st.layout.volume_path(kind, account_uuid, volume_uuid)):
            return await st.create_empty(kind, account_uuid, volume_uuid, size)

    async def create_volume_from_file(self, storage_path: str, kind: VolumeType, account_uuid: str,
                                      volume_uuid: str, source_path: str) -> Path:
        st = self.local(storage_path)
        source = st.layout.contain(source_path, "snapshotPath")
        async with self._lock(st.layout.volume_path(kind, account_uuid, volume_uuid)), self._lock(source):
            return await st.create_from_file(kind, account_uuid, volume_uuid, source)

    async def delete_volume(self, storage_path: str, install_path: str) -> bool:
        st = self.local(storage_path)
        async with self._lock(Path(install_path)):
            return await st.delete_volume(install_path)

    async def volume_sizes(self, storage_path: str, install_path: str) -> tuple[int, int]:
        return await self.local(storage_path).volume_sizes(install_path)

    async def volume_info(self, storage_path: str, install_path: str) -> VolumeInfo:
        return await self.local(storage_path).volume_info(install_path)

    async def inspect(self, path: str, expected: str | None = None) -> tuple[str, ImageInfo]:
        return await inspect_image(path, expected=expected)

    # ------------------------------------------------------------ snapshots
    def _volume(self, storage_path: str, volume_path: str) -> Path:
        return self.local(storage_path).layout.contain(volume_path, "volumePath")

    async def create_snapshot(self, storage_path: str, volume_path: str, snapshot_uuid: str) -> Path:
        vol = self._volume(storage_path, volume_path)
        async with self._lock(vol):
            return await snapshots.create(vol, snapshot_uuid)

    async def create_live_snapshot(
        self, storage_path: str, volume_path: str, snapshot_uuid: str, switch: snapshots.SwitchFn
    ) -> Path:
        """:func:`storage.snapshots.create_live` under the volume's lock (``switch`` makes the hypervisor
        move the running VM onto the new top)."""
        vol = self._volume(storage_path, volume_path)
        async with self._lock(vol):
            return await snapshots.create_live(vol, snapshot_uuid, switch)

    async def revert_snapshot(self, storage_path: str, volume_path: str, snapshot_path_: str) -> Path:
        vol = self._volume(storage_path, volume_path)
        snap = self.local(storage_path).layout.contain(snapshot_path_, "snapshotPath")
        async with self._lock(vol):
            return await snapshots.revert(vol, snap)

    async def delete_snapshot(self, storage_path: str, volume_path: str, snapshot_path_: str) -> bool:
        vol = self._volume(storage_path, volume_path)
        snap = self.local(storage_path).layout.contain(snapshot_path_, "snapshotPath")
        async with self._lock(vol):
            return await snapshots.delete(vol, snap)

    async def verify_chain(self, storage_path: str, volume_path: str) -> list[snapshots.ChainLink]:
        vol = self._volume(storage_path, volume_path)
        async with self._lock(vol):
            return await snapshots.verify(vol)

    async def export_to_sftp(self, storage_path: str, source_path: str, url: str, password: str,
                             host_key: str | None) -> export.Exported:
        """Flatten a volume or snapshot file of this storage into one qcow2 on an SFTP backup storage
        (``url`` = ``sftp://user@host[:port]/path``, the password and the pinned host key given apart); see
        :mod:`storage.export`."""
        from storage.fetch import sftp_source

        source = self.local(storage_path).layout.contain(source_path, "installPath")
        if not source.is_file():
            raise NotFound(f"installPath {source} does not exist", details={"field": "installPath",
                                                                            "value": str(source)})
        dest = sftp_source(url, password, host_key)
        async with self._lock(source):
            return await export.export_to_sftp(source, dest)

    @staticmethod
    def snapshot_path(volume_path: str, snapshot_uuid: str) -> Path:
        return snapshot_path(Path(volume_path), snapshot_uuid)

    # ------------------------------------------------------------ bits and copy
    async def bits(self, storage_path: str, paths: list[str], with_md5: bool) -> list[BitsInfo]:
        st = self.local(storage_path)
        out = []
        for p in paths:
            path = st.layout.contain(p)
            if not path.is_file():
                out.append(BitsInfo(path=str(path), existing=False))
                continue
            md5 = await self._md5(path) if with_md5 else None
            out.append(BitsInfo(path=str(path), existing=True, size=path.stat().st_size, md5=md5))
        return out

    @staticmethod
    async def _md5(path: Path) -> str:
        rec = await asyncio.to_thread(read_cached, path)  # cache files carry their md5
        return rec.file_md5 if rec else await asyncio.to_thread(files.file_digest, path, "md5")

    async def delete_paths(self, storage_path: str, paths: list[str]) -> list[str]:
        return await self.local(storage_path).delete_paths(paths)

    async def copy_to_remote(
        self,
        storage_path: str,
        paths: list[str],
        dest_url: str,
        dest_token: str,
        base_image_path: str | None = None,
    ) -> list[migrate.Copied]:
        """Copy files to the same paths on the destination agent; the base image only when missing there.
        On failure the files already copied are deleted on the destination (best effort)."""
        st = self.local(storage_path)
        checked = [st.layout.contain(p, "paths") for p in paths]
        for p in checked:
            if not p.is_file():
                raise NotFound(
                    f"{p} does not exist on the source host", details={"field": "paths", "value": str(p)}
                )
        out: list[migrate.Copied] = []
        sess = self.session()
        async with Reverter() as r:
            if base_image_path:
                base = st.layout.contain(base_image_path, "baseImagePath")
                md5 = await self._md5(base)
                if await migrate.remote_has(sess, dest_url, dest_token, str(st.layout.root), base, md5,
                                            tls=self.peer_tls):
                    out.append(migrate.Copied(str(base), base.stat().st_size, 0, "", skipped=True))
                else:  # the cache record travels with the image, so the destination's cache knows it
                    side = base.with_name(base.name + ".json")
                    checked[:0] = [base, side] if side.is_file() else [base]
            for p in checked:
                out.append(await migrate.send_file(dest_url, dest_token, p, tls=self.peer_tls))
                r.add(migrate.remote_delete, sess, dest_url, dest_token, str(st.layout.root), str(p), self.peer_tls)
            r.success()
        return out

    def receive_path(self, path: str) -> Path:
        """Where a received file goes: ``path`` checked to lie inside an initialised storage (InvalidArgument
        otherwise). Callers check it before reading any of the body."""
        return self._owner(path, "X-Zs-Path").layout.contain(path, "X-Zs-Path")

    async def receive_file(
        self, content: aiohttp.StreamReader | RawBody, path: str, size: int, version: int = 1
    ) -> migrate.Copied:
        final = self.receive_path(path)
        async with self._lock(final):
            return await migrate.receive(content, final, size, version)
