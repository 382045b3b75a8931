"""People on a running test registry: an account of a role, created with the command line,
and a bearer token for it (for tests that need the admin API as several roles)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery staple"
CLI = Path(sys.executable).with_name("clientregistry")


def new_account(server: Any, role: str) -> str:
    """A new account of ``role`` (``users add``, password on standard input); its username."""
    username = f"{role}-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        [str(CLI), "users", "add", username, "--role", role, "--data-dir", str(server.data_dir)],
        input=PASSWORD + "\n",
        env={k: v for k, v in os.environ.items() if not k.startswith("CR_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)
    return username


def token_for(server: Any, role: str) -> str:
    """A bearer token of a new account of ``role``."""
    username = new_account(server, role)
    response = server.new_client().post(
        "/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
