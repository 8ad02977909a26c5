"""A real headless browser for the web page's tests and bench: Debian's chromium driven by
Selenium through chromedriver. Tests skip, with the reason, where either is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).parents[1] / "docs" / "img"


def require_browser() -> None:
    """Skip unless chromium, chromedriver and selenium are installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(
            f"no headless browser: {', '.join(missing)} missing (apt-get install chromium "
            "chromium-driver) - browser tests skipped"
        )
    pytest.importorskip("selenium", reason="selenium missing (pip install -e '.[dev]')")


def browser(width: int = 1280, height: int = 900, niced: Path | None = None) -> Any:
    """A headless Chromium; ``niced``: a folder for a wrapper that runs chromedriver and its
    browser at the lowest CPU priority (bench: a browser on another machine, roughly)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = CHROMEDRIVER
    if niced is not None:
        wrapper = niced / "chromedriver-niced"
        wrapper.write_text(f'#!/bin/sh\nexec nice -n 19 {CHROMEDRIVER} "$@"\n')
        wrapper.chmod(0o700)
        driver_path = str(wrapper)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def screenshot(driver: Any, name: str) -> None:
    """docs/img/web-NAME.png, only with FLOWEDGE_SCREENSHOTS=1 (CI leaves the tree clean)."""
    if os.environ.get("FLOWEDGE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"web-{name}.png"))


def start_station(config: dict[str, Any], folder: Path) -> subprocess.Popen:
    """``flowedge run`` on ``config`` (written to ``folder``) as its own process."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "flowedge.cli", "run", "--config", str(path)]
    log = (folder / "station.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(30)
