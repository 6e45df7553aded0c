"""The agent's configuration: ``/etc/zstack-py/kvmagent.yaml`` (path overridable with ``--config``).

Example::

    host_uuid: 0a1b2c3d4e5f60718293a4b5c6d7e8f9
    token: s3cr3t-token-from-the-controller
    controller_url: http://10.0.0.1:8080
    listen_ip: 10.0.0.11          # the host's management IP
    port: 7070
    libvirt_uri: qemu:///system
    domain_type: auto             # auto | kvm | qemu
    state_dir: /var/lib/zstack-py
    log_dir: /var/log/zstack-py
    storage_roots: [/var/lib/zstack-py, /zstack_ps, /data]   # where local primary storages may be created
    tls_cert: /etc/zstack-py/tls/agent.crt   # serve HTTPS with this certificate and key (written by the
    tls_key: /etc/zstack-py/tls/agent.key    # controller at AddKvmHost/ReconnectHost; both or neither)
    tls_ca: /etc/zstack-py/tls/ca.crt        # the controller's CA: the only one trusted for the controller
                                             # (events channel) and for other agents (volume copies)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PATH = Path("/etc/zstack-py/kvmagent.yaml")
#: where local primary storages usually live (1.0's examples use /zstack_ps; ours /var/lib/zstack-py/...)
DEFAULT_STORAGE_ROOTS = ("/var/lib/zstack-py", "/var/lib/zstack", "/zstack_ps", "/data", "/mnt", "/srv",
                         "/storage")


class ConfigError(Exception):
    """The configuration file is missing or invalid; the message names the file, field and value."""


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_uuid: str = Field(min_length=1)
    token: str = Field(min_length=8)
    controller_url: str | None = None
    listen_ip: str
    port: int = Field(7070, ge=0, le=65535)
    libvirt_uri: str = "qemu:///system"
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    state_dir: Path = Path("/var/lib/zstack-py")
    log_dir: Path = Path("/var/log/zstack-py")
    #: ``/localstorage/init`` accepts only primary storage urls inside one of these directories (real paths);
    #: the controller cannot change this list, so even a caller with this host's token cannot make the agent
    #: create and write a storage in a system directory. Add the directories your local PS urls live in.
    storage_roots: list[str] = Field(default_factory=lambda: list(DEFAULT_STORAGE_ROOTS))
    #: HTTPS (kvmagent.contract.tls): certificate and key of this agent, and the controller's CA certificate
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> AgentConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both (HTTPS) or neither (plain HTTP)")
        return self

    @field_validator("listen_ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        ipaddress.ip_address(v)
        return v

    @field_validator("controller_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v


def load_config(path: Path = DEFAULT_PATH) -> AgentConfig:
    """Read and validate ``path``; raises :class:`ConfigError` naming the file and the bad fields."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read agent config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"agent config {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"agent config {path} must be a YAML mapping, got {type(data).__name__}")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"agent config {path} is invalid: {problems}") from e
