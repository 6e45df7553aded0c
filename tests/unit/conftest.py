"""Fixtures for controller tests: an in-process controller with a fresh database and a logged-in client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api

from controller.app import create_app
from controller.config import ControllerConfig


@pytest.fixture
def controller_config(tmp_path: Path) -> ControllerConfig:
    return ControllerConfig(db_path=str(tmp_path / "controller.db"), log_dir=str(tmp_path / "log"),
                            image_import_dirs=[str(tmp_path)], allow_host_local_images=True)


@pytest.fixture
async def api(controller_config: ControllerConfig) -> AsyncIterator[Api]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as client:
        a = Api(client)
        await a.login()
        yield a
