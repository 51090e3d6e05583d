"""The web UI in headless Chromium, against a real gateway in front of real services.

* the gateway is started with :func:`tests._gateway.start_gateway`.
* :func:`launch_browser` starts Debian's ``/usr/bin/chromium`` through playwright (never a
  browser that playwright downloads) with networking extras off; tests skip with a reason
  when either is missing.
* :func:`axe_violations` injects axe-core from ``node_modules`` (npm) into a page and
  returns its serious and critical violations.
* :func:`screenshot` saves ``var/screenshots/<name>.png`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests._servers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip (with the reason) when Chromium or playwright is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install chromium; .ci/run does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not AXE.exists():
        pytest.skip(f"{AXE} is absent (npm install)")


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def new_page(browser: Any, base_url: str, token: str = "", user: dict | None = None) -> Any:
    """A page of a fresh context (1280x800); with ``token`` the session is already signed in."""
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    context.set_default_timeout(20_000)
    if token:
        script = (
            f"sessionStorage.setItem('visionmesh.token', {json.dumps(token)});"
            f"sessionStorage.setItem('visionmesh.user', {json.dumps(json.dumps(user or {}))});"
        )
        context.add_init_script(script)
    page = context.new_page()
    page.external_requests = []  # type: ignore[attr-defined]
    page.console_errors = []  # type: ignore[attr-defined]
    host = base_url.split("//", 1)[1]

    def on_request(request: Any) -> None:
        url = request.url
        if not (url.startswith(("blob:", "data:")) or url.split("//", 1)[-1].startswith(host)):
            page.external_requests.append(url)  # type: ignore[attr-defined]

    page.on("request", on_request)

    def on_console(msg: Any) -> None:
        # an HTTP error answer is logged by Chromium too; the page shows those itself
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            page.console_errors.append(msg.text)  # type: ignore[attr-defined]

    page.on("console", on_console)
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    return page


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary)}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def assert_accessible(page: Any, what: str) -> None:
    bad = axe_violations(page)
    assert not bad, f"axe on {what}: " + json.dumps(bad, indent=1)


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    """A scratch copy of a sample folder (sample data is read-only and never edited)."""
    shutil.copytree(src, dst)
    return dst
