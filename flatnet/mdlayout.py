"""The metadata tree one VM sees (pure): CloudStack layout and EC2 layout, the caller's own keys only.

:func:`resolve` maps a request path to (status, body) for one :class:`UserdataSpec`. Layouts:

* ``/<v>/user-data``; ``/<v>/meta-data/`` (index, one line per key this VM has, ``public-keys/`` as a
  directory); ``/<v>/meta-data/<key>``; ``/<v>/meta-data/public-keys/`` → ``0=<name>``;
  ``/<v>/meta-data/public-keys/0/openssh-key``; CloudStack's short form ``/<v>/<key>``.
* Key bodies (``public-keys/<i>/openssh-key`` and CloudStack's ``public-keys``) are files of lines: every
  key line ends with a newline, as EC2 serves them (a guest's ``while read`` loop would drop an
  unterminated last line: the key would never be installed).
* ``<v>`` is ``latest`` or an EC2 API date such as ``2009-04-04`` (cloud-init's Ec2 datasource probes
  dates and falls back to 2009-04-04).
"""

from __future__ import annotations

import re

from flatnet.model import UserdataSpec
from flatnet.userdata import render_userdata

_VERSION = re.compile(r"latest|\d{4}-\d{2}-\d{2}")
NOT_FOUND = (404, "not found\n")


def metadata_keys(spec: UserdataSpec) -> dict[str, str]:
    """The leaf keys of this VM's meta-data (only keys that have a value)."""
    hostname = spec.hostname or ""
    values = {
        "instance-id": spec.instance_id or spec.vm_uuid,
        "vm-id": spec.vm_uuid,
        "local-hostname": hostname,
        "hostname": hostname,
        "local-ipv4": spec.vm_ip,
        "service-offering": spec.service_offering or "",
        "availability-zone": spec.availability_zone or "",
    }
    return {k: v for k, v in values.items() if v}


def key_names(spec: UserdataSpec) -> list[str]:
    """One unique name per public key: the key's comment when it has one, else ``key-<i>``."""
    names: list[str] = []
    for i, key in enumerate(spec.ssh_keys):
        parts = key.split()
        base = re.sub(r"[^A-Za-z0-9@._-]", "_", parts[2]) if len(parts) >= 3 else f"key-{i}"
        name = base if base not in names else f"{base}-{i}"
        names.append(name)
    return names


def resolve(spec: UserdataSpec, path: str) -> tuple[int, str]:
    """Status and body for ``path`` as seen by the VM of ``spec``."""
    parts = [p for p in path.split("/") if p]
    if not parts or not _VERSION.fullmatch(parts[0]):
        return (200, "latest\n") if not parts else NOT_FOUND
    rest = parts[1:]
    userdata = render_userdata(spec.userdata, spec.ssh_keys, spec.root_password)
    if not rest:
        return 200, "meta-data\n" + ("user-data\n" if userdata is not None else "")
    if rest == ["user-data"]:
        return (200, userdata) if userdata is not None else NOT_FOUND
    keys = metadata_keys(spec)
    if rest[0] == "meta-data":
        return _meta(spec, keys, rest[1:])
    if len(rest) == 1 and rest[0] in keys:  # CloudStack's /latest/<key>
        return 200, keys[rest[0]]
    if rest == ["public-keys"] and spec.ssh_keys:
        return 200, _lines(spec.ssh_keys)
    return NOT_FOUND


def _lines(items: tuple[str, ...] | list[str]) -> str:
    return "".join(f"{i}\n" for i in items)


def _meta(spec: UserdataSpec, keys: dict[str, str], rest: list[str]) -> tuple[int, str]:
    if not rest:
        index = list(keys) + (["public-keys/"] if spec.ssh_keys else [])
        return 200, "\n".join(index)
    if len(rest) == 1 and rest[0] in keys:
        return 200, keys[rest[0]]
    if rest[0] != "public-keys" or not spec.ssh_keys:
        return NOT_FOUND
    names = key_names(spec)
    if len(rest) == 1:
        return 200, "\n".join(f"{i}={n}" for i, n in enumerate(names))
    if not rest[1].isdigit() or int(rest[1]) >= len(names):
        return NOT_FOUND
    i = int(rest[1])
    if len(rest) == 2:
        return 200, "openssh-key"
    if len(rest) == 3 and rest[2] == "openssh-key":
        return 200, _lines([spec.ssh_keys[i]])
    return NOT_FOUND


def password_reply(spec: UserdataSpec | None, request: str | None, saved: bool) -> tuple[str, bool]:
    """CloudStack password server: (body, new saved flag) for header ``DomU_Request: <request>``."""
    if spec is None or request is None:
        return "bad_request", saved
    if request == "send_my_password":
        if not spec.root_password or saved:
            return "saved_password", saved
        return spec.root_password, saved
    if request == "saved_password":
        return "saved_password", True
    return "bad_request", saved
