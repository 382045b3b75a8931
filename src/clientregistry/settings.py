"""Settings of a registry installation: a TOML file in the data directory, overridable by
environment variables ``CR_<SECTION>_<KEY>`` (``CR_SERVER_PORT=3443``, ``CR_DATABASE_URL=…``).

No import-time globals: :func:`load_settings` builds a :class:`Settings` value that is passed to
whatever needs it, and tests pass their own environment mapping.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clientregistry.errors import ConfigError, Problem
from clientregistry.registry.atna_settings import AtnaSettings, parse_atna
from clientregistry.security.oidc_settings import OidcSettings, parse_oidc

CONFIG_FILE = "config.toml"
DEFAULT_PERMISSIONS = ("submit", "read-identifiers")
"""What a point-of-service system may do unless configured otherwise: submit Patients and learn
CRUIDs and identifiers, never read demographics (OpenCR's rule, which OpenCR broke)."""
KNOWN_PERMISSIONS = frozenset({"submit", "read-identifiers", "read-demographics", "merge"})
"""``merge``: may call ``Patient/$merge`` (merge any two source records; never by default)."""
LOG_FORMATS = ("text", "json")
DEFAULT_PROXY_CLIENT_HEADER = "x-openhim-clientid"
"""The header OpenHIM (and the example nginx front) names the verified client system in."""
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientSystemConfig:
    """A point-of-service system allowed to call the registry with its certificate."""

    name: str
    display_name: str
    internal_id_system: str
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to run."""

    data_dir: Path
    host: str = "127.0.0.1"
    """This machine only, until the operator opens it up (``CR_SERVER_HOST=0.0.0.0``)."""
    port: int = 3000
    workers: int = 1
    hostnames: tuple[str, ...] = ("localhost",)
    database_url: str = ""
    rules_path: Path | None = None
    candidate_limit: int = 200
    max_body_bytes: int = 1_048_576
    access_log: bool = False
    """uvicorn's line per request on the console (every request is in the audit trail anyway;
    the log line costs ~7% of a submission's server time)."""
    token_minutes: int = 60
    session_minutes: int = 480
    """The longest a web UI (browser) session lasts, however busy."""
    idle_minutes: int = 30
    """A web UI session ends after this long without a request."""
    writes_in_thread_pool: bool = False
    """PostgreSQL: run a submission's transaction in the thread pool instead of on the worker's
    event loop (see :mod:`clientregistry.api.writes`); for a database far away, where a worker
    should not wait out each round trip. SQLite always writes on the loop."""
    log_format: str = "text"
    """``text`` (readable lines) or ``json`` (one JSON object a line, with the request id)."""
    metrics_port: int = 0
    """Prometheus metrics on a port of their own (plain HTTP on ``metrics_host``); 0: none."""
    metrics_host: str = "127.0.0.1"
    metrics_token: str = ""
    """Prometheus metrics at ``/metrics`` on the registry's port for this bearer token; empty:
    none there."""
    ready_certificate_days: int = 14
    """``/readyz`` fails when the server or CA certificate expires sooner than this."""
    systems: Mapping[str, ClientSystemConfig] = field(default_factory=dict)
    """``config.toml``'s ``[systems]``; in an open registry, the live systems of the database
    (:class:`clientregistry.registry.systems.SystemDirectory`), which these seed."""
    trusted_proxies: tuple[ProxyNetwork, ...] = ()
    """Addresses of TLS-terminating proxies (nginx, OpenHIM) whose :attr:`proxy_client_header`
    and ``X-Forwarded-For`` are believed (:mod:`clientregistry.api.trusted_proxy`)."""
    proxy_client_header: str = DEFAULT_PROXY_CLIENT_HEADER
    oidc: OidcSettings | None = None
    """Single sign-on for people (``[oidc]``); None: local accounts only."""
    atna: AtnaSettings | None = None
    """An audit repository every audit event is also sent to (``[atna]``); None: none."""
    base_url: str = ""
    """The registry's public address (``https://cr.example.org``, or with a path prefix behind
    a proxy): the base of every URL the FHIR API writes (``fullUrl``, paging links,
    ``Content-Location``, the CapabilityStatement), never the request's ``Host`` header.
    Empty: ``https://<first hostname>:<port>``."""

    @property
    def public_base_url(self) -> str:
        """:attr:`base_url`, or ``https://<first hostname>:<port>`` when it is not set."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = self.hostnames[0] if self.hostnames else "localhost"
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL: ``<public base URL>/fhir``."""
        return f"{self.public_base_url}/fhir"

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'registry.db'}"

    @property
    def metrics_enabled(self) -> bool:
        return bool(self.metrics_port or self.metrics_token)

    @property
    def record_id_systems(self) -> tuple[str, ...]:
        return tuple(sorted({s.internal_id_system for s in self.systems.values()}))


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
"""How an environment variable spells a boolean setting."""


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("CR_DATA_DIR", "data"))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    mapping = {
        "CR_SERVER_HOST": "host",
        "CR_SERVER_PORT": "port",
        "CR_SERVER_WORKERS": "workers",
        "CR_SERVER_HOSTNAMES": "hostnames",
        "CR_DATABASE_URL": "database_url",
        "CR_MATCHING_RULES": "rules_path",
        "CR_MATCHING_CANDIDATE_LIMIT": "candidate_limit",
        "CR_SERVER_MAX_BODY_BYTES": "max_body_bytes",
        "CR_SERVER_ACCESS_LOG": "access_log",
        "CR_AUTH_TOKEN_MINUTES": "token_minutes",
        "CR_UI_SESSION_MINUTES": "session_minutes",
        "CR_UI_IDLE_MINUTES": "idle_minutes",
        "CR_DATABASE_WRITES_IN_THREAD_POOL": "writes_in_thread_pool",
        "CR_SERVER_BASE_URL": "base_url",
        "CR_SERVER_LOG_FORMAT": "log_format",
        "CR_METRICS_PORT": "metrics_port",
        "CR_METRICS_HOST": "metrics_host",
        "CR_METRICS_TOKEN": "metrics_token",
        "CR_HEALTH_CERTIFICATE_DAYS": "ready_certificate_days",
        "CR_PROXY_TRUSTED_ADDRESSES": "trusted_proxies",
        "CR_PROXY_CLIENT_HEADER": "proxy_client_header",
    }
    return {key: environ[name] for name, key in mapping.items() if name in environ}


def load_settings(data_dir: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``DATA_DIR/config.toml`` and apply ``CR_…`` environment overrides."""
    env = os.environ if environ is None else environ
    path = data_dir / CONFIG_FILE
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(path), [Problem("", "no configuration; run `clientregistry init` first")]
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [Problem("", f"not valid TOML: {error}")]) from None
    problems: list[Problem] = []
    flat: dict[str, Any] = {}
    server = document.get("server", {})
    database = document.get("database", {})
    matching = document.get("matching", {})
    auth = document.get("auth", {})
    metrics = document.get("metrics", {})
    health = document.get("health", {})
    proxy = document.get("proxy", {})
    ui = document.get("ui", {})
    flat.update(
        host=server.get("host"),
        port=server.get("port"),
        workers=server.get("workers"),
        hostnames=server.get("hostnames"),
        max_body_bytes=server.get("max_body_bytes"),
        access_log=server.get("access_log"),
        base_url=server.get("base_url"),
        database_url=database.get("url"),
        writes_in_thread_pool=database.get("writes_in_thread_pool"),
        rules_path=matching.get("rules"),
        candidate_limit=matching.get("candidate_limit"),
        token_minutes=auth.get("token_minutes"),
        log_format=server.get("log_format"),
        metrics_port=metrics.get("port"),
        metrics_host=metrics.get("host"),
        metrics_token=metrics.get("token"),
        ready_certificate_days=health.get("certificate_days"),
        trusted_proxies=proxy.get("trusted_addresses"),
        proxy_client_header=proxy.get("client_header"),
        session_minutes=ui.get("session_minutes"),
        idle_minutes=ui.get("idle_minutes"),
    )
    flat.update(_env_overrides(env))
    values: dict[str, Any] = {}
    whole_numbers = (
        "port",
        "workers",
        "candidate_limit",
        "max_body_bytes",
        "token_minutes",
        "session_minutes",
        "idle_minutes",
    )
    for key in whole_numbers:
        raw = flat.get(key)
        if raw is None:
            continue
        try:
            number = int(raw)
            if number < 1:
                raise ValueError
            values[key] = number
        except (TypeError, ValueError):
            problems.append(Problem(key, f"must be a positive whole number, not {raw!r}"))
    for key in ("metrics_port", "ready_certificate_days"):
        raw = flat.get(key)
        if raw is None:
            continue
        try:
            number = int(raw)
            if number < 0 or (key == "metrics_port" and number > 65535):
                raise ValueError
            values[key] = number
        except (TypeError, ValueError):
            problems.append(Problem(key, f"must be a whole number from 0, not {raw!r}"))
    log_format = flat.get("log_format")
    if log_format is not None:
        if str(log_format).strip().lower() in LOG_FORMATS:
            values["log_format"] = str(log_format).strip().lower()
        else:
            problems.append(Problem("log_format", f"must be text or json, not {log_format!r}"))
    for key in ("metrics_host", "metrics_token"):
        if flat.get(key):
            values[key] = str(flat[key])
    for key in ("access_log", "writes_in_thread_pool"):
        raw = flat.get(key)
        if isinstance(raw, bool):
            values[key] = raw
        elif isinstance(raw, str) and raw.strip().lower() in _BOOLEANS:
            values[key] = _BOOLEANS[raw.strip().lower()]
        elif raw is not None:
            problems.append(Problem(key, f"must be true or false, not {raw!r}"))
    if flat.get("host"):
        values["host"] = str(flat["host"])
    base_url = flat.get("base_url")
    if base_url:
        problem = _base_url_problem(base_url)
        if problem:
            problems.append(Problem("base_url", problem))
        else:
            values["base_url"] = str(base_url).rstrip("/")
    if flat.get("database_url"):
        values["database_url"] = str(flat["database_url"])
    if flat.get("rules_path"):
        rules = Path(str(flat["rules_path"]))
        values["rules_path"] = rules if rules.is_absolute() else data_dir / rules
    hostnames = flat.get("hostnames")
    if isinstance(hostnames, str):
        hostnames = [h.strip() for h in hostnames.split(",") if h.strip()]
    if hostnames:
        values["hostnames"] = tuple(str(h) for h in hostnames)
    _proxy_settings(flat, values, problems)
    values["oidc"] = parse_oidc(document.get("oidc"), env, data_dir, problems)
    values["atna"] = parse_atna(document.get("atna"), env, data_dir, problems)
    systems = _systems(document.get("systems") or {}, problems)
    if problems:
        raise ConfigError(str(path), problems)
    return Settings(data_dir=data_dir, systems=systems, **values)


def _systems(tables: Any, problems: list[Problem]) -> dict[str, ClientSystemConfig]:
    """The ``[systems.NAME]`` tables; each internal identifier system belongs to one system."""
    systems: dict[str, ClientSystemConfig] = {}
    holders: dict[str, str] = {}
    if not isinstance(tables, dict):
        problems.append(Problem("systems", "must be a table of [systems.NAME] tables"))
        return systems
    for name, raw in tables.items():
        where = f"systems.{name}"
        if not isinstance(raw, dict) or not isinstance(raw.get("internal_id_system"), str):
            problems.append(Problem(where, "needs internal_id_system (an identifier system URI)"))
            continue
        uri = raw["internal_id_system"]
        if uri in holders:
            problems.append(
                Problem(
                    f"{where}.internal_id_system",
                    f"{uri} is already the internal identifier system of systems.{holders[uri]};"
                    " each system needs its own",
                )
            )
            continue
        holders[uri] = name
        permissions = raw.get("permissions", DEFAULT_PERMISSIONS)
        if not isinstance(permissions, list | tuple) or not all(
            isinstance(p, str) for p in permissions
        ):
            problems.append(Problem(f"{where}.permissions", "must be a list of permission names"))
            continue
        unknown = set(permissions) - KNOWN_PERMISSIONS
        if unknown:
            problems.append(Problem(f"{where}.permissions", f"unknown {sorted(unknown)}"))
        systems[name] = ClientSystemConfig(
            name, str(raw.get("display_name", name)), uri, tuple(permissions)
        )
    return systems


def _proxy_settings(flat: dict[str, Any], values: dict[str, Any], problems: list[Problem]) -> None:
    """``[proxy]``: ``trusted_addresses`` (addresses or networks, a list or a comma-separated
    string) and ``client_header`` (a header name)."""
    addresses = flat.get("trusted_proxies")
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    if addresses is not None:
        if not isinstance(addresses, list):
            problems.append(Problem("proxy.trusted_addresses", "must be a list of addresses"))
        else:
            networks = []
            for address in addresses:
                try:
                    networks.append(ipaddress.ip_network(str(address), strict=False))
                except ValueError:
                    problems.append(
                        Problem(
                            "proxy.trusted_addresses", f"not an address or network: {address!r}"
                        )
                    )
            values["trusted_proxies"] = tuple(networks)
    header = flat.get("proxy_client_header")
    if header is not None:
        if isinstance(header, str) and _HEADER_NAME.fullmatch(header):
            values["proxy_client_header"] = header.lower()
        else:
            problems.append(Problem("proxy.client_header", f"not a header name: {header!r}"))


def _base_url_problem(raw: object) -> str | None:
    """Why ``raw`` is not a usable public base URL (None when it is)."""
    if not isinstance(raw, str):
        return f"must be a URL such as https://cr.example.org, not {raw!r}"
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an absolute http(s) URL such as https://cr.example.org, not {raw!r}"
    if parts.query or parts.fragment or any(c.isspace() for c in raw):
        return f"must be a plain URL (no query, fragment or spaces), not {raw!r}"
    return None


def render_config(
    *,
    hostnames: list[str],
    systems: list[ClientSystemConfig],
    port: int = 3000,
    database_url: str = "",
) -> str:
    """The TOML text ``clientregistry init`` writes."""
    lines = [
        "# clientregistry configuration. Every key can be overridden by an environment",
        "# variable CR_<SECTION>_<KEY>, e.g. CR_SERVER_PORT=3443 or CR_DATABASE_URL=postgresql://…",
        "",
        "[server]",
        '# this machine only; "0.0.0.0" (or CR_SERVER_HOST=0.0.0.0) serves every interface',
        'host = "127.0.0.1"',
        f"port = {port}",
        "workers = 1",
        f"hostnames = [{', '.join(repr(h).replace(chr(39), chr(34)) for h in hostnames)}]",
        "max_body_bytes = 1048576",
        "# a line per request on the console, with its request id (the audit trail records",
        "# every request anyway)",
        "access_log = false",
        '# "text", or "json": one JSON object a line (a request id in each line of a request)',
        'log_format = "text"',
        "# the public address clients use: the base of every URL the FHIR API writes (never",
        "# taken from a request's Host header). Default: https://<first hostname>:<port>",
        f'# base_url = "https://{hostnames[0] if hostnames else "localhost"}:{port}"',
        "",
        "[database]",
        "# empty: the embedded SQLite database in the data directory",
        f'url = "{database_url}"',
        "# PostgreSQL: submissions run in a thread pool instead of on each worker's event loop",
        "# (for a database far away; on the same machine or network the loop is faster)",
        "writes_in_thread_pool = false",
        "",
        "[matching]",
        "# a decision-rules file (OpenCR format); empty: the built-in rules",
        'rules = ""',
        "candidate_limit = 200",
        "",
        "[auth]",
        "token_minutes = 60",
        "",
        "[proxy]",
        "# addresses (or networks) of TLS-terminating proxies (nginx, OpenHIM) that verify client",
        "# certificates and name the client system in client_header; empty: none is trusted",
        "trusted_addresses = []",
        f'client_header = "{DEFAULT_PROXY_CLIENT_HEADER}"',
        "",
        "[ui]",
        "# the web UI (https://<host>:<port>/ui/): a session lasts at most session_minutes,",
        "# and ends after idle_minutes without a request",
        "session_minutes = 480",
        "idle_minutes = 30",
        "",
        "[metrics]",
        "# Prometheus metrics: on a port of their own (plain HTTP on host), and/or at /metrics",
        "# on the registry's port for `Authorization: Bearer <token>`. 0 and empty: off.",
        "port = 0",
        'host = "127.0.0.1"',
        'token = ""',
        "",
        "[health]",
        "# /readyz fails when the server or CA certificate expires in fewer days than this",
        "certificate_days = 14",
        "",
        "[atna]",
        "# an audit repository (IHE ATNA: syslog over TLS) every audit event is also sent to;",
        '# empty host: none. See the README, "Where audit goes (ATNA)".',
        'host = ""',
        "port = 6514",
        '# ca_file = "certs/audit-repository-ca.pem"',
        '# format = "fhir"   # or "dicom"',
        "",
        "# Client systems live in the database: `clientregistry systems list`, `certs issue",
        "# NAME`, `systems grant NAME PERMISSION`. A [systems.NAME] table here (display_name,",
        "# internal_id_system, permissions) is imported when the database lacks that system.",
        "",
    ]
    for system in systems:
        perms = ", ".join(f'"{p}"' for p in system.permissions)
        lines += [
            f"[systems.{system.name}]",
            f'display_name = "{system.display_name}"',
            f'internal_id_system = "{system.internal_id_system}"',
            f"permissions = [{perms}]",
            "",
        ]
    return "\n".join(lines)
