"""Helpers of the web UI's browser tests (``test_browser.py``; fixtures in ``conftest.py``):
Debian's Chromium and how Playwright launches it, the accounts, signing in, axe-core, and
screenshots.

Playwright's own browser builds cannot be downloaded here: it launches ``/usr/bin/chromium``
(``executable_path``), headless, with the network features that would phone out turned off.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a password for the tests"
ACCOUNTS = {"ada": "admin", "rita": "reviewer", "dave": "reviewer", "otto": "auditor"}
AXE = Path(__file__).resolve().parents[1] / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where ``CR_UPDATE_SCREENSHOTS=1`` copies the screenshots the tests take."""


def _load_api_servers() -> Any:
    """``tests/api/registry_servers.py`` (the served registry the API tests start), by path:
    ``tests/api`` is on the module path only when its tests are collected."""
    path = Path(__file__).resolve().parents[1] / "api" / "registry_servers.py"
    spec = importlib.util.spec_from_file_location("ui_registry_servers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


api = _load_api_servers()
RegistryServer = api.RegistryServer


def add_account(server: Any, username: str, role: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    made = subprocess.run(
        [
            str(api.CLI),
            "users",
            "add",
            username,
            "--role",
            role,
            "--data-dir",
            str(server.data_dir),
        ],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)


def check_accessibility(page: Any) -> None:
    """Run axe-core on the page; fail on any violation (WCAG 2.1 A and AA rules)."""
    # Evaluated through the DevTools protocol: the page's CSP rightly refuses a script tag.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => await axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}
        })"""
    )
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
    ]
    assert problems == [], f"{page.url}: " + "; ".join(problems)


def screenshot(page: Any, name: str, directory: Path) -> Path:
    """A full-page screenshot in ``directory`` (and in docs/ with CR_UPDATE_SCREENSHOTS=1)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


def sign_in(page: Any, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/ui/login")
    page.get_by_label(re.compile("Username|Nom d.utilisateur")).fill(username)
    page.get_by_label(re.compile("^(Password|Mot de passe)$")).fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^(Sign in|Se connecter)$")).click()
