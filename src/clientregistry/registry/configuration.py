"""The running configuration as an admin may read it (the database password hidden)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy.engine import make_url

from clientregistry.registry.actor import Actor, Reading, audit_read
from clientregistry.registry.context import RegistryContext


class RuleSetInfo(BaseModel):
    index: int
    name: str
    matching_type: str
    potential_threshold: float
    auto_threshold: float
    fields: list[str]


class SystemInfo(BaseModel):
    name: str
    display_name: str
    internal_id_system: str
    permissions: list[str]


class ConfigView(BaseModel):
    data_dir: str
    host: str
    port: int
    workers: int
    hostnames: list[str]
    database: str = Field(description="Database URL without its password")
    rules_source: str
    rule_sets: list[RuleSetInfo]
    candidate_limit: int
    max_body_bytes: int
    token_minutes: int
    systems: list[SystemInfo]


def config_view(context: RegistryContext, actor: Actor) -> ConfigView:
    """The running configuration."""
    settings = context.settings
    rules = context.matcher.rules
    view = ConfigView(
        data_dir=str(settings.data_dir),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        hostnames=list(settings.hostnames),
        database=make_url(settings.database).render_as_string(hide_password=True),
        rules_source=rules.source,
        rule_sets=[
            RuleSetInfo(
                index=rs.index,
                name=rs.name,
                matching_type=rs.matching_type,
                potential_threshold=rs.potential_threshold,
                auto_threshold=rs.auto_threshold,
                fields=[f.name for f in rs.fields],
            )
            for rs in rules.rule_sets
        ],
        candidate_limit=settings.candidate_limit,
        max_body_bytes=settings.max_body_bytes,
        token_minutes=settings.token_minutes,
        systems=[
            SystemInfo(
                name=s.name,
                display_name=s.display_name,
                internal_id_system=s.internal_id_system,
                permissions=list(s.permissions),
            )
            for s in settings.systems.values()
        ],
    )
    audit_read(context, actor, Reading("config-read"))
    return view
