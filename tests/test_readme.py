"""The README runs as written: its walkthrough, against a started server.

**The convention.** A shell block whose fence says ``walkthrough`` after the language
(```` ```sh walkthrough ````) is run by this test; any other block (```` ```sh ````, a
``make run`` that never returns, a PostgreSQL host that is not here) is illustrative and left
alone. The marked blocks run in README order, in one ``bash`` (so a function or variable one
block defines serves the next), with ``set -e -o pipefail``, in a directory laid out as a
fresh clone's (``examples/``, ``.venv``) where ``make run`` has just made ``data/`` and
started the server: ``clientregistry init`` and ``clientregistry serve``, as the Makefile
does, with metrics on a port as the README's ``CR_METRICS_PORT=9464 make run``.
``localhost:3000`` and ``127.0.0.1:9464`` in a block become the test server's free ports, and
the admin password ``init`` printed is the script's standard input (where a block reads it).

Each block must succeed (``curl --fail-with-body`` turns an HTTP error into a failure), and
what the README says a block shows is checked in its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARK = "walkthrough"
SHELLS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PASSWORD = re.compile(r"admin password \(shown once, store it now\): (\S+)")
README_PORT = "localhost:3000"
README_METRICS = "127.0.0.1:9464"
STARTUP_TIMEOUT = 60.0
RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Block:
    """A fenced block of the README."""

    line: int
    """The line of its opening fence (1-based)."""
    language: str
    marks: tuple[str, ...]
    text: str


def fenced_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(markdown):
        words = match.group(1).split()
        line = markdown.count("\n", 0, match.start()) + 1
        language = words[0] if words else ""
        blocks.append(Block(line, language, tuple(words[1:]), match.group(2)))
    return blocks


def walkthrough_blocks(markdown: str) -> list[Block]:
    """The blocks this test runs."""
    return [b for b in fenced_blocks(markdown) if MARK in b.marks]


def test_the_convention_finds_marked_blocks_only() -> None:
    sample = (
        "text\n```sh\nmake run\n```\n\n```sh walkthrough\necho one\n```\n"
        "```python walkthrough\nprint()\n```\n```sh walkthrough\necho two\n```\n"
    )
    found = walkthrough_blocks(sample)
    assert [(b.line, b.language, b.text) for b in found] == [
        (6, "sh", "echo one\n"),
        (9, "python", "print()\n"),
        (12, "sh", "echo two\n"),
    ]


def test_every_walkthrough_block_is_shell() -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    assert {b.language for b in blocks} <= SHELLS


# ----------------------------------------------------------------------------- running


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(port: int, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CR_", "VIRTUAL_ENV"))}
    env["CR_SERVER_PORT"] = str(port)
    env["CR_METRICS_PORT"] = str(metrics_port)  # `CR_METRICS_PORT=9464 make run`
    return env


@dataclass
class Site:
    """A fresh clone's layout in a temporary directory, with ``make run`` done."""

    root: Path
    port: int
    metrics_port: int
    password: str
    env: dict[str, str]
    log: Path


@contextlib.contextmanager
def _started(root: Path) -> Iterator[Site]:
    root.mkdir()
    (root / "examples").symlink_to(ROOT / "examples")
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    cli = str(root / ".venv" / "bin" / "clientregistry")
    port, metrics_port = _free_port(), _free_port()
    env = _environment(port, metrics_port)
    init = subprocess.run(
        [cli, "init", "--data-dir", "data"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    found = PASSWORD.search(init.stdout)
    assert found is not None, init.stdout
    log = root / "server.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [cli, "serve", "--data-dir", "data"],
            cwd=root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait(port, server, log)
            yield Site(root, port, metrics_port, found.group(1), env, log)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def _wait(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    pytest.fail(f"the server did not start:\n{log.read_text()}")


def _script(blocks: list[Block], port: int, metrics_port: int) -> str:
    lines = [
        "set -eE -o pipefail",
        "trap 'echo \"README.md:$README_LINE failed: $BASH_COMMAND\" >&2' ERR",
    ]
    for block in blocks:
        text = block.text.replace(README_PORT, f"localhost:{port}")
        text = text.replace(README_METRICS, f"127.0.0.1:{metrics_port}")
        marker = f"printf '\\n>>> README.md:{block.line}\\n'"  # (on a line of its own)
        lines += [f"README_LINE={block.line}", marker, text]
    return "\n".join(lines) + "\n"


def _outputs(stdout: str) -> dict[int, str]:
    """Each block's output, by its line."""
    parts = re.split(r"^>>> README\.md:(\d+)\n", stdout, flags=re.MULTILINE)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (``python3 -m json.tool`` output)."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while True:
        start = min((i for i in (text.find("{", at), text.find("[", at)) if i >= 0), default=-1)
        if start < 0:
            return found
        try:
            document, at = decoder.raw_decode(text, start)
            found.append(document)
        except json.JSONDecodeError:
            at = start + 1


def _block(blocks: list[Block], outputs: dict[int, str], needle: str) -> str:
    """The output of the block whose text holds ``needle``."""
    for block in blocks:
        if needle in block.text:
            return outputs[block.line]
    raise AssertionError(f"no walkthrough block holds {needle!r}")


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    with _started(tmp_path / "clone") as site:
        result = subprocess.run(
            ["bash", "-c", _script(blocks, site.port, site.metrics_port)],
            cwd=site.root,
            env=site.env,
            input=site.password + "\n",
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        server_log = site.log.read_text(errors="replace")
    assert result.returncode == 0, (
        f"{result.stderr}\n--- output ---\n{result.stdout}\n--- server ---\n{server_log}"
    )
    outputs = _outputs(result.stdout)
    assert sorted(outputs) == [b.line for b in blocks]  # every block ran

    posted = _block(blocks, outputs, "post openmrs examples/1-openmrs.json")
    statuses = re.findall(r"^HTTP/\S+ (\d+)", posted, flags=re.MULTILINE)
    assert statuses == ["201", "201", "201", "200"], posted
    cruids = re.findall(r"^locationcruid: (\S+)", posted, flags=re.MULTILINE | re.IGNORECASE)
    assert len(cruids) == 4 and len(set(cruids)) == 1, posted  # one woman

    [golden] = _json_documents(_block(blocks, outputs, "get openmrs Patient/$CRUID"))
    assert f"Patient/{golden['id']}" == cruids[0]
    assert "name" not in golden and len(golden["link"]) == 3

    looked_up = _block(blocks, outputs, "systems grant hie read-demographics")
    assert "registered system 'hie'" in looked_up
    search, pix = _json_documents(looked_up)
    assert search["resourceType"] == "Bundle" and search["total"] == 3, search
    assert pix["resourceType"] == "Parameters"
    assert {p["name"] for p in pix["parameter"]} >= {"targetIdentifier", "targetId"}

    [matched] = _json_documents(_block(blocks, outputs, "Patient/$match"))
    first = matched["entry"][0]  # her best record (hie may read demographics)
    assert f"Patient/{first['resource']['id']}" in {k["other"]["reference"] for k in golden["link"]}
    assert 0.9 < first["search"]["score"] <= 1

    [queue] = _json_documents(_block(blocks, outputs, "/admin/queues/potential"))
    assert isinstance(queue, list | dict)

    [compared] = _json_documents(_block(blocks, outputs, "clientregistry compare"))
    assert compared["decision"] == "auto" and compared["score"] > 105
    [scores] = _json_documents(_block(blocks, outputs, "clientregistry evaluate"))
    assert scores["f1"] == 1.0
    assert "OK" in _block(blocks, outputs, "clientregistry rules check")
    assert (site.root / "out" / "trained.json").is_file()

    assert json.loads(_block(blocks, outputs, "/readyz")) == {"status": "ready"}
    scraped = _block(blocks, outputs, "/metrics")
    assert re.search(r'^clientregistry_submissions_total\{outcome="auto"\} [1-9]', scraped, re.M)
    backed_up = _block(blocks, outputs, "clientregistry backup")
    assert "restored" in backed_up and "up to date" in backed_up
    assert (site.root / "restored" / "certs" / "ca-key.pem").read_bytes() == (
        site.root / "data" / "certs" / "ca-key.pem"
    ).read_bytes()
    echoed = _block(blocks, outputs, "X-Request-Id: first-hour-1")
    assert echoed.strip().lower() == "x-request-id: first-hour-1"
