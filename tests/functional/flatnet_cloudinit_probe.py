"""Run cloud-init's CloudStack or Ec2 datasource as a library (executed with Debian's /usr/bin/python3
inside a VM namespace by test_flatnet_metadata.py). Prints one JSON object.

usage: flatnet_cloudinit_probe.py cloudstack|ec2 <tmpdir> [<dhclient lease dir>]
       flatnet_cloudinit_probe.py users <yaml file>
"""

import json
import sys

from cloudinit import distros, helpers, util


def _distro(tmp):
    paths = helpers.Paths({"cloud_dir": tmp + "/cloud", "run_dir": tmp + "/run"})
    return paths, distros.fetch("debian")("debian", {}, paths)


def main():
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "users":
        from cloudinit.distros import ug_util
        cfg = util.load_yaml(open(arg).read())
        users, groups = ug_util.normalize_users_groups(cfg, _distro("/tmp")[1])
        print(json.dumps({"users": sorted(users), "groups": sorted(groups)}))
        return
    paths, distro = _distro(arg)
    wait = {"max_wait": 6, "timeout": 2}
    sys_cfg = {"datasource": {"CloudStack": dict(wait), "Ec2": dict(wait, strict_id=False,
                                                                    metadata_urls=["http://169.254.169.254"])}}
    if mode == "cloudstack":
        from cloudinit.sources import DataSourceCloudStack as cs
        cs.get_dhclient_d = lambda: sys.argv[3]  # where our dhclient wrote its lease
        ds = cs.DataSourceCloudStack(sys_cfg, distro, paths)
    else:
        from cloudinit.sources import DataSourceEc2 as ec2
        ds = ec2.DataSourceEc2(sys_cfg, distro, paths)
    ok = ds._get_data()
    raw = ds.userdata_raw
    print(json.dumps({
        "ok": bool(ok),
        "userdata": raw.decode() if isinstance(raw, bytes) else raw,
        "instance_id": ds.metadata.get("instance-id") if ds.metadata else None,
        "hostname": ds.metadata.get("local-hostname") if ds.metadata else None,
        "keys": ds.get_public_ssh_keys() if ok else [],
        "server": getattr(ds, "vr_addr", None) or getattr(ds, "metadata_address", None),
        "cfg": ds.get_config_obj() if mode == "cloudstack" else {},
    }))


main()
