"""A real browser for the page's tests: headless Chromium from Debian's packages, driven by
Selenium through Debian's chromedriver (named explicitly, so Selenium downloads nothing), and
axe-core for the accessibility check (installed by scripts/test.sh from the npm registry into
``.cache/axe``). Without them the browser tests skip, except in CI (``S25RBL_CI``), where they
fail. Screenshots go to ``test-artifacts/`` (not committed)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("S25RBL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("S25RBL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
DESKTOP = (1280, 900)
PHONE = (390, 844)
# What headless Chromium needs as root in a container, and nothing that reaches the network.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--lang=en-US",
)


def missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found (Debian package {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra)"
    if not AXE.exists():
        return f"{AXE} not found (scripts/test.sh installs axe-core from npm)"
    return None


def need_browser() -> None:
    problem = missing()
    if problem is not None:
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{problem} (S25RBL_CI is set: CI must not skip the browser tests)")
        pytest.skip(problem)


def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), quit afterwards."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="s25rbl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def viewport(driver: Any, size: tuple[int, int], dark: bool = False) -> None:
    """Emulate a screen of ``size`` CSS pixels (a phone: 390 wide) and a colour scheme."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )


def screenshot(driver: Any, name: str, *, full: bool = True) -> Path:
    """The page as a PNG under ``test-artifacts/ui/``: the whole page, or the viewport."""
    import base64

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full}
    if full:
        width = driver.execute_script("return document.documentElement.clientWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        params["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(data))
    return path


def axe_violations(driver: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's violations of the page now, of the given impacts (WCAG 2.x A and AA rules)."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa",
                                                          "best-practice"]}})
           .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.slice(0, 5).map(n => n.html)}))))
           .catch(e => done([{id: "axe-error", impact: "critical", help: String(e), nodes: []}]));
        """
    )
    return [v for v in result if v.get("impact") in impacts]
