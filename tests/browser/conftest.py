"""Browser tier: the web console in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium with explicit paths: nothing is downloaded) against an in-process controller with one testbed host
running real TCG guests. Needs root (the testbed); run it through ``/work/wt/run-heavy``.

The testbed is this tier's own (``$ZSTACK_BROWSER_TESTBED_DIR``, prefix ``tbu``, management 10.95.0.0/24), so
it can run in the same pytest session as the e2e tier's.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from lab import Testbed, TinyImage, bring_up, footprint, leftovers, tear_down, tiny_image

STATE_DIR = Path(os.environ.get("ZSTACK_BROWSER_TESTBED_DIR", "/var/lib/zstack-py-testbed-browser"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser_testbed() -> Iterator[Testbed]:
    tear_down(STATE_DIR)
    tb = bring_up(STATE_DIR, hosts=1, prefix="tbu", mgmt_net="10.95.0")
    try:
        yield tb
    finally:
        fp = footprint(tb)
        tear_down(STATE_DIR)
        left = leftovers(fp)
        assert not left, f"scripts/testbed down left: {left}"


@pytest.fixture(scope="session")
def browser_tiny() -> TinyImage:
    return tiny_image()


@pytest.fixture
def chrome() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: scripts/install.sh --dev installs chromium and chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
              "--disable-gpu", "--lang=en-US", "--force-prefers-reduced-motion"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
