"""Sign-in throttling over real HTTPS (issue 15): an attacker guessing the admin's password
from one address cannot lock the admin out from another, on the API and in the web UI.

Before the fix, five failures from any address locked the account everywhere for 15 minutes.
The attacker and the admin connect from loopback addresses of their own (127.0.0.3 and
127.0.0.2), so that other modules' sign-ins from 127.0.0.1 are not slowed.
"""

from __future__ import annotations

import re
import uuid

import httpx
from people import PASSWORD, new_account
from registry_servers import REQUEST_TIMEOUT, RegistryServer

HOME = "127.0.0.2"
ATTACKER = "127.0.0.3"


def _client(server: RegistryServer, address: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        verify=server.ssl_context(),
        timeout=REQUEST_TIMEOUT,
        transport=httpx.HTTPTransport(verify=server.ssl_context(), local_address=address),
    )


def _ui_sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    page = client.get("/ui/login")
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    form = {"username": username, "password": password, "login_token": found.group(1)}
    return client.post("/ui/login", data=form)


def test_an_attacker_cannot_lock_the_admin_out_from_another_address(
    registry_server: RegistryServer,
) -> None:
    admin = new_account(registry_server, "admin")
    right = {"username": admin, "password": PASSWORD}
    wrong = {"username": admin, "password": "not the password"}
    with _client(registry_server, HOME) as home, _client(registry_server, ATTACKER) as attacker:
        assert home.post("/auth/token", json=right).status_code == 200
        answers = [attacker.post("/auth/token", json=wrong).status_code for _ in range(8)]
        assert answers[:5] == [401] * 5 and answers[5:] == [429] * 3, answers
        refused = attacker.post("/auth/token", json=right)
        assert refused.status_code == 429  # the attacker's address waits, right password or not
        assert int(refused.headers["Retry-After"]) > 0
        # the admin, from their own address: the API and the web UI
        assert home.post("/auth/token", json=right).status_code == 200
        signed_in = _ui_sign_in(home, admin, PASSWORD)
        assert signed_in.status_code == 303, signed_in.text[:500]
        # the web UI applies the same policy to the attacker's address
        other = f"nobody-{uuid.uuid4().hex[:6]}"
        page = _ui_sign_in(attacker, other, "not the password")
        assert "Too many failed sign-ins" in page.text
