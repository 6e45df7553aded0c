"""zstack-cli parser: 1.0's syntax -> (API, JSON body). Pure functions, no controller needed.

The seed command lines below are copied verbatim from the ZStack 1.0 release notes (the seed file).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from controller.cli.parser import (
    UnknownApiError,
    UnknownParamError,
    UsageError,
    hash_password,
    parse_condition,
    parse_line,
    parse_tokens,
    split_tags,
)
from controller.cli.schema import ApiSchema, fallback, from_openapi

CREATE_VM_USERDATA = "CreateVmInstance name=vm imageUuid=d720ff0c60ee48d3a2e6263dd3e12c33 instanceOfferingUuid=76789b62aeb542a5b4b8b8488fbaced2 l3NetworkUuids=37d3c4a1e2f14a1c8316a23531e62988,05266285f96245f096f3b7dce671991d defaultL3NetworkUuid=05266285f96245f096f3b7dce671991d systemTags='userdata::groups:\\n - ubuntu: [foo,bar]\\n - cloud-users\\n\\n# Add users to the system. Users are added after groups are added.\\nusers:\\n - default\\n - name: foobar\\n gecos: Foo B. Bar\\n primary-group: foobar\\n groups: users\\n selinux-user: staff_u\\n expiredate: 2012-09-01\\n ssh-import-id: foobar\\n lock-passwd: false\\n - name: barfoo\\n gecos: Bar B. Foo\\n sudo: ALL=(ALL) NOPASSWD:ALL\\n groups: users, admin\\n ssh-import-id: None\\n lock-passwd: true\\n ssh-authorized-keys:\\n - <ssh pub key 1>\\n - <ssh pub key 2>\\n - name: cloudy\\n gecos: Magic Cloud App Daemon User\\n inactive: true\\n system: true'"  # noqa: E501
CREATE_TAG_USERDATA = "CreateSystemTag resourceUuid=303bf80af28c4e23b9b8c20d4267356b resourceType=VmInstanceVO tag='userdata::groups:\\n - ubuntu: [foo,bar]\\n - cloud-users\\n\\n# Add users to the system. Users are added after groups are added.\\nusers:\\n - default\\n - name: foobar\\n gecos: Foo B. Bar\\n primary-group: foobar\\n groups: users\\n selinux-user: staff_u\\n expiredate: 2012-09-01\\n ssh-import-id: foobar\\n lock-passwd: false\\n - name: barfoo\\n gecos: Bar B. Foo\\n sudo: ALL=(ALL) NOPASSWD:ALL\\n groups: users, admin\\n ssh-import-id: None\\n lock-passwd: true\\n ssh-authorized-keys:\\n - <ssh pub key 1>\\n - <ssh pub key 2>\\n - name: cloudy\\n gecos: Magic Cloud App Daemon User\\n inactive: true\\n system: true'"  # noqa: E501
UPDATE_TAG_USERDATA = "UpdateSystemTag uuid=762c3047e05f471ea3fce13f808a50be tag='userdata::groups:\\n - ubuntu: [foo,bar]\\n - cloud-users\\n\\n# Add users to the system. Users are added after groups are added.\\nusers:\\n - default\\n - name: foobar\\n gecos: Foo B. Bar\\n primary-group: foobar\\n groups: users\\n selinux-user: staff_u\\n expiredate: 2012-09-01\\n ssh-import-id: foobar\\n lock-passwd: false\\n - name: barfoo\\n gecos: Bar B. Foo\\n sudo: ALL=(ALL) NOPASSWD:ALL\\n groups: users, admin\\n ssh-import-id: None\\n lock-passwd: true\\n ssh-authorized-keys:\\n - <ssh pub key 1>\\n - <ssh pub key 2>\\n - name: cloudy\\n gecos: Magic Cloud App Daemon User\\n inactive: true\\n system: true'"  # noqa: E501
CREATE_VM_SSHKEY = "CreateVmInstance name=vm imageUuid=d720ff0c60ee48d3a2e6263dd3e12c33 instanceOfferingUuid=76789b62aeb542a5b4b8b8488fbaced2 l3NetworkUuids=37d3c4a1e2f14a1c8316a23531e62988,05266285f96245f096f3b7dce671991d defaultL3NetworkUuid=05266285f96245f096f3b7dce671991d systemTags='sshkey::ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5x3AoWuiZawxXoBxEcOhhdVAST4kJA/cQ2zGnh3yZ/KBU+VILQHTkbNWAaRw3q0UtfpLfVj/KoPFr43qjGF+ud8B/rD7stsAvbNVdms81aBDAFZyiN7dhlwTK+XvCMhl4RxHUItm7+Y7gzb8jTHPoqlPzAw4r8enqhNf9ABG+kaXIDa0FPhVaMPoLzHWjTe34ONIBlxsY/y1Zle49vPVYS7oAHQTc7ly7bnGXffNJ18uF5M7HPUgsIDum8KICa2LmnXJeB2M9XZtXtJUdR1ZKXeQpRtikAm3G3CwFkDxWnx31dGr0lLa2aZ88LQ2iP8nb2NK58aKb4I9Aq19k44Rl root@yyy'"  # noqa: E501
CREATE_TAG_SSHKEY = 'CreateSystemTag resourceType=VmInstanceVO resourceUuid=606d9a2fa723407c93438789eaf72cea tag="sshkey::ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDdlfgEu4SmgAXaEhLtNljm4cqowdFSyOH7NtheqzZROaRNRJOYKCABUZLmsLv1pl3Av+m1vUUILPWNymxdCnhuaxl/vFtvyWrLChKR8s2Cpl24uFpvHaWO6JLd/RnSwj8LCsCreJ3Twq77T9MCwDVl15WNjn3WKuPfFKxmW7gQTDyDK1XX35n7RYSadurdVNmJTAsQWmszmGeBDVO6U7spRtH7nNrNAMVjaOHrPp5NbMRBVCyHfj1UY71bnIdVCa2mY/RtjIkcj4JNBaQ0JPnP1jw4Ig8WVkjn74T7U4chUHmu8jzwhv+++F7EGLSNdb85RKmY5IdHDd+dRuK3Rx67 root@bji-bm-node3"'  # noqa: E501
UPDATE_TAG_SSHKEY = "UpdateSystemTag uuid=762c3047e05f471ea3fce13f808a50be tag='sshkey::ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDdlfgEu4SmgAXaEhLtNljm4cqowdFSyOH7Nthe qzZROaRNRJOYKCABUZLmsLv1pl3Av+m1vUUILPWNymxdCnhuaxl/vFtvyWrLChKR8s2Cpl24uFpvHaWO6JLd/RnSwj8LCsCreJ3Twq77T9MCwDVl15WNjn3WKuPfFKxmW7gQTDyDK1XX35n7RYSadurdVNmJTAsQWmszmGeBDVO6U7spRtH7nNrNA MVjaOHrPp5NbMRBVCyHfj1UY71bnIdVCa2mY/RtjIkcj4JNBaQ0JPnP1jw4Ig8WVkjn74T7U4chUHmu8jzwhv+++F7EGLSNdb85RKmY5IdHDd+dRuK3Rx67 root@bji-bm-node3'"  # noqa: E501
DETACH_SERVICES = 'DetachNetworkServiceFromL3Network l3NetworkUuid=1a82c2691978476fa6cefa36bb9d4bfd networkServices=\'{"5d21ea0f39c04d6fb68cfaf5a37db4ad":["DHCP","DNS"]}\''  # noqa: E501
QUERY_L3_FIELDS = 'QueryL3Network fields=l2NetworkUuid, uuid=1a82c2691978476fa6cefa36bb9d4bfd'
ATTACH_SERVICES = 'AttachNetworkServiceToL3Network l3NetworkUuid=1a82c2691978476fa6cefa36bb9d4bfd networkServices=\'{"17864f985e584a9ba4cd81de215212ce":["DHCP","Userdata"]}\''  # noqa: E501


def _api(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


STR = {"type": "string"}
OPT_STR_LIST = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}

#: A small OpenAPI document shaped like pydantic's output (anyOf-null optionals, $ref'd enums).
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "ZStack-Py", "version": "0.1.0"},
    "paths": {
        f"/v1/{name}": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{name}"}}}}}}
        for name in ("CreateVmInstance", "CreateSystemTag", "UpdateSystemTag", "QueryL3Network",
                     "QuerySystemTag",
                     "AttachNetworkServiceToL3Network", "DetachNetworkServiceFromL3Network", "SetVmBootOrder",
                     "CreateInstanceOffering", "UpdateL3Network", "LogInByAccount", "UpdateAccount",
                     "CreateZone")
    } | {"/v1/jobs/{uuid}": {"get": {}}, "/v1/openapi.json": {"get": {}}},
    "components": {"schemas": {
        "CreateVmInstance": _api({
            "name": STR, "imageUuid": STR, "instanceOfferingUuid": STR, "l3NetworkUuids": {
                "type": "array", "items": STR}, "defaultL3NetworkUuid": {"anyOf": [STR, {"type": "null"}]},
            "dataDiskOfferingUuids": OPT_STR_LIST, "systemTags": OPT_STR_LIST, "userTags": OPT_STR_LIST,
            "strategy": {"anyOf": [{"$ref": "#/components/schemas/VmCreationStrategy"}, {"type": "null"}]},
            "timeout": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        }, ("name", "imageUuid", "instanceOfferingUuid", "l3NetworkUuids")),
        "VmCreationStrategy": {"type": "string", "enum": ["InstantStart", "JustCreate"]},
        "CreateSystemTag": _api({"resourceUuid": STR, "resourceType": STR, "tag": STR}),
        "UpdateSystemTag": _api({"uuid": STR, "tag": STR}),
        "QueryL3Network": _api({"conditions": {"type": "array", "items": {"type": "object"}}}),
        "QuerySystemTag": _api({"conditions": {"type": "array", "items": {"type": "object"}}}),
        "AttachNetworkServiceToL3Network": _api({"l3NetworkUuid": STR, "networkServices": {
            "type": "object", "additionalProperties": {"type": "array", "items": STR}}}),
        "DetachNetworkServiceFromL3Network": _api({"l3NetworkUuid": STR, "networkServices": {
            "type": "object", "additionalProperties": {"type": "array", "items": STR}}}),
        "SetVmBootOrder": _api({"uuid": STR, "bootOrder": OPT_STR_LIST}),
        "CreateInstanceOffering": _api({"name": STR, "cpuNum": {"type": "integer"}, "memorySize": {
            "type": "integer"}, "cpuSpeed": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}),
        "UpdateL3Network": _api({"uuid": STR, "system": {"type": "boolean"}, "ratio": {"type": "number"}}),
        "LogInByAccount": _api({"accountName": STR, "password": STR}, ("accountName", "password")),
        "UpdateAccount": _api({"uuid": STR, "password": {"anyOf": [STR, {"type": "null"}]}}),
        "CreateZone": _api({"name": STR, "description": STR, "systemTags": OPT_STR_LIST}),
    }},
}


@pytest.fixture
def schema() -> ApiSchema:
    return from_openapi(OPENAPI)


def _inner(line: str, key: str) -> str:
    """The quoted value of ``key='...'`` in a seed line (what the shell quoting protects)."""
    rest = line.split(f"{key}=", 1)[1]
    return rest[1:-1]


# ------------------------------------------------------------------ the seed's tag examples


@pytest.mark.parametrize("use_schema", [True, False])
def test_seed_userdata_create_vm_keeps_one_tag(schema: ApiSchema, use_schema: bool) -> None:
    cmd = parse_line(CREATE_VM_USERDATA, schema if use_schema else fallback())
    assert cmd.api == "CreateVmInstance"
    assert cmd.body["l3NetworkUuids"] == [
        "37d3c4a1e2f14a1c8316a23531e62988", "05266285f96245f096f3b7dce671991d"]
    assert cmd.body["defaultL3NetworkUuid"] == "05266285f96245f096f3b7dce671991d"
    tags = cmd.body["systemTags"]
    assert tags == [_inner(CREATE_VM_USERDATA, "systemTags")]
    assert "[foo,bar]" in tags[0] and "groups: users, admin" in tags[0]
    assert tags[0].startswith("userdata::groups:\\n - ubuntu") and tags[0].endswith("system: true")


@pytest.mark.parametrize(
    "line", [CREATE_TAG_USERDATA, UPDATE_TAG_USERDATA, CREATE_TAG_SSHKEY, UPDATE_TAG_SSHKEY])
def test_seed_tag_apis_send_the_tag_verbatim(schema: ApiSchema, line: str) -> None:
    cmd = parse_line(line, schema)
    quote = line.split("tag=", 1)[1][0]
    assert cmd.body["tag"] == line.split(f"tag={quote}", 1)[1][:-1]
    assert "tag" in cmd.body and "systemTags" not in cmd.body


def test_seed_sshkey_create_vm(schema: ApiSchema) -> None:
    cmd = parse_line(CREATE_VM_SSHKEY, schema)
    (tag,) = cmd.body["systemTags"]
    assert tag.startswith("sshkey::ssh-rsa AAAAB3NzaC1yc2E") and tag.endswith("k44Rl root@yyy")


def test_seed_update_sshkey_keeps_inner_spaces(schema: ApiSchema) -> None:
    cmd = parse_line(UPDATE_TAG_SSHKEY, schema)
    assert cmd.body["uuid"] == "762c3047e05f471ea3fce13f808a50be"
    assert "yOH7Nthe qzZROaRNR" in cmd.body["tag"]


def test_seed_fields_quirk_trailing_comma_and_space(schema: ApiSchema) -> None:
    cmd = parse_line(QUERY_L3_FIELDS, schema)
    assert cmd.body == {
        "fields": ["l2NetworkUuid"],
        "conditions": [{"name": "uuid", "op": "=", "value": "1a82c2691978476fa6cefa36bb9d4bfd"}],
    }


@pytest.mark.parametrize("use_schema", [True, False])
def test_seed_network_services_json(schema: ApiSchema, use_schema: bool) -> None:
    s = schema if use_schema else fallback()
    attach = parse_line(ATTACH_SERVICES, s)
    assert attach.body == {"l3NetworkUuid": "1a82c2691978476fa6cefa36bb9d4bfd",
                           "networkServices": {"17864f985e584a9ba4cd81de215212ce": ["DHCP", "Userdata"]}}
    detach = parse_line(DETACH_SERVICES, s)
    assert detach.body["networkServices"] == {"5d21ea0f39c04d6fb68cfaf5a37db4ad": ["DHCP", "DNS"]}


def test_network_services_python_literal_form_of_1_0(schema: ApiSchema) -> None:
    line = ("AttachNetworkServiceToL3Network l3NetworkUuid=1a82c2691978476fa6cefa36bb9d4bfd "
            "networkServices=\"{'17864f985e584a9ba4cd81de215212ce':['DHCP','Userdata']}\"")
    cmd = parse_line(line, schema)
    assert cmd.body["networkServices"] == {"17864f985e584a9ba4cd81de215212ce": ["DHCP", "Userdata"]}


@pytest.mark.parametrize("value", ["__import__('os').system('true')", "{'a': [1,", "['DHCP']"])
def test_network_services_rejects_code_and_non_dicts(schema: ApiSchema, value: str) -> None:
    with pytest.raises(UsageError, match="networkServices"):
        parse_tokens(["AttachNetworkServiceToL3Network", f"networkServices={value}"], schema)


# ------------------------------------------------------------------ tag-comma rule


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ("hostname::a,staticIp::x::y", ["hostname::a", "staticIp::x::y"]),
        ("userdata::a: [foo,bar],b", ["userdata::a: [foo,bar],b"]),
        ("userdata::x, y::z", ["userdata::x, y::z"]),  # ', y::' has a space: not a new tag
        ("hostname::a,", ["hostname::a"]),
        ("sshkey::ssh-rsa AAA,rootPassword::pw", ["sshkey::ssh-rsa AAA", "rootPassword::pw"]),
        ("a::1,,b::2", ["a::1", "b::2"]),
        ("userdata::[a,,b],,", ["userdata::[a,,b]"]),
        ("ephemeral::x.y-z,v2.tag-a::1", ["ephemeral::x.y-z", "v2.tag-a::1"]),
    ],
)
def test_split_tags(value: str, tags: list[str]) -> None:
    assert split_tags(value) == tags


def test_system_tags_two_tags_and_repeated_key_accumulate(schema: ApiSchema) -> None:
    line = "CreateZone name=z1 systemTags=hostname::a,staticIp::x::y systemTags=userdata::[p,q]"
    cmd = parse_line(line, schema)
    assert cmd.body["systemTags"] == ["hostname::a", "staticIp::x::y", "userdata::[p,q]"]


def test_system_tags_json_list_escape_hatch(schema: ApiSchema) -> None:
    cmd = parse_tokens(["CreateZone", 'systemTags=["userdata::a,b::c", "hostname::h"]'], schema)
    assert cmd.body["systemTags"] == ["userdata::a,b::c", "hostname::h"]


def test_user_tags_follow_the_tag_rule(schema: ApiSchema) -> None:
    cmd = parse_tokens(["CreateVmInstance", "userTags=owner::bob,x,y"], schema)
    assert cmd.body["userTags"] == ["owner::bob,x,y"]


# ------------------------------------------------------------------ other lists and scalar types


def test_plain_lists_split_on_every_comma_and_drop_empty_items(schema: ApiSchema) -> None:
    cmd = parse_line("SetVmBootOrder uuid=303bf80af28c4e23b9b8c20d4267356b bootOrder=HardDisk,CdRom,", schema)
    assert cmd.body == {"uuid": "303bf80af28c4e23b9b8c20d4267356b", "bootOrder": ["HardDisk", "CdRom"]}


def test_fallback_knows_1_0_list_params() -> None:
    cmd = parse_line("RecoverImage imageUuid=8c4c4c0bbac7441fb056d0d6e2168996 "
                     "backupStorageUuids=36c27e8ff05c4780bf6d2fa65700f22e", fallback())
    assert cmd.body["backupStorageUuids"] == ["36c27e8ff05c4780bf6d2fa65700f22e"]
    cmd = parse_line("CreateVmInstance dataDiskOfferingUuids=a,b memorySize=1073741824", fallback())
    assert cmd.body == {"dataDiskOfferingUuids": ["a", "b"], "memorySize": "1073741824"}


def test_integers_numbers_booleans_follow_the_schema(schema: ApiSchema) -> None:
    cmd = parse_line("CreateInstanceOffering name=small cpuNum=2 memorySize=1073741824 cpuSpeed=1", schema)
    assert cmd.body == {"name": "small", "cpuNum": 2, "memorySize": 1073741824, "cpuSpeed": 1}
    cmd = parse_line("UpdateL3Network uuid=u system=TRUE ratio=1.5", schema)
    assert cmd.body == {"uuid": "u", "system": True, "ratio": 1.5}
    assert parse_line("UpdateL3Network system=false", schema).body == {"system": False}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("CreateInstanceOffering memorySize=1G", 'memorySize="1G": expected an integer'),
        ("UpdateL3Network system=yes", 'system="yes": expected true or false'),
        ("UpdateL3Network ratio=x", 'ratio="x": expected a number'),
    ],
)
def test_bad_typed_values_name_field_and_value(schema: ApiSchema, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_line(line, schema)


def test_value_keeps_everything_after_the_first_equals(schema: ApiSchema) -> None:
    cmd = parse_line("CreateZone name=a=b description='x = y'", schema)
    assert cmd.body == {"name": "a=b", "description": "x = y"}


# ------------------------------------------------------------------ queries


@pytest.mark.parametrize(
    ("token", "condition"),
    [
        ("name=vm1", ("name", "=", "vm1")),
        ("vmInstanceUuid=null", ("vmInstanceUuid", "is null", "")),
        ("state!=Running", ("state", "!=", "Running")),
        ("hostUuid!=null", ("hostUuid", "is not null", "")),
        ("cpuNum>=2", ("cpuNum", ">=", "2")),
        ("cpuNum<=4", ("cpuNum", "<=", "4")),
        ("memorySize>1024", ("memorySize", ">", "1024")),
        ("memorySize<2048", ("memorySize", "<", "2048")),
        ("uuid?=a,b,c", ("uuid", "in", "a,b,c")),
        ("uuid!?=a,b", ("uuid", "not in", "a,b")),
        ("name~=web", ("name", "like", "%web%")),
        ("name~=web%", ("name", "like", "web%")),
        ("name~=we_b", ("name", "like", "we_b")),
        ("name!~=web", ("name", "not like", "%web%")),
        ("name!~=%web", ("name", "not like", "%web")),
        ("vmNics.ip=192.168.0.10", ("vmNics.ip", "=", "192.168.0.10")),
        ("__systemTag__=hostname::vm1", ("__systemTag__", "=", "hostname::vm1")),
        ("description=a=b", ("description", "=", "a=b")),
        ("description>=x<y", ("description", ">=", "x<y")),
        ("name=", ("name", "=", "")),
    ],
)
def test_every_query_operator(token: str, condition: tuple[str, str, str]) -> None:
    name, op, value = condition
    assert parse_condition(token) == {"name": name, "op": op, "value": value}


def test_seed_query_lines(schema: ApiSchema) -> None:
    cmd = parse_line("QuerySystemTag resourceUuid=303bf80af28c4e23b9b8c20d4267356b tag~=userdata%", schema)
    assert cmd.body == {"conditions": [
        {"name": "resourceUuid", "op": "=", "value": "303bf80af28c4e23b9b8c20d4267356b"},
        {"name": "tag", "op": "like", "value": "userdata%"},
    ]}
    assert parse_line("QueryHost", fallback()).body == {"conditions": []}


def test_query_reserved_keys_are_message_fields(schema: ApiSchema) -> None:
    line = ("QueryL3Network count=true limit=10 start=5 timeout=60000 replyWithCount=False sortBy=name "
            "sortDirection=desc fields=uuid,name name=l3 "
            "conditions='[{\"name\":\"state\",\"op\":\"=\",\"value\":\"Enabled\"}]'")
    cmd = parse_line(line, schema)
    assert cmd.body == {
        "count": True, "limit": 10, "start": 5, "timeout": 60000, "replyWithCount": False, "sortBy": "name",
        "sortDirection": "desc", "fields": ["uuid", "name"],
        "conditions": [{"name": "state", "op": "=", "value": "Enabled"},
                       {"name": "name", "op": "=", "value": "l3"}],
    }


def test_query_reserved_key_with_other_operator_is_a_condition(schema: ApiSchema) -> None:
    assert parse_line("QueryL3Network limit>=3", schema).body == {
        "conditions": [{"name": "limit", "op": ">=", "value": "3"}]}


@pytest.mark.parametrize(("token", "message"), [("limit=ten", "expected an integer"),
                                                ("count=maybe", "expected true or false")])
def test_query_reserved_key_bad_values(schema: ApiSchema, token: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_tokens(["QueryHost", token], fallback())


@pytest.mark.parametrize("token", ["uuid", "=x", "a b", "-x=1", "name!x"])
def test_bad_query_tokens(token: str) -> None:
    with pytest.raises(UsageError, match="is not a query condition: expected name<op>value"):
        parse_tokens(["QueryHost", token], fallback())


# ------------------------------------------------------------------ errors


def test_token_without_equals_is_named(schema: ApiSchema) -> None:
    with pytest.raises(UsageError, match=r'"imageUuid" is not a parameter: expected name=value'):
        parse_line("CreateVmInstance name=vm imageUuid", schema)


def test_unknown_api_with_close_matches(schema: ApiSchema) -> None:
    with pytest.raises(UnknownApiError, match=r'"CreateVmInstanc" is not an API; did you mean CreateVmI'):
        parse_line("CreateVmInstanc name=vm", schema)
    with pytest.raises(UnknownApiError, match=r'"createzone" is not an API; did you mean CreateZone\?'):
        parse_line("createzone name=z", schema)
    with pytest.raises(UnknownApiError, match=r"\"Foo\" is not an API; type 'help'"):
        parse_line("Foo", schema)


def test_fallback_accepts_any_api_name_but_not_junk() -> None:
    assert parse_line("CreateZone name=z", fallback()).body == {"name": "z"}
    with pytest.raises(UnknownApiError, match='"create-zone" is not an API'):
        parse_line("create-zone name=z", fallback())


def test_unknown_parameter_with_close_matches(schema: ApiSchema) -> None:
    message = '"l3NetworkUuid" is not a parameter of CreateVmInstance; did you mean l3NetworkUuids'
    with pytest.raises(UnknownParamError, match=message):
        parse_line("CreateVmInstance l3NetworkUuid=x", schema)


def test_repeated_scalar_parameter_is_refused(schema: ApiSchema) -> None:
    with pytest.raises(UsageError, match='parameter "name" of CreateZone is given twice'):
        parse_line("CreateZone name=a name=b", schema)


@pytest.mark.parametrize("line", ["", "   "])
def test_empty_line(schema: ApiSchema, line: str) -> None:
    with pytest.raises(UsageError, match="empty command"):
        parse_line(line, schema)


def test_unbalanced_quotes(schema: ApiSchema) -> None:
    with pytest.raises(UsageError, match="check the quotes"):
        parse_line("CreateZone name='z1", schema)


# ------------------------------------------------------------------ passwords


def test_password_is_sent_as_sha512(schema: ApiSchema) -> None:
    digest = hashlib.sha512(b"password").hexdigest()
    assert hash_password("password") == digest
    assert digest.startswith("b109f3bb") and digest.endswith("0cacbc86")  # reference §1.5
    cmd = parse_line("LogInByAccount accountName=admin password=password", schema)
    assert cmd.body == {"accountName": "admin", "password": digest}
    update = parse_line("UpdateAccount uuid=u password=s3cret", schema)
    assert update.body["password"] == hash_password("s3cret")
    for api in ("LogInByUser", "CreateAccount", "CreateUser", "UpdateUser"):
        assert parse_tokens([api, "password=x"], fallback()).body["password"] == hash_password("x")
    assert parse_tokens(["AddKvmHost", "password=x"], fallback()).body["password"] == "x"


# ------------------------------------------------------------------ OpenAPI reduction


def test_openapi_reduction(schema: ApiSchema) -> None:
    assert schema.version == "0.1.0"
    assert "CreateVmInstance" in schema.names() and not any("/" in n or "." in n for n in schema.names())
    params = schema.params("CreateVmInstance")
    assert params is not None
    assert params["l3NetworkUuids"].type == "array" and params["l3NetworkUuids"].required
    assert params["systemTags"].type == "array" and not params["systemTags"].required
    assert params["strategy"].choices == ("InstantStart", "JustCreate")
    assert params["timeout"].type == "integer"
    services = schema.params("AttachNetworkServiceToL3Network")
    assert services is not None and services["networkServices"].type == "object"


def test_openapi_rejects_non_openapi() -> None:
    with pytest.raises(ValueError, match="not an OpenAPI document"):
        from_openapi({"hello": "world"})
