"""Image records: add (file:// until backup storage lands), update, change state, delete, bad input."""

from __future__ import annotations

from pathlib import Path

from apiclient import Api


async def test_image_record_lifecycle(api: Api, tmp_path: Path) -> None:
    (tmp_path / "tiny.qcow2").write_bytes(b"QFI\xfb")  # inside the import directory of the test config
    img = (await api.call("AddImage", name="tiny", url=f"file://{tmp_path}/tiny.qcow2", format="qcow2",
                          systemTags=[], userTags=["tier::gold"]))["inventory"]
    assert {k: img[k] for k in ("name", "format", "mediaType", "platform", "status", "state", "system")} == {
        "name": "tiny", "format": "qcow2", "mediaType": "RootVolumeTemplate", "platform": "Linux",
        "status": "Ready", "state": "Enabled", "system": False}
    upd = (await api.call("UpdateImage", uuid=img["uuid"], name="tiny2", guestOsType="Linux", system=True))
    assert upd["inventory"]["name"] == "tiny2" and upd["inventory"]["system"] is True
    st = await api.call("ChangeImageState", uuid=img["uuid"], stateEvent="disable")
    assert st["inventory"]["state"] == "Disabled"
    s, b = await api.raw("UpdateImage", uuid=img["uuid"], platform="BeOS")
    assert s == 400 and "platform" in b["error"]["details"] and "BeOS" in b["error"]["details"]
    assert (await api.query("QueryImage", ("uuid", "=", img["uuid"])))[0]["platform"] == "Linux"
    await api.call("DeleteImage", uuid=img["uuid"])  # image/deletionPolicy defaults to Delay (§3.10)
    assert (await api.query("QueryImage", ("uuid", "=", img["uuid"])))[0]["status"] == "Deleted"
    await api.call("ExpungeImage", imageUuid=img["uuid"])
    assert await api.query("QueryImage") == []
    assert await api.query("QueryUserTag", ("resourceUuid", "=", img["uuid"])) == []
    await api.call("DeleteImage", uuid=img["uuid"])  # unknown uuid: success, as in 1.0


async def test_add_image_bad_input_writes_nothing(api: Api) -> None:
    for params, word in [({"name": "x", "url": "file:///a", "format": "vmdk"}, "format"),
                         ({"name": "x", "format": "qcow2"}, "url"),
                         ({"name": "x", "url": "ftp://h/a", "format": "qcow2"}, "url")]:
        s, b = await api.raw("AddImage", **params)
        assert s == 400 and b["error"]["code"] == "SYS.1007" and word in b["error"]["details"], b
    assert await api.query("QueryImage") == []
