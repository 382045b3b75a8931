"""A Patient identity feed (OpenCR's submit, IHE ITI-104): one submission with its conditions
and, for a Resolve Duplicate, its merge — :func:`feed`.

Around :meth:`~clientregistry.registry.submit.Submitter.submit_prepared` (the hot path,
untouched for a plain submission) this adds what only some requests carry:

* a conditional create (``If-None-Exist``): the condition is searched first; one match is
  the answer (nothing is stored), several are 412, none lets the submission create — and
  only create: a record the caller holds already under its identifier is the answer too;
* a Resolve Duplicate: the Patient has a ``replaced-by`` link to the surviving Patient
  (ITI-104 §3.104.4.2). The Patient Identity Source owns both records, so the survivor must
  be a record of the caller (by its own identifier system, or by id). The subsumed record is
  stored as sent and matched, then linked to the survivor's golden record as a person's
  decision would (:func:`clientregistry.registry.links.merge`: it sticks through later
  updates) and marked replaced by the survivor; the merge is audited with its change log, so
  a reviewer can revert it. From then on PIXm for the subsumed identifier answers the
  survivor's person.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, business_rule, forbidden, precondition_failed
from clientregistry.fhir.patient import SurvivorReference
from clientregistry.registry import links
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import LinkEditor, LinkError
from clientregistry.registry.read import read_patient
from clientregistry.registry.search import matching_ids
from clientregistry.registry.search_query import PatientQuery
from clientregistry.registry.submit import (
    IfMatch,
    RecordExists,
    Submission,
    SubmitResult,
    Submitter,
)
from clientregistry.store.enums import AgentKind
from clientregistry.store.models import SourceRecord


@dataclass(frozen=True, slots=True)
class Fed:
    """What a feed did: ``submitted`` (the submission's result, its resource up to date), or
    nothing and ``existing``: the record a conditional create found."""

    submitted: SubmitResult | None = None
    existing: str | None = None


def feed(
    session: Session,
    context: RegistryContext,
    submission: Submission,
    *,
    url_id: str | None = None,
    preferred_id: str | None = None,
    source_address: str | None = None,
    commit: bool = False,
    wait_for_locks: bool = True,
    if_match: IfMatch | None = None,
    if_none_exist: PatientQuery | None = None,
) -> Fed:
    """Submit ``submission`` with its conditions (see the module docstring), in the caller's
    transaction (``commit``: commit it with the writes, when nothing follows them)."""
    if if_none_exist is not None:
        found = matching_ids(session, if_none_exist, limit=2)
        if len(found) > 1:
            raise precondition_failed(
                "If-None-Exist: the condition matches several Patients; nothing was stored",
                multiple_matches=True,
            )
        if found:
            return Fed(existing=found[0])
    survivor = None
    if submission.survivor is not None:
        survivor = survivor_record(session, submission, submission.survivor)
    try:
        result = Submitter(context).submit_prepared(
            session,
            submission,
            url_id=url_id,
            preferred_id=preferred_id,
            source_address=source_address,
            commit=commit and survivor is None,
            wait_for_locks=wait_for_locks,
            if_match=if_match,
            create_only=if_none_exist is not None,
        )
    except RecordExists as exists:
        return Fed(existing=exists.record_id)
    if survivor is None or result.replaced_by == survivor:
        return Fed(submitted=result)
    merged = merge_records(
        session,
        context,
        result.record_id,
        survivor,
        agent=submission.client.name,
        agent_kind=AgentKind.SYSTEM,
        source_address=source_address,
    )
    assert merged.golden_id is not None
    resource, _ = read_patient(session, context.settings, result.record_id)
    return Fed(
        submitted=replace(
            result, golden_id=merged.golden_id, resource=resource, replaced_by=survivor
        )
    )


def survivor_record(session: Session, submission: Submission, survivor: SurvivorReference) -> str:
    """The id of the record a Resolve Duplicate names as the survivor: one of the caller's
    own records (by its identifier system, or by id); 422 or 403 otherwise."""
    client = submission.client
    where = ["Patient.link"]
    if survivor.id is None:
        if survivor.system != client.internal_id_system:
            raise business_rule(
                f"The replaced-by link names {survivor}; a Resolve Duplicate names the "
                f"surviving Patient by the caller's own identifier system "
                f"{client.internal_id_system} (or by reference)",
                where,
            )
        if (survivor.system, survivor.value) == (submission.system, submission.value):
            raise business_rule("A Patient cannot be replaced by itself", where)
        found = session.execute(
            select(SourceRecord.id, SourceRecord.client_system).where(
                SourceRecord.internal_system == survivor.system,
                SourceRecord.internal_value == survivor.value,
            )
        ).first()
    else:
        found = session.execute(
            select(SourceRecord.id, SourceRecord.client_system).where(
                SourceRecord.id == survivor.id
            )
        ).first()
    if found is None:
        raise business_rule(
            f"The surviving Patient {survivor} of the replaced-by link is not known here; "
            "submit it first",
            where,
        )
    record_id, owner = found
    if owner != client.name:
        raise forbidden(
            f"{survivor} is a record of another client system: a Resolve Duplicate merges "
            "records of the caller's own identifier domain (Patient/$merge, with the merge "
            "permission, merges across systems)"
        )
    return str(record_id)


def merge_records(
    session: Session,
    context: RegistryContext,
    record_id: str,
    survivor_id: str,
    *,
    agent: str,
    agent_kind: AgentKind,
    source_address: str | None,
) -> links.ActionOutcome:
    """Merge ``record_id`` into ``survivor_id`` (:func:`clientregistry.registry.links.merge`)
    and audit it with its change log (revertible); a refusal is a :class:`FhirError`."""
    editor = LinkEditor(session, context, agent)
    try:
        outcome = links.merge(editor, record_id, survivor_id)
    except LinkError as error:
        code = {404: "not-found", 409: "conflict", 422: "business-rule"}.get(error.status)
        raise FhirError(error.status, code or "invalid", error.message) from None
    links.audit_outcome(
        session, outcome, agent=agent, source_address=source_address, agent_kind=agent_kind
    )
    return outcome


__all__ = ["Fed", "feed", "merge_records", "survivor_record"]
