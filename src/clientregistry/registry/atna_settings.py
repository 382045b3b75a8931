"""Where the audit trail is also sent: the ``[atna]`` section of ``config.toml`` (IHE ATNA,
ITI-20 Record Audit Event: RFC 5424 syslog over TLS, RFC 5425).

::

    [atna]
    host = "arr.example.org"   # the audit repository; empty or absent: send nothing
    port = 6514                 # syslog over TLS
    ca_file = "certs/arr-ca.pem"   # the CA of the repository's certificate
    cert_file = ""              # this registry's client certificate (default certs/server.pem)
    key_file = ""               # its key (default certs/server-key.pem)
    format = "fhir"             # "fhir" (FHIR AuditEvent JSON) or "dicom" (DICOM PS3.15 XML)
    app_name = "clientregistry" # syslog APP-NAME, and the audit source (observer)
    server_name = ""            # the repository's name in its certificate (default: host)

Every key can be overridden by ``CR_ATNA_<KEY>`` (``CR_ATNA_HOST``, ``CR_ATNA_PORT`` …).
Relative paths are taken from the data directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clientregistry.errors import Problem

FORMATS = ("fhir", "dicom")
KEYS = (
    "host",
    "port",
    "ca_file",
    "cert_file",
    "key_file",
    "format",
    "app_name",
    "server_name",
)


@dataclass(frozen=True, slots=True)
class AtnaSettings:
    """An audit repository to send every audit event to."""

    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    format: str = "fhir"
    app_name: str = "clientregistry"
    server_name: str = ""

    @property
    def repository(self) -> str:
        """``host:port``: the repository's name in ``audit_delivery``."""
        return f"{self.host}:{self.port}"


def _path(raw: object, default: Path, data_dir: Path) -> Path:
    if not raw:
        return default
    path = Path(str(raw))
    return path if path.is_absolute() else data_dir / path


def parse_atna(
    section: Any, environ: Mapping[str, str], data_dir: Path, problems: list[Problem]
) -> AtnaSettings | None:
    """The ``[atna]`` section with its environment overrides; None when no host is set.
    Problems are appended to ``problems``."""
    raw: dict[str, Any] = dict(section) if isinstance(section, dict) else {}
    if section is not None and not isinstance(section, dict):
        problems.append(Problem("atna", "must be a table"))
    for key in KEYS:
        name = f"CR_ATNA_{key.upper()}"
        if name in environ:
            raw[key] = environ[name]
    if not raw.get("host"):
        return None
    port = 6514
    try:
        port = int(raw.get("port", 6514))
        if not 0 < port < 65536:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(Problem("atna.port", f"must be a port number, not {raw.get('port')!r}"))
    chosen = str(raw.get("format") or "fhir").strip().lower()
    if chosen not in FORMATS:
        problems.append(Problem("atna.format", f"must be fhir or dicom, not {chosen!r}"))
    certs = data_dir / "certs"
    ca_file = _path(raw.get("ca_file"), Path(), data_dir)
    if not raw.get("ca_file"):
        problems.append(Problem("atna.ca_file", "is required: the audit repository's CA"))
    cert_file = _path(raw.get("cert_file"), certs / "server.pem", data_dir)
    key_file = _path(raw.get("key_file"), certs / "server-key.pem", data_dir)
    return AtnaSettings(
        host=str(raw["host"]),
        port=port,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        format=chosen,
        app_name=str(raw.get("app_name") or "clientregistry")[:48],
        server_name=str(raw.get("server_name") or ""),
    )
