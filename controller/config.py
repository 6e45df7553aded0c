"""Controller settings (``/etc/zstack-py/controller.json`` or environment), loaded once at start."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

DEFAULT_CONFIG = Path("/etc/zstack-py/controller.json")


#: settings given as comma-separated lists in the environment
LIST_KEYS = ("image_import_dirs", "image_url_allowed_networks", "tls_names")


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen_host: str = "0.0.0.0"
    port: int = 8080
    db_path: str = "/var/lib/zstack-py/controller.db"
    log_dir: str = "/var/log/zstack-py"
    #: clear-text admin password used when the admin account is first created
    admin_password: str = "password"
    #: URL the agents use to reach this controller (None: derived from the host's address at AddKvmHost)
    public_url: str | None = None
    #: where AddKvmHost finds the wheel of this package to install on hosts
    agent_package_dir: str = "/var/lib/zstack-py/packages"
    #: seconds a connection may take to send a request's headers (and may stay idle between requests):
    #: slow clients cannot hold connections open
    header_timeout: float = 15.0
    #: the key file that encrypts stored host/backup-storage passwords (None: controller.key beside db_path)
    secret_key_path: str | None = None
    #: AddImage reads ``file://`` urls only inside these directories (real path after symlinks)
    image_import_dirs: list[str] = ["/var/lib/zstack-py/import"]
    #: where the installer leaves system images (the router image) for the controller to register on the first
    #: backup storage (controller/backup/system_images.py); must lie inside one of ``image_import_dirs``
    system_image_dir: str = "/var/lib/zstack-py/import/system"
    #: hosts fetch images only from backup storage; True (labs and tests only) lets AddImage without any backup
    #: storage record a ``file://`` image (inside ``image_import_dirs``) that hosts copy from their own disk
    allow_host_local_images: bool = False
    #: networks AddImage may download from although they are loopback/link-local/... (a lab mirror; tests)
    image_url_allowed_networks: list[str] = []
    #: TLS (controller/tls.py): where the controller's CA and certificate live (None: ``pki/`` beside db_path)
    tls_dir: str | None = None
    #: agent traffic over TLS (default on): hosts deployed over SSH get a certificate from the CA, serve HTTPS
    #: and report events to the controller's TLS listener. False (explicit) deploys plain-HTTP agents.
    agent_tls: bool = True
    #: the controller's TLS listener for the agents' events channel (0: any free port)
    agent_tls_port: int = 8443
    #: serve the API and web console over HTTPS on ``port`` (certificate: api_tls_cert/api_tls_key if given,
    #: else one from the controller's CA)
    api_tls: bool = False
    api_tls_cert: str | None = None
    api_tls_key: str | None = None
    #: the CA of an operator-provided api_tls_cert (zstack-ctl verifies the API with it; None: the system's CAs)
    api_tls_ca: str | None = None
    #: extra names (DNS names or IPs) in the controller's own certificate, besides localhost and this host's name
    tls_names: list[str] = []

    @model_validator(mode="after")
    def _api_tls_pair(self) -> ControllerConfig:
        if (self.api_tls_cert is None) != (self.api_tls_key is None):
            raise ValueError("api_tls_cert and api_tls_key go together: give both (an operator's certificate) or "
                             "neither (a certificate from the controller's CA)")
        return self

    @classmethod
    def load(cls, path: str | Path | None = None) -> ControllerConfig:
        p = Path(path or os.environ.get("ZSTACK_CONTROLLER_CONFIG") or DEFAULT_CONFIG)
        data = json.loads(p.read_text()) if p.exists() else {}
        for key in cls.model_fields:
            env = os.environ.get(f"ZSTACK_{key.upper()}")
            if env is not None:
                data[key] = env.split(",") if key in LIST_KEYS else env
        return cls.model_validate(data)
