"""The registry's FHIR R4 wire format: parsing requests and building resources (no HTTP, no DB).

Modules: :mod:`.errors` (FhirError and its cases), :mod:`.operation_outcome`, :mod:`.patient`
(parse/validate Patients, build source and golden records), :mod:`.bundle` (batch/transaction),
:mod:`.search_params`, :mod:`.capability`, :mod:`.audit`, :mod:`.codes` (OpenCR's URIs and
codes), plus helpers :mod:`.json_body`, :mod:`.validation` and :mod:`.datatypes`.
"""

from clientregistry.fhir.errors import FhirError, Issue
from clientregistry.fhir.operation_outcome import from_error, operation_outcome

__all__ = ["FhirError", "Issue", "from_error", "operation_outcome"]
